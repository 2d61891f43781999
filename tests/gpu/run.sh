#!/usr/bin/env bash
# Builds potluck and runs the tests that need a GPU, on a Debian 12 machine
# that has one (or more) and CUDA with NCCL under /usr/local/cuda:
#
#   tests/gpu/run.sh
#
# GPU tests carry the CTest label "gpu"; Gpu.* in common_test checks the CUDA
# build itself. Elsewhere they skip, visibly; here they must not: the script
# fails when nvidia-smi lists no GPU, and it tells the tests how many GPUs
# there are (POTLUCK_EXPECT_GPUS), so a test that cannot use them (a broken
# driver reads as "no device" to the CUDA runtime) fails instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/../.."
gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true)
if [ "${gpus:-0}" -lt 1 ]; then
  echo "tests/gpu/run.sh: no usable GPU (nvidia-smi lists none): nothing here can be tested" >&2
  nvidia-smi -L >&2 || true
  exit 1
fi
export POTLUCK_EXPECT_GPUS=$gpus
deploy/install-deps.sh
cmake --preset default -DPOTLUCK_WITH_CUDA=ON
cmake --build --preset default
nvidia-smi -L
build/bin/potluck version
ctest --preset default -L gpu --output-on-failure
build/tests/common_test --gtest_filter='Gpu.*'
# Workers with --backend nccl (needs two GPUs; skips with fewer).
build/tests/backends_e2e_test --gtest_filter='*Nccl*'
