#!/usr/bin/env bash
# A Debian 13 (trixie) chroot with LibTorch 2.6, for building and testing torchattn against
# LibTorch 2.x on this Debian 12 machine. Runs as root (or through sudo).
#
#   scripts/chroot.sh create          debootstrap trixie and install the build dependencies
#                                     (once; about 2 minutes and 2.2 GB)
#   scripts/chroot.sh run CMD...      run CMD in the project, bind-mounted at the same path
#   scripts/chroot.sh enter           an interactive shell there
#   scripts/chroot.sh clean           unmount and delete the chroot
#
# The chroot lives outside the clone, in $TORCHATTN_CHROOT (default: ~/.cache/torchattn/trixie),
# so every clone shares it. The mirror is the one this machine's apt already uses for bookworm:
# no host name is written here. `run` creates the chroot first when it is missing.
set -euo pipefail

say() { printf 'chroot: %s\n' "$*" >&2; }
die() { printf 'chroot: error: %s\n' "$*" >&2; exit 1; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/.." && pwd)
root=${TORCHATTN_CHROOT:-${HOME:-/root}/.cache/torchattn/trixie}
ready="$root/.torchattn-ready"

if [ "$(id -u)" -eq 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  die "needs root (or sudo) for debootstrap, mount and chroot"
fi

# shellcheck source=lib/debian-mirror.sh
. "$here/lib/debian-mirror.sh"

log=$(mktemp -t torchattn-chroot.XXXXXX.log)
quietly() {
  if ! "$@" >>"$log" 2>&1; then
    tail -n 30 "$log" >&2
    die "'$*' failed (full log: $log)"
  fi
}

mounted() { mountpoint -q "$1" 2>/dev/null; }

mount_all() {
  local m
  for m in proc sys dev dev/pts; do
    "${SUDO[@]}" mkdir -p "$root/$m"
  done
  mounted "$root/proc" || "${SUDO[@]}" mount -t proc proc "$root/proc"
  mounted "$root/sys" || "${SUDO[@]}" mount --rbind /sys "$root/sys"
  mounted "$root/dev" || "${SUDO[@]}" mount --rbind /dev "$root/dev"
  "${SUDO[@]}" mkdir -p "$root$project"
  mounted "$root$project" || "${SUDO[@]}" mount --bind "$project" "$root$project"
  # The shared data beside the clone (../shared), read-only, where there is one.
  if [ -d "$project/../shared" ]; then
    local shared
    shared=$(cd "$project/../shared" && pwd)
    "${SUDO[@]}" mkdir -p "$root$shared"
    mounted "$root$shared" || "${SUDO[@]}" mount --bind -o ro "$shared" "$root$shared"
  fi
  "${SUDO[@]}" cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
}

umount_all() {
  local m
  # Deepest first; --lazy because a process of a killed run may still hold one.
  for m in $(awk -v r="$root" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r); do
    "${SUDO[@]}" umount --lazy "$m" 2>/dev/null || true
  done
}

create() {
  if [ -f "$ready" ]; then
    say "ready at $root"
    return
  fi
  command -v debootstrap >/dev/null 2>&1 || {
    say "installing debootstrap"
    quietly "${SUDO[@]}" apt-get install -y --no-install-recommends debootstrap
  }
  local mirror
  mirror=$(debian_mirror_for bookworm) || die "no bookworm source in /etc/apt to take the mirror from"
  umount_all
  "${SUDO[@]}" rm -rf "$root"
  "${SUDO[@]}" mkdir -p "$root"
  say "debootstrap trixie into $root (mirror $mirror)"
  quietly "${SUDO[@]}" debootstrap --variant=minbase trixie "$root" "$mirror"
  mount_all
  trap umount_all EXIT
  say "installing the build dependencies (LibTorch 2.6, Catch2 3, fmt 10, ...)"
  quietly "${SUDO[@]}" chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root DEBIAN_FRONTEND=noninteractive bash "$project/scripts/install-deps.sh"
  "${SUDO[@]}" touch "$ready"
  rm -f "$log"
  say "ready at $root"
}

run_in() {
  [ -f "$ready" ] || create
  mount_all
  trap umount_all EXIT
  # A clean environment: the host's PATH (pyenv, ...) means nothing inside.
  local env=(PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM="${TERM:-dumb}")
  [ -z "${OMP_NUM_THREADS:-}" ] || env+=(OMP_NUM_THREADS="$OMP_NUM_THREADS")
  "${SUDO[@]}" chroot "$root" /usr/bin/env -i "${env[@]}" \
    bash -c 'cd "$1" && shift && exec "$@"' bash "$project" "$@"
}

case "${1:-}" in
  create) create ;;
  run)
    shift
    [ $# -gt 0 ] || die "usage: scripts/chroot.sh run CMD..."
    run_in "$@"
    ;;
  enter) run_in bash -i ;;
  clean)
    umount_all
    "${SUDO[@]}" rm -rf "$root"
    say "removed $root"
    ;;
  *) die "usage: scripts/chroot.sh create | run CMD... | enter | clean" ;;
esac
