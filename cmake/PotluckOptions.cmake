# Build options and the INTERFACE targets that carry project-wide flags.
#
# potluck::warnings   -Wall -Wextra ... (-Werror when POTLUCK_WERROR); linked by
#                     every project target, never by generated or third-party code.
# potluck::sanitizers the flags for POTLUCK_SANITIZE (or POTLUCK_FUZZ); linked by
#                     every project target so tests, libraries and the CLI are
#                     instrumented alike.

option(POTLUCK_WERROR "Treat warnings in potluck's own code as errors" ON)
set(POTLUCK_SANITIZE "" CACHE STRING "Sanitizer build: '' (none), 'address' (ASan+UBSan) or 'thread' (TSan)")
set_property(CACHE POTLUCK_SANITIZE PROPERTY STRINGS "" address thread)
# The libFuzzer build (clang only; fuzz/run.sh configures it): every project
# target gets coverage feedback, ASan and UBSan, and fuzz/ builds libFuzzer
# binaries instead of its corpus replays. docs/reliability.md says how to run it.
option(POTLUCK_FUZZ "Build the libFuzzer targets under fuzz/ (needs clang and libFuzzer)" OFF)

# Optional dependencies, each AUTO (on where found), ON (required) or OFF
# (skipped even where installed). PotluckDependencies.cmake resolves each to ON
# or OFF and says what a missing one skips. None of them is needed by the core
# (common, collectives, checkpoint, data, coordinator) or its tests.
#
# libtorch: only worker/ model code uses it.
set(POTLUCK_WITH_TORCH AUTO CACHE STRING "Build the model code on libtorch: AUTO, ON or OFF")
set_property(CACHE POTLUCK_WITH_TORCH PROPERTY STRINGS AUTO ON OFF)
# OpenMPI: the MPI backend (potluck::collectives_mpi, `potluck worker --backend
# mpi`), its tests under mpirun, and the MPI baseline of `potluck bench allreduce`.
set(POTLUCK_WITH_MPI AUTO CACHE STRING "Build the MPI backend and baseline: AUTO, ON or OFF")
set_property(CACHE POTLUCK_WITH_MPI PROPERTY STRINGS AUTO ON OFF)
# Gloo: only the same-run baseline of `potluck bench allreduce`.
set(POTLUCK_WITH_GLOO AUTO CACHE STRING "Build the Gloo baseline of bench allreduce: AUTO, ON or OFF")
set_property(CACHE POTLUCK_WITH_GLOO PROPERTY STRINGS AUTO ON OFF)

# CUDA/NCCL: on where the toolkit is installed (the GPU itself is only needed to run).
set(POTLUCK_CUDA_ROOT /usr/local/cuda CACHE PATH "CUDA toolkit root (with NCCL)")
if(EXISTS ${POTLUCK_CUDA_ROOT}/include/cuda_runtime.h)
  set(_potluck_cuda_default ON)
else()
  set(_potluck_cuda_default OFF)
endif()
option(POTLUCK_WITH_CUDA "Build the CUDA/NCCL code (needs the CUDA toolkit with NCCL)" ${_potluck_cuda_default})

add_library(potluck_warnings INTERFACE)
add_library(potluck::warnings ALIAS potluck_warnings)
target_compile_options(potluck_warnings INTERFACE
  -Wall -Wextra -Wpedantic $<$<CXX_COMPILER_ID:GNU>:-Wshadow=local> -Wnon-virtual-dtor -Wimplicit-fallthrough
  -Wno-missing-field-initializers
  $<$<BOOL:${POTLUCK_WERROR}>:-Werror>)

add_library(potluck_sanitizers INTERFACE)
add_library(potluck::sanitizers ALIAS potluck_sanitizers)
if(POTLUCK_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang" OR NOT POTLUCK_SANITIZE STREQUAL "")
    message(FATAL_ERROR "POTLUCK_FUZZ needs clang (CMAKE_CXX_COMPILER=clang++-14) and no POTLUCK_SANITIZE")
  endif()
  set(_san -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
           -fno-omit-frame-pointer)
elseif(POTLUCK_SANITIZE STREQUAL "address")
  set(_san -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
elseif(POTLUCK_SANITIZE STREQUAL "thread")
  set(_san -fsanitize=thread -fno-omit-frame-pointer)
elseif(NOT POTLUCK_SANITIZE STREQUAL "")
  message(FATAL_ERROR "POTLUCK_SANITIZE must be '', 'address' or 'thread', not '${POTLUCK_SANITIZE}'")
endif()
if(_san)
  target_compile_options(potluck_sanitizers INTERFACE ${_san})
  target_link_options(potluck_sanitizers INTERFACE ${_san})
endif()
