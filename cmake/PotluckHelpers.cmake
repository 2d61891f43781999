# potluck_add_test(NAME <name> SOURCES <files...> [DEPS <targets...>]
#                  [TIMEOUT <seconds>] [LABELS <labels...>])
# Builds one GoogleTest binary and registers its tests with CTest, each test
# case as its own CTest entry so a hang names the case, all with a timeout.
include(GoogleTest)
function(potluck_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 120)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_DEPS} GTest::gtest GTest::gmock GTest::gtest_main
                                          potluck::warnings potluck::sanitizers)
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/tests)
  gtest_discover_tests(${T_NAME}
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS}")
endfunction()
