#!/usr/bin/env bash
# Builds potluck and runs the tests that need a GPU, on a Debian 12 machine
# that has one (or more) and CUDA with NCCL under /usr/local/cuda:
#
#   tests/gpu/run.sh
#
# GPU tests carry the CTest label "gpu"; Gpu.* in common_test checks the CUDA
# build itself. Without a GPU they all skip, visibly.
set -euo pipefail
cd "$(dirname "$0")/../.."
deploy/install-deps.sh
cmake --preset default -DPOTLUCK_WITH_CUDA=ON
cmake --build --preset default
nvidia-smi -L || true
ctest --preset default -L gpu --output-on-failure
build/tests/common_test --gtest_filter='Gpu.*'
# Workers with --backend nccl (needs two GPUs; skips with fewer).
build/tests/worker_e2e_test --gtest_filter='*Nccl*'
