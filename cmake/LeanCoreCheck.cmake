# cmake -DSOURCE_DIR=... -DBINARY_DIR=... -DGENERATOR=... -DBUILD_TYPE=...
#       -DCXX_COMPILER=... -DC_COMPILER=... [-DLAUNCHER=ccache] -P LeanCoreCheck.cmake
#
# Proves that the core needs neither libtorch, OpenMPI nor Gloo: configures a
# build of this tree with all three OFF, checks that nothing in it refers to
# them, and builds potluck::coordinator (with common, checkpoint, data and the
# protobuf messages under it). The ctest `lean_core_build` runs it.
set(_args -S ${SOURCE_DIR} -B ${BINARY_DIR} -G ${GENERATOR}
          -DCMAKE_BUILD_TYPE=${BUILD_TYPE}
          -DCMAKE_CXX_COMPILER=${CXX_COMPILER} -DCMAKE_C_COMPILER=${C_COMPILER}
          -DPOTLUCK_WITH_TORCH=OFF -DPOTLUCK_WITH_MPI=OFF -DPOTLUCK_WITH_GLOO=OFF)
if(LAUNCHER)
  list(APPEND _args -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER} -DCMAKE_C_COMPILER_LAUNCHER=${LAUNCHER})
endif()
execute_process(COMMAND ${CMAKE_COMMAND} ${_args}
  RESULT_VARIABLE _result OUTPUT_VARIABLE _output ERROR_VARIABLE _output)
if(NOT _result EQUAL 0)
  message(FATAL_ERROR "configuring with torch, MPI and Gloo OFF failed:\n${_output}")
endif()
if(NOT _output MATCHES "torch=OFF [^\n]*mpi=OFF gloo=OFF")
  message(FATAL_ERROR "the options did not take:\n${_output}")
endif()
foreach(_file build.ninja Makefile)
  if(EXISTS ${BINARY_DIR}/${_file})
    file(READ ${BINARY_DIR}/${_file} _rules)
    string(REGEX MATCH "openmpi|libgloo|/gloo/|libtorch|/torch/" _found "${_rules}")
    if(_found)
      message(FATAL_ERROR "${BINARY_DIR}/${_file} still refers to '${_found}'")
    endif()
  endif()
endforeach()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BINARY_DIR} --target potluck_coordinator
  RESULT_VARIABLE _result OUTPUT_VARIABLE _output ERROR_VARIABLE _output)
if(NOT _result EQUAL 0)
  message(FATAL_ERROR "building potluck::coordinator without torch, MPI and Gloo failed:\n${_output}")
endif()
message(STATUS "potluck::coordinator configures and builds without libtorch, OpenMPI and Gloo")
