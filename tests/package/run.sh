#!/usr/bin/env bash
# Builds and runs tests/package/consumer.cpp as a separate CMake project that gets torchattn
#   find_package     - from an install of the build tree into a fresh prefix, or
#   add_subdirectory - from the source tree;
#   static           - from an install of a static build (-DBUILD_SHARED_LIBS=OFF) of the
#                      source tree, made here.
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
    cmake -S "$src" -B "$work/static-build" "${args[@]}" -DBUILD_SHARED_LIBS=OFF \
      -DTORCHATTN_BUILD_TESTS=OFF -DTORCHATTN_BUILD_EXAMPLES=OFF >/dev/null
    cmake --build "$work/static-build" --target torchattn
    cmake --install "$work/static-build" --prefix "$prefix" >/dev/null
    ls "$prefix"/lib*/libtorchattn.a >/dev/null || { echo "no static libtorchattn.a in $prefix" >&2; exit 1; }
    cmake -S "$here/find_package" -B "$work/static" "${args[@]}" \
      -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF | tee "$work/static.log"
    grep -q "from $prefix/" "$work/static.log" || { echo "consumer did not use $prefix" >&2; exit 1; }
    ;;
  add_subdirectory)
    rm -rf "$work/add_subdirectory"
    cmake -S "$here/add_subdirectory" -B "$work/add_subdirectory" "${args[@]}" \
      -DTORCHATTN_SOURCE_DIR="$src"
    ;;
  *) echo "usage: run.sh find_package|add_subdirectory|static SOURCE_DIR BUILD_DIR WORK_DIR" >&2; exit 2 ;;
esac
cmake --build "$work/$mode" --target consumer
"$work/$mode/consumer"
