#!/usr/bin/env bash
# Builds and runs tests/package/consumer.cpp as a separate CMake project that gets torchattn
#   find_package     - from an install of the build tree into a fresh prefix;
#   add_subdirectory - from the source tree, as a subproject: a static library, since the parent
#                      leaves BUILD_SHARED_LIBS unset; its install rules on (TORCHATTN_INSTALL);
#   static           - from an install of that static subproject build into a fresh prefix
#                      (run after add_subdirectory).
# The subproject compiles only the DEFAULT kernels (TORCHATTN_MAX_CPU_CAPABILITY), which its
# consumers must then report running; the find_package consumer uses the full build tree.
# Usage: run.sh MODE SOURCE_DIR BUILD_DIR WORK_DIR
set -euo pipefail
mode=$1 src=$2 build=$3 work=$4
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
args=(-DCMAKE_BUILD_TYPE=Release)
command -v ninja >/dev/null && args+=(-G Ninja)
command -v ccache >/dev/null && args+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
mkdir -p "$work"
case "$mode" in
  find_package)
    prefix="$work/prefix"
    rm -rf "$prefix" "$work/find_package"
    cmake --install "$build" --prefix "$prefix" >/dev/null
    cmake -S "$here/find_package" -B "$work/find_package" "${args[@]}" \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF | tee "$work/find_package.log"
    # It must have found the installed package, not the build tree.
    grep -q "from $prefix/" "$work/find_package.log" || { echo "consumer did not use $prefix" >&2; exit 1; }
    ;;
  static)
    prefix="$work/static-prefix"
    rm -rf "$prefix" "$work/static"
    [ -f "$work/add_subdirectory/CMakeCache.txt" ] || { echo "run add_subdirectory first" >&2; exit 1; }
    cmake --install "$work/add_subdirectory" --prefix "$prefix" >/dev/null
    ls "$prefix"/lib*/libtorchattn.a >/dev/null || { echo "no static libtorchattn.a in $prefix" >&2; exit 1; }
    cmake -S "$here/find_package" -B "$work/static" "${args[@]}" \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF | tee "$work/static.log"
    grep -q "from $prefix/" "$work/static.log" || { echo "consumer did not use $prefix" >&2; exit 1; }
    ;;
  add_subdirectory)
    rm -rf "$work/add_subdirectory"
    # No build type, so no optimisation: this build checks CMake's subproject and install
    # logic, and unoptimised it compiles in 100 s where Release takes 175 (2 cores).
    cmake -S "$here/add_subdirectory" -B "$work/add_subdirectory" "${args[@]}" -DCMAKE_BUILD_TYPE= \
      -DTORCHATTN_SOURCE_DIR="$src" -DTORCHATTN_MAX_CPU_CAPABILITY=DEFAULT -DTORCHATTN_INSTALL=ON
    ;;
  *) echo "usage: run.sh find_package|add_subdirectory|static SOURCE_DIR BUILD_DIR WORK_DIR" >&2; exit 2 ;;
esac
# One job per core: CTest runs the subproject build alone (RUN_SERIAL), and ninja's default of
# cores + 2 would only crowd them.
cmake --build "$work/$mode" --target consumer -j "$(nproc)"
"$work/$mode/consumer" | tee "$work/$mode.out"
if [ "$mode" != find_package ]; then
  grep -q "kernels default$" "$work/$mode.out" || { echo "a DEFAULT-only build ran other kernels" >&2; exit 1; }
fi
