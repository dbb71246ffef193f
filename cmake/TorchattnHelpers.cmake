# Small helpers shared by the library, its tests and its examples.
include_guard(GLOBAL)
include(GNUInstallDirs)

function(torchattn_warnings target)
  if(CMAKE_CXX_COMPILER_ID MATCHES "GNU|Clang")
    target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic)
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
