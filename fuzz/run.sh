#!/usr/bin/env bash
# Builds potluck's fuzz targets with clang and libFuzzer and runs each one on
# its seed corpus (fuzz/corpus/<target>) for a fixed time.
#
#   fuzz/run.sh [--seconds N] [--build DIR] [TARGET...]
#
#   --seconds N  how long each target runs (default 60)
#   --build DIR  the clang build directory (default build/fuzzing); what the
#                runs add to a corpus stays in DIR/corpus/<target>, inputs
#                that fail in DIR/crashes/<target>/
#   TARGET       e.g. safetensors (default: every target)
#
# Exit status: 0 when no target failed, 1 when one did (its input and how to
# replay it are printed), 77 when clang or libFuzzer is missing (the ctest
# fuzz_short counts that as skipped; under CI=true it is 1). docs/reliability.md has the long runs.
set -euo pipefail
source_dir=$(cd "$(dirname "$0")/.." && pwd)
seconds=60
build_dir=$source_dir/build/fuzzing
targets=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --build) build_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "fuzz/run.sh: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [[ ${#targets[@]} -eq 0 ]]; then
  targets=($(ls "$source_dir/fuzz/corpus"))
fi

cxx=$(command -v clang++-14 || command -v clang++ || true)
cc=$(command -v clang-14 || command -v clang || true)
# 77 (CTest: skipped), but 1 under CI=true: CI installs what this needs, so
# a skip there would hide a failure.
skip() {
  echo "fuzz/run.sh: SKIPPED: $1"
  if [[ "${CI:-}" == "true" ]]; then
    echo "fuzz/run.sh: CI=true, so this is a failure, not a skip"
    exit 1
  fi
  exit 77
}
if [[ -z "$cxx" || -z "$cc" ]]; then
  skip "no clang (deploy/install-deps.sh installs clang-14 and libfuzzer-14-dev)"
fi
if ! echo 'extern "C" int LLVMFuzzerTestOneInput(const char*, unsigned long) { return 0; }' |
    "$cxx" -x c++ -fsanitize=fuzzer -o /dev/null - 2>/dev/null; then
  skip "$cxx cannot link -fsanitize=fuzzer (deploy/install-deps.sh installs libclang-rt-14-dev and libfuzzer-14-dev)"
fi

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi
# Only what the parsers need: no libtorch, MPI, Gloo or CUDA. Warnings are the
# gcc build's business; here they would only stop the run.
cmake -S "$source_dir" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" "${launcher[@]}" \
  -DPOTLUCK_FUZZ=ON -DPOTLUCK_WERROR=OFF -DPOTLUCK_WITH_TORCH=OFF -DPOTLUCK_WITH_MPI=OFF \
  -DPOTLUCK_WITH_GLOO=OFF -DPOTLUCK_WITH_CUDA=OFF >"$build_dir.configure.log" 2>&1 ||
  { cat "$build_dir.configure.log"; exit 1; }
cmake --build "$build_dir" --target potluck_fuzzers -j "${POTLUCK_FUZZ_JOBS:-2}" >"$build_dir.build.log" 2>&1 ||
  { tail -50 "$build_dir.build.log"; exit 1; }

failed=()
printf '%-22s %10s %8s %8s %8s\n' target execs exec/s cov corpus
for target in "${targets[@]}"; do
  binary=$build_dir/fuzz/fuzz_$target
  seeds=$source_dir/fuzz/corpus/$target
  if [[ ! -x "$binary" || ! -d "$seeds" ]]; then
    echo "fuzz/run.sh: no target '$target' (known: $(ls "$source_dir/fuzz/corpus" | tr '\n' ' '))" >&2
    exit 2
  fi
  corpus=$build_dir/corpus/$target
  crashes=$build_dir/crashes/$target
  log=$build_dir/logs/$target.log
  mkdir -p "$corpus" "$crashes" "$(dirname "$log")"
  status=0
  "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$crashes/" "$corpus" "$seeds" >"$log" 2>&1 || status=$?
  execs=$(awk '/stat::number_of_executed_units/{print $2}' "$log")
  speed=$(awk '/stat::average_exec_per_sec/{print $2}' "$log")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | awk '{print $2}')
  printf '%-22s %10s %8s %8s %8s\n' "$target" "${execs:-?}" "${speed:-?}" "${cov:-?}" \
    "$(ls "$corpus" | wc -l)"
  if [[ $status -ne 0 ]]; then
    failed+=("$target")
    echo "---- $target failed (exit $status); the end of $log:"
    tail -40 "$log"
    echo "---- replay: $binary $crashes/<input>; keep it as fuzz/corpus/$target/regress-<what>"
  fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "fuzz/run.sh: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz/run.sh: ${#targets[@]} target(s), ${seconds} s each, no failure"
