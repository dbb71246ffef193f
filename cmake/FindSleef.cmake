# FindSleef: the SLEEF vector math library, as the imported target Sleef::sleef.
#
# at::vec's vector tanh calls SLEEF (torchattn's additive-score kernel), which Debian's LibTorch
# links dynamically but does not pass on to its users. Installed with torchattn's package so
# that a static torchattn finds it again (find_dependency(Sleef) in torchattnConfig.cmake).
#
#   Sleef_FOUND, Sleef_LIBRARY, Sleef_INCLUDE_DIR; target Sleef::sleef
include(FindPackageHandleStandardArgs)
find_path(Sleef_INCLUDE_DIR sleef.h)
find_library(Sleef_LIBRARY sleef)
find_package_handle_standard_args(Sleef REQUIRED_VARS Sleef_LIBRARY Sleef_INCLUDE_DIR)
if(Sleef_FOUND AND NOT TARGET Sleef::sleef)
  add_library(Sleef::sleef UNKNOWN IMPORTED)
  set_target_properties(Sleef::sleef PROPERTIES
    IMPORTED_LOCATION "${Sleef_LIBRARY}"
    INTERFACE_INCLUDE_DIRECTORIES "${Sleef_INCLUDE_DIR}")
endif()
mark_as_advanced(Sleef_INCLUDE_DIR Sleef_LIBRARY)
