#!/usr/bin/env bash
# Checks that the C++ sources follow .clang-format. The layout depends on clang-format's
# version: this checks with 14 (Debian 12's) and skips (exit 77) with any other.
# Usage: check_format.sh SOURCE_DIR [CLANG_FORMAT]
set -euo pipefail
src=$1 tool=${2:-clang-format}
command -v "$tool" >/dev/null || { echo "check_format: no $tool; skipped"; exit 77; }
version=$("$tool" --version | grep -o 'version [0-9]*' | grep -o '[0-9]*')
[ "$version" = 14 ] || { echo "check_format: $tool is version $version, not 14; skipped"; exit 77; }
cd "$src"
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  mapfile -t files < <(git ls-files '*.cpp' '*.h' | grep -v '^tests/fuzz/corpus/')
else
  mapfile -t files < <(find include src tests bench examples \( -name '*.cpp' -o -name '*.h' \) -not -path 'tests/fuzz/corpus/*')
fi
"$tool" --dry-run -Werror "${files[@]}"
echo "check_format: ${#files[@]} files follow .clang-format"
