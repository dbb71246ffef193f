# Small helpers shared by the library, its tests and its examples.
include_guard(GLOBAL)
include(GNUInstallDirs)

function(torchattn_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
  endif()
  if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    # LibTorch's FORWARD_HAS_DEFAULT_ARGS expands TORCH_INTERNAL_ASSERT with no message.
    target_compile_options(${target} PRIVATE -Wno-gnu-zero-variadic-macro-arguments)
  endif()
endfunction()

# ccache with precompiled headers needs these sloppiness settings, or every build is a miss.
function(torchattn_enable_ccache)
  if(NOT TORCHATTN_USE_CCACHE OR CMAKE_CXX_COMPILER_LAUNCHER)
    return()
  endif()
  find_program(TORCHATTN_CCACHE ccache)
  if(TORCHATTN_CCACHE)
    set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
      ${TORCHATTN_CCACHE} PARENT_SCOPE)
    message(STATUS "torchattn: using ccache (${TORCHATTN_CCACHE})")
  endif()
endfunction()

# Imported targets are visible only in the directory that found them. When torchattn is added
# with add_subdirectory, the parent links torchattn::torchattn, whose interface names Torch's
# targets; promote them (and what they link) to global so the parent can resolve them.
function(torchattn_promote_imported_targets)
  set(queue ${ARGN})
  set(seen "")
  while(queue)
    list(POP_FRONT queue t)
    if(NOT TARGET ${t} OR t IN_LIST seen)
      continue()
    endif()
    list(APPEND seen ${t})
    get_target_property(imported ${t} IMPORTED)
    get_target_property(is_global ${t} IMPORTED_GLOBAL)
    get_target_property(aliased ${t} ALIASED_TARGET)
    if(imported AND NOT is_global AND NOT aliased)
      set_target_properties(${t} PROPERTIES IMPORTED_GLOBAL TRUE)
    endif()
    get_target_property(deps ${t} INTERFACE_LINK_LIBRARIES)
    if(deps)
      list(APPEND queue ${deps})
    endif()
  endwhile()
endfunction()

# Compiles `sources` once per CPU capability (DEFAULT, AVX2, AVX512), up to
# TORCHATTN_MAX_CPU_CAPABILITY, into `target`, with the definitions ATen's at::vec expects
# (CPU_CAPABILITY=<name>, CPU_CAPABILITY_<name>). The files switch their instruction set
# themselves with `#pragma GCC target` after their shared headers (see src/ops/cpu/vectorized.h);
# nothing is built with -march=native.
#
# Files after BF16_FILES are also compiled as the AVX512_BF16 build (vdpbf16ps): AVX-512 code,
# at::vec's AVX512 vectors, and TORCHATTN_CPU_AVX512_BF16 for their bfloat16 products.
# `target` and every build see TORCHATTN_MAX_CPU_CAPABILITY=<0..3> (ops/cpu/capability.h).
function(torchattn_add_cpu_capabilities target)
  cmake_parse_arguments(arg "" "" "BF16_FILES" ${ARGN})
  set(all DEFAULT AVX2 AVX512 AVX512_BF16)
  list(FIND all "${TORCHATTN_MAX_CPU_CAPABILITY}" max)
  if(max EQUAL -1)
    message(FATAL_ERROR "torchattn: TORCHATTN_MAX_CPU_CAPABILITY is '${TORCHATTN_MAX_CPU_CAPABILITY}',"
                        " expected one of ${all}")
  endif()
  target_compile_definitions(${target} PRIVATE TORCHATTN_MAX_CPU_CAPABILITY=${max})
  list(SUBLIST all 0 ${max} builds)
  list(APPEND builds ${TORCHATTN_MAX_CPU_CAPABILITY})
  foreach(capability ${builds})
    if(capability STREQUAL "AVX512_BF16")
      set(files ${arg_BF16_FILES})
      set(extra CPU_CAPABILITY_AVX512 TORCHATTN_CPU_${capability})
    else()
      set(files ${arg_UNPARSED_ARGUMENTS} ${arg_BF16_FILES})
      set(extra CPU_CAPABILITY_${capability})
    endif()
    if(NOT files)
      continue()
    endif()
    set(objects ${target}_kernels_${capability})
    add_library(${objects} OBJECT ${files})
    set_target_properties(${objects} PROPERTIES POSITION_INDEPENDENT_CODE ON CXX_EXTENSIONS OFF)
    target_compile_features(${objects} PRIVATE cxx_std_17)
    target_compile_definitions(${objects} PRIVATE CPU_CAPABILITY=${capability} ${extra}
                                                  TORCHATTN_MAX_CPU_CAPABILITY=${max})
    target_include_directories(${objects} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
    target_link_libraries(${objects} PRIVATE ${TORCH_LIBRARIES} OpenMP::OpenMP_CXX)
    torchattn_warnings(${objects})
    target_sources(${target} PRIVATE $<TARGET_OBJECTS:${objects}>)
  endforeach()
endfunction()

# TORCHATTN_SANITIZE: AddressSanitizer and UndefinedBehaviorSanitizer on every target of this
# project (LibTorch itself is not instrumented); undefined behaviour aborts instead of warning.
# TORCHATTN_BUILD_FUZZERS adds libFuzzer's coverage instrumentation, which needs clang.
macro(torchattn_enable_sanitizers)
  if(TORCHATTN_BUILD_FUZZERS)
    if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
      message(FATAL_ERROR "torchattn: TORCHATTN_BUILD_FUZZERS needs clang for libFuzzer; "
                          "configure with -DCMAKE_CXX_COMPILER=clang++ (Debian: apt-get install clang)")
    endif()
    set(TORCHATTN_SANITIZE ON)
    add_compile_options(-fsanitize=fuzzer-no-link)
  endif()
  if(TORCHATTN_SANITIZE)
    add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=undefined
                        -fno-omit-frame-pointer)
    if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
      # Instrumented loops are not vectorised; `#pragma omp simd` would warn about each.
      add_compile_options(-Wno-pass-failed)
    endif()
    add_link_options(-fsanitize=address,undefined)
    message(STATUS "torchattn: AddressSanitizer and UndefinedBehaviorSanitizer on")
  endif()
endmacro()
