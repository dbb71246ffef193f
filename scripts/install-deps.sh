#!/usr/bin/env bash
# Installs what torchattn needs to build, test and run its examples on Debian 12 (bookworm),
# and on Debian 13 (trixie), the LibTorch 2.6 environment of scripts/chroot.sh.
# Idempotent: installs only what is missing, and prints each step. Runs as root or through sudo.
#
# On bookworm, Catch2 v3 comes from bookworm-backports. The backports source is derived from
# the mirror the machine already uses for bookworm, so no host name is written here.
#
#   scripts/install-deps.sh               what `make test` and `make demo` need
#   scripts/install-deps.sh --sanitizers  also clang and its sanitizer and libFuzzer runtimes
#                                         (`make test-asan`)
set -euo pipefail

say() { printf 'install-deps: %s\n' "$*"; }
die() { printf 'install-deps: error: %s\n' "$*" >&2; exit 1; }

packages=(
  g++ cmake ninja-build make ccache
  libtorch-dev             # LibTorch (1.13 on bookworm, 2.6 on trixie): C++ API, CMake config
  python3-torch            # reference generation only (tests/reference)
  python3-setuptools python3-dev  # torch.compile's Inductor builds C++ (tests/python/check_export.py)
  libfmt-dev
  libgloo-dev              # Gloo's headers, which LibTorch's ProcessGroupGloo.hpp includes
  libopenblas0-openmp      # without it LibTorch multiplies with the reference BLAS, ~40x slower
  libbenchmark-dev         # bench/
  libsleef-dev             # sleef.h, included by ATen's AVX2/AVX-512 at::vec headers
  pkg-config
  clang-format             # tests/scripts/check_format.sh (the layout of .clang-format)
  libcli11-dev             # examples/translation: command line
  libsentencepiece-dev     # examples/translation: subword vocabularies (SentencePiece)
  libstb-dev               # examples/translation: PNG heatmaps (stb_image_write, stb_truetype)
  fonts-dejavu-core        # examples/translation: the heatmaps' label font
)
backports_packages=(libcatch2-dev)
for arg in "$@"; do
  case $arg in
    --sanitizers) packages+=(clang libclang-rt-dev) ;;
    *) printf 'install-deps: error: unknown option %s (expected --sanitizers)\n' "$arg" >&2; exit 2 ;;
  esac
done

# --- the system ---------------------------------------------------------------------------
[ -r /etc/os-release ] || die "cannot read /etc/os-release; only Debian 12 (bookworm) and 13 (trixie) are supported"
. /etc/os-release
if [ "${ID:-}" != debian ] || { [ "${VERSION_CODENAME:-}" != bookworm ] && [ "${VERSION_CODENAME:-}" != trixie ]; }; then
  die "unsupported system '${PRETTY_NAME:-unknown}': this script supports Debian 12 (bookworm) and 13 (trixie). \
Install LibTorch, fmt, Catch2 v3, CMake and Ninja yourself and point CMAKE_PREFIX_PATH at them."
fi
if [ "$VERSION_CODENAME" = trixie ]; then
  # Catch2 v3 is in trixie itself.
  packages+=("${backports_packages[@]}")
  backports_packages=()
fi

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  SUDO=()
fi

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
catch2_v3() {
  installed libcatch2-dev || return 1
  local v
  v=$(dpkg-query -W -f='${Version}' libcatch2-dev)
  dpkg --compare-versions "$v" ge 3
}

missing=()
for p in "${packages[@]}"; do installed "$p" || missing+=("$p"); done
need_catch2=0
[ ${#backports_packages[@]} -eq 0 ] || catch2_v3 || need_catch2=1

if [ ${#missing[@]} -eq 0 ] && [ $need_catch2 -eq 0 ]; then
  say "all dependencies present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
  die "missing packages (${missing[*]} ${backports_packages[*]}) and not root, and sudo is not available"
fi

export DEBIAN_FRONTEND=noninteractive
log=$(mktemp -t torchattn-install-deps.XXXXXX.log)
# apt and dpkg print thousands of lines; keep them in a log and show its end on failure.
quietly() {
  if ! "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "'$*' failed (full log: $log)"
  fi
}
apt_updated=0
apt_update() {
  if [ $apt_updated -eq 0 ]; then
    say "apt-get update"
    quietly "${SUDO[@]}" apt-get update
    apt_updated=1
  fi
}

# --- bookworm-backports, derived from the configured bookworm source ------------------------
backports_enabled() {
  grep -rhsE '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/ >/dev/null
}
# shellcheck source=lib/debian-mirror.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/debian-mirror.sh"
bookworm_mirror() { debian_mirror_for bookworm; }

if [ $need_catch2 -eq 1 ] && ! backports_enabled; then
  mirror=$(bookworm_mirror) || die "no bookworm source found in /etc/apt; cannot derive bookworm-backports"
  say "enabling bookworm-backports from the configured mirror ($mirror)"
  "${SUDO[@]}" tee /etc/apt/sources.list.d/torchattn-backports.sources >/dev/null <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt_updated=0
fi

if [ ${#missing[@]} -gt 0 ]; then
  apt_update
  say "installing: ${missing[*]}"
  quietly "${SUDO[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
fi
if [ $need_catch2 -eq 1 ]; then
  apt_update
  say "installing Catch2 v3 from bookworm-backports"
  quietly "${SUDO[@]}" apt-get install -y --no-install-recommends -t bookworm-backports "${backports_packages[@]}"
fi
catch2_v3 || die "Catch2 v3 did not install (libcatch2-dev $(dpkg-query -W -f='${Version}' libcatch2-dev 2>/dev/null))"
rm -f "$log"
say "done"
