# cmake -DCLANG_FORMAT=... -DSOURCE_DIR=... -P CheckFormat.cmake
# Fails listing every C++ file that differs from what .clang-format asks for.
# Fix them all with: clang-format -i $(git ls-files '*.h' '*.cc')
file(GLOB_RECURSE _files
  ${SOURCE_DIR}/common/*.h ${SOURCE_DIR}/common/*.cc
  ${SOURCE_DIR}/proto/*.cc ${SOURCE_DIR}/collectives/*.h ${SOURCE_DIR}/collectives/*.cc
  ${SOURCE_DIR}/checkpoint/*.h ${SOURCE_DIR}/checkpoint/*.cc
  ${SOURCE_DIR}/data/*.h ${SOURCE_DIR}/data/*.cc ${SOURCE_DIR}/job/*.h ${SOURCE_DIR}/job/*.cc
  ${SOURCE_DIR}/coordinator/*.h ${SOURCE_DIR}/coordinator/*.cc
  ${SOURCE_DIR}/worker/*.h ${SOURCE_DIR}/worker/*.cc
  ${SOURCE_DIR}/cli/*.h ${SOURCE_DIR}/cli/*.cc ${SOURCE_DIR}/tests/*.h ${SOURCE_DIR}/tests/*.cc
  ${SOURCE_DIR}/fuzz/*.h ${SOURCE_DIR}/fuzz/*.cc)
set(_bad)
foreach(_file ${_files})
  execute_process(COMMAND ${CLANG_FORMAT} --style=file --dry-run --Werror ${_file}
    RESULT_VARIABLE _result OUTPUT_QUIET ERROR_QUIET)
  if(NOT _result EQUAL 0)
    file(RELATIVE_PATH _rel ${SOURCE_DIR} ${_file})
    list(APPEND _bad ${_rel})
  endif()
endforeach()
list(LENGTH _files _count)
if(_bad)
  list(JOIN _bad "\n  " _list)
  message(FATAL_ERROR "not formatted per .clang-format:\n  ${_list}\nrun: clang-format -i <files>")
endif()
message(STATUS "format ok: ${_count} files")
