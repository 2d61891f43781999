# The Debian 12 packages potluck builds on (deploy/install-deps.sh installs them).
find_package(Threads REQUIRED)
find_package(absl CONFIG REQUIRED)
find_package(Protobuf REQUIRED)
find_package(gRPC CONFIG REQUIRED)
find_package(GTest CONFIG REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)

find_program(POTLUCK_PROTOC protoc REQUIRED)
find_program(POTLUCK_GRPC_CPP_PLUGIN grpc_cpp_plugin REQUIRED)

# potluck_optional_package(<option> <what it skips> <how to install> <find_package args...>)
# Resolves the AUTO/ON/OFF cache option <option> to ON or OFF in this scope:
# AUTO finds the package quietly and is ON where found, ON requires it, OFF
# does not look. When the result is OFF it says, visibly, what the build skips.
# A macro, so that the package's variables reach the caller.
macro(potluck_optional_package _option _skips _install _package)
  string(TOUPPER "${${_option}}" _potluck_value)
  if(_potluck_value STREQUAL "AUTO")
    find_package(${_package} ${ARGN} QUIET)
    if(${_package}_FOUND)
      set(${_option} ON)
    else()
      set(${_option} OFF)
      message(STATUS "${_package} not found: skipping ${_skips} (${_install})")
    endif()
  elseif(${_option})
    find_package(${_package} ${ARGN} REQUIRED)
    set(${_option} ON)
  else()
    set(${_option} OFF)
    message(STATUS "${_option}=OFF: skipping ${_skips}")
  endif()
endmacro()

potluck_optional_package(POTLUCK_WITH_TORCH
  "worker/ (the model code) and `potluck local|worker|sample|bench train`"
  "install libtorch-dev" Torch CONFIG)
potluck_optional_package(POTLUCK_WITH_MPI
  "potluck::collectives_mpi and its tests (MpiCommunicator.*, the MPI conformance run), \
`potluck worker --backend mpi`, the MPI baseline of `potluck bench allreduce`"
  "install libopenmpi-dev openmpi-bin" MPI COMPONENTS C)
potluck_optional_package(POTLUCK_WITH_GLOO
  "the Gloo baseline of `potluck bench allreduce`"
  "install libgloo-dev" Gloo CONFIG)
# The MPI tests run under mpirun (openmpi-bin); the library alone builds without it.
if(POTLUCK_WITH_MPI)
  find_program(POTLUCK_MPIRUN mpirun)
  if(NOT POTLUCK_MPIRUN)
    message(STATUS "mpirun not found: skipping the MPI tests (install openmpi-bin)")
  endif()
endif()

if(POTLUCK_WITH_CUDA)
  set(CUDAToolkit_ROOT ${POTLUCK_CUDA_ROOT})
  find_package(CUDAToolkit REQUIRED)
  find_library(POTLUCK_NCCL_LIBRARY nccl HINTS ${POTLUCK_CUDA_ROOT}/lib64 ${POTLUCK_CUDA_ROOT}/lib REQUIRED)
  find_path(POTLUCK_NCCL_INCLUDE_DIR nccl.h HINTS ${POTLUCK_CUDA_ROOT}/include REQUIRED)
  add_library(potluck_nccl INTERFACE)
  add_library(potluck::nccl ALIAS potluck_nccl)
  target_link_libraries(potluck_nccl INTERFACE ${POTLUCK_NCCL_LIBRARY} CUDA::cudart)
  target_include_directories(potluck_nccl SYSTEM INTERFACE ${POTLUCK_NCCL_INCLUDE_DIR})
endif()
