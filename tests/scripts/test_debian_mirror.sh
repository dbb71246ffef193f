#!/usr/bin/env bash
# scripts/lib/debian-mirror.sh on apt sources in each format, written into temporary
# directories: deb822, one-line (as debootstrap writes it, with and without sources.list.d),
# both, with [signed-by=...] options, comments, deb-src and disabled entries. Each lookup runs
# in a fresh bash under `set -euo pipefail`, as install-deps.sh and chroot.sh source it.
set -euo pipefail
lib="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib" && pwd)/debian-mirror.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0

# expect NAME SUITE EXPECTED: EXPECTED is the URI, or "" for "no source" (status 1, no output).
expect() {
  local name=$1 suite=$2 want=$3 got status=0
  got=$(bash -c 'set -euo pipefail; . "$1"; debian_mirror_for "$2" "$3"' _ "$lib" "$suite" "$work/$name") || status=$?
  if [ -n "$want" ] && [ $status -eq 0 ] && [ "$got" = "$want" ]; then
    passed=$((passed + 1))
  elif [ -z "$want" ] && [ $status -eq 1 ] && [ -z "$got" ]; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    printf 'FAILED %s (%s): got "%s" (status %d), expected "%s"\n' "$name" "$suite" "$got" "$status" "${want:-nothing, status 1}"
  fi
}

# make NAME: an apt directory $work/NAME with sources.list.d; files are written by the caller.
make_dir() { mkdir -p "$work/$1/sources.list.d"; }

# debootstrap's one-line sources.list, and an empty sources.list.d.
make_dir debootstrap
echo "deb http://mirror.one/debian bookworm main" >"$work/debootstrap/sources.list"
expect debootstrap bookworm http://mirror.one/debian
expect debootstrap trixie ""

# No sources.list.d at all.
mkdir -p "$work/no-dir"
echo "deb http://mirror.one/debian bookworm main" >"$work/no-dir/sources.list"
expect no-dir bookworm http://mirror.one/debian

# The Debian 12 container image: deb822 only, no sources.list.
make_dir deb822
cat >"$work/deb822/sources.list.d/debian.sources" <<'SRC'
# A comment before the first stanza
Types: deb
# URIs: http://commented.out/debian
URIs: http://mirror.two/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.two/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
expect deb822 bookworm http://mirror.two/debian
expect deb822 bookworm-security http://security.two/debian-security
expect deb822 trixie ""

# Both formats: deb822 wins.
make_dir both
cp "$work/deb822/sources.list.d/debian.sources" "$work/both/sources.list.d/"
echo "deb http://mirror.one/debian bookworm main" >"$work/both/sources.list"
expect both bookworm http://mirror.two/debian

# deb822 without the suite, one-line with it: the one-line file answers.
make_dir fallback
printf 'Types: deb\nURIs: http://other/debian\nSuites: trixie\nComponents: main\n' \
  >"$work/fallback/sources.list.d/trixie.sources"
echo "deb http://mirror.one/debian bookworm main" >"$work/fallback/sources.list.d/bookworm.list"
expect fallback bookworm http://mirror.one/debian
expect fallback trixie http://other/debian

# One-line with options, comments, deb-src and leading whitespace.
make_dir options
cat >"$work/options/sources.list" <<'SRC'
# deb http://commented.out/debian bookworm main
deb-src http://sources.only/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.three/debian bookworm main # trailing
SRC
expect options bookworm http://mirror.three/debian
make_dir spaced-options
echo "  deb [ arch=amd64 signed-by=/k.gpg ] http://mirror.four/debian bookworm main contrib" \
  >"$work/spaced-options/sources.list"
expect spaced-options bookworm http://mirror.four/debian

# deb-src only, and a disabled deb822 stanza: no source.
make_dir disabled
printf 'Types: deb-src\nURIs: http://src/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://off/debian\nSuites: bookworm\nEnabled: no\n' \
  >"$work/disabled/sources.list.d/debian.sources"
echo "deb-src http://src/debian bookworm main" >"$work/disabled/sources.list"
expect disabled bookworm ""

# Nothing at all.
mkdir -p "$work/empty"
expect empty bookworm ""

printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
