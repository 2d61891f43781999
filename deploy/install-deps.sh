#!/usr/bin/env bash
# Installs the Debian 12 packages that potluck's build, tests and `potluck local`
# need, and nothing else. Idempotent: when every package is already installed it
# returns at once without touching apt.
#
#   deploy/install-deps.sh           build + test + run dependencies
#   deploy/install-deps.sh --list    print the package list and exit
set -euo pipefail

packages=(
  # toolchain
  g++ cmake ninja-build pkg-config git
  # RPC, serialization and the shared C++ base
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libabsl-dev
  # checkpoints and checksums; OpenSSL for the collectives' link authentication
  librocksdb-dev libxxhash-dev libssl-dev
  # collectives over MPI (tests run mpirun --oversubscribe); Gloo is the
  # same-run baseline of `potluck bench allreduce`. Both optional: without them
  # CMake skips their parts (POTLUCK_WITH_MPI, POTLUCK_WITH_GLOO)
  libopenmpi-dev openmpi-bin libgloo-dev
  # small libraries that save hand-written code (yaml-cpp reads job files)
  nlohmann-json3-dev libcli11-dev libyaml-cpp-dev
  # model code (worker/ only); OpenBLAS so libtorch does not fall back to the
  # reference BLAS, which trains a small GPT ~8x slower
  libtorch-dev libopenblas0-pthread
  # tests; clang-format for the format check; the openssl
  # command makes the self-signed certificates of the TLS tests
  libgtest-dev libgmock-dev clang-format openssl
  # the fuzz targets (fuzz/run.sh, the fuzz_short test): clang with its
  # sanitizer and libFuzzer runtimes (libclang-rt-14-dev)
  clang-14 libclang-rt-14-dev libfuzzer-14-dev
  # the chaos suite: a Python runner that puts each process in a network
  # namespace (ip) and throttles links (tc)
  python3 iproute2
)

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${packages[@]}"
  exit 0
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}" >&2
  echo "install-deps: run as root (or with sudo) to install them" >&2
  exit 1
fi

echo "install-deps: installing ${#missing[@]} package(s): ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
