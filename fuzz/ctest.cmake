# The fuzz targets (fuzz/, fuzz/README.md) in ctest. include() it from tests/CMakeLists.txt: where clang++
# can link libFuzzer it builds fuzz/ with clang as an external project into ${CMAKE_BINARY_DIR}/fuzz (part of
# the normal build) and adds, per target <t>:
#   fuzz.<t>.replay  every file of fuzz/corpus/<t>/ run once (-runs=0): a regression input fails here if
#                    its bug comes back;
#   fuzz.<t>         libFuzzer for LAYERPRUNE_FUZZ_SECONDS (default 12) on the seed corpus; new inputs go
#                    to ${CMAKE_BINARY_DIR}/fuzz/corpus/<t>, crashes to ${CMAKE_BINARY_DIR}/fuzz/artifacts/<t>.
# Where clang or its libFuzzer runtime is missing, one test `fuzz` says SKIPPED with the reason.
# Longer runs: bash deploy/fuzz.sh SECONDS [TARGET...].
option(LAYERPRUNE_FUZZ "Build the libFuzzer targets (fuzz/) with clang and run them in ctest, where clang has libFuzzer" ON)
set(LAYERPRUNE_FUZZ_SECONDS 12 CACHE STRING "Seconds each fuzz target runs in ctest")
set(LAYERPRUNE_FUZZ_BUILD_JOBS 1 CACHE STRING "Parallel jobs of the fuzz targets' build (it runs beside the main build)")

set(lp_fuzz_src "${CMAKE_CURRENT_LIST_DIR}")
set(lp_fuzz_bin "${CMAKE_BINARY_DIR}/fuzz")
set(lp_fuzz_skip "")
if(NOT LAYERPRUNE_FUZZ)
  set(lp_fuzz_skip "LAYERPRUNE_FUZZ is OFF")
else()
  find_program(LP_FUZZ_CLANGXX NAMES clang++ clang++-16 clang++-15 clang++-14 DOC "clang++ for the fuzz targets")
  find_program(LP_FUZZ_CLANG NAMES clang clang-16 clang-15 clang-14 DOC "clang for the fuzz targets")
  if(NOT LP_FUZZ_CLANGXX OR NOT LP_FUZZ_CLANG)
    set(lp_fuzz_skip "no clang/clang++ found (Debian: apt-get install clang libclang-rt-14-dev)")
  elseif(NOT LP_FUZZ_LINKS_FOR STREQUAL "${LP_FUZZ_CLANGXX}")
    # Can it link a libFuzzer program? (Debian ships clang's runtime in libclang-rt-NN-dev.) Probed once.
    set(probe "${CMAKE_BINARY_DIR}/CMakeFiles/lp_fuzz_probe")
    file(MAKE_DIRECTORY "${probe}")
    file(WRITE "${probe}/probe.cc"
         "#include <cstddef>\n#include <cstdint>\nextern \"C\" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }\n")
    execute_process(COMMAND "${LP_FUZZ_CLANGXX}" -fsanitize=fuzzer,address,undefined probe.cc -o probe
                    WORKING_DIRECTORY "${probe}" RESULT_VARIABLE rc OUTPUT_QUIET ERROR_VARIABLE err)
    if(rc EQUAL 0)
      set(LP_FUZZ_LINKS_FOR "${LP_FUZZ_CLANGXX}" CACHE INTERNAL "clang++ that links -fsanitize=fuzzer")
    else()
      string(REGEX REPLACE "\n.*" "" err "${err}")
      set(lp_fuzz_skip "${LP_FUZZ_CLANGXX} cannot link -fsanitize=fuzzer (${err}; Debian: apt-get install libclang-rt-14-dev)")
    endif()
  endif()
endif()

if(lp_fuzz_skip)
  string(REPLACE "'" "" lp_fuzz_skip "${lp_fuzz_skip}")  # it goes inside sh -c '...'
  message(STATUS "layerprune: fuzz tests skipped: ${lp_fuzz_skip}")
  add_test(NAME fuzz COMMAND sh -c "echo 'SKIPPED: fuzz targets not built: ${lp_fuzz_skip}'; exit 77")
  set_tests_properties(fuzz PROPERTIES SKIP_RETURN_CODE 77 LABELS fuzz)
  return()
endif()

include(ExternalProject)
set(lp_fuzz_werror OFF)
if(LAYERPRUNE_WERROR)
  set(lp_fuzz_werror ON)
endif()
ExternalProject_Add(lp_fuzz
  SOURCE_DIR "${lp_fuzz_src}"
  BINARY_DIR "${lp_fuzz_bin}"
  CMAKE_ARGS -DCMAKE_CXX_COMPILER=${LP_FUZZ_CLANGXX} -DCMAKE_C_COMPILER=${LP_FUZZ_CLANG} -DLPFUZZ_WERROR=${lp_fuzz_werror}
  BUILD_COMMAND ${CMAKE_COMMAND} --build "${lp_fuzz_bin}" -j ${LAYERPRUNE_FUZZ_BUILD_JOBS}
  BUILD_ALWAYS ON  # the inner build is incremental; this makes it see edits to the parsers
  INSTALL_COMMAND "")
message(STATUS "layerprune: fuzz targets built with ${LP_FUZZ_CLANGXX} into ${lp_fuzz_bin}, "
               "${LAYERPRUNE_FUZZ_SECONDS} s each in ctest")

file(GLOB lp_fuzz_sources RELATIVE "${lp_fuzz_src}" CONFIGURE_DEPENDS "${lp_fuzz_src}/fuzz_*.cc")
set(lp_fuzz_dirs "")
foreach(src ${lp_fuzz_sources})
  string(REGEX REPLACE "^fuzz_(.*)\\.cc$" "\\1" t "${src}")
  list(APPEND lp_fuzz_dirs "${lp_fuzz_bin}/corpus/${t}" "${lp_fuzz_bin}/artifacts/${t}")
endforeach()
add_test(NAME fuzz.setup COMMAND ${CMAKE_COMMAND} -E make_directory ${lp_fuzz_dirs})
set_tests_properties(fuzz.setup PROPERTIES FIXTURES_SETUP lp_fuzz_dirs LABELS fuzz)
foreach(src ${lp_fuzz_sources})
  string(REGEX REPLACE "^fuzz_(.*)\\.cc$" "\\1" t "${src}")
  set(exe "${lp_fuzz_bin}/fuzz_${t}")
  add_test(NAME fuzz.${t}.replay COMMAND "${exe}" -runs=0 -rss_limit_mb=2048 -timeout=10 "${lp_fuzz_src}/corpus/${t}")
  set(dict "")
  if(EXISTS "${lp_fuzz_src}/${t}.dict")
    set(dict "-dict=${lp_fuzz_src}/${t}.dict")
  endif()
  add_test(NAME fuzz.${t}
           COMMAND "${exe}" -max_total_time=${LAYERPRUNE_FUZZ_SECONDS} -max_len=8192 -rss_limit_mb=2048 -timeout=10
                   -print_final_stats=1 -artifact_prefix=${lp_fuzz_bin}/artifacts/${t}/ ${dict}
                   "${lp_fuzz_bin}/corpus/${t}" "${lp_fuzz_src}/corpus/${t}")
  math(EXPR limit "${LAYERPRUNE_FUZZ_SECONDS} + 120")
  set_tests_properties(fuzz.${t}.replay PROPERTIES TIMEOUT 120 LABELS fuzz)
  set_tests_properties(fuzz.${t} PROPERTIES TIMEOUT ${limit} LABELS fuzz FIXTURES_REQUIRED lp_fuzz_dirs)
endforeach()
