#!/usr/bin/env bash
# Runs the README's first command on a fresh Debian 12: debootstrap --variant=minbase bookworm
# (its sources.list left in the one-line format debootstrap writes), only git, make and
# ca-certificates added, a clean clone of this repository's HEAD, then `make test` (or the
# make targets given) inside it. Root only; about 2 GB and, on two cores, 20 to 30 minutes.
#
#   scripts/fresh-debian.sh [TARGET...]      default: test
#
# The chroot is made in $TORCHATTN_FRESH (default: a new directory under /var/tmp) and removed
# afterwards unless TORCHATTN_FRESH_KEEP=1.
set -euo pipefail

say() { printf 'fresh-debian: %s\n' "$*" >&2; }
die() { printf 'fresh-debian: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root for debootstrap, mount and chroot"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
project=$(cd "$here/.." && pwd)
# shellcheck source=lib/debian-mirror.sh
. "$here/lib/debian-mirror.sh"
mirror=$(debian_mirror_for bookworm) || die "no bookworm source in /etc/apt to take the mirror from"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(test)

root=${TORCHATTN_FRESH:-$(mktemp -d /var/tmp/torchattn-fresh.XXXXXX)}
cleanup() {
  for m in "$root/src/shared" "$root/proc" "$root/dev"; do
    mountpoint -q "$m" 2>/dev/null && umount -l "$m" || true
  done
  [ "${TORCHATTN_FRESH_KEEP:-0}" = 1 ] || rm -rf --one-file-system "$root"
}
trap cleanup EXIT

command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
say "debootstrap --variant=minbase bookworm into $root ($mirror)"
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log"; die "debootstrap failed"; }
say "its apt sources: $(cat "$root/etc/apt/sources.list"); sources.list.d: $(ls -A "$root/etc/apt/sources.list.d" | wc -l) files"
mount -t proc proc "$root/proc"
mount --rbind /dev "$root/dev"
cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
chroot "$root" bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends git make ca-certificates >/dev/null'
say "clean clone of $(git -C "$project" rev-parse --short HEAD)"
git clone -q "$project" "$root/src/torchattn"
# ../shared beside the clone, read-only, as CI has it.
if [ -d "$project/../shared" ]; then
  mkdir -p "$root/src/shared"
  mount --bind -o ro "$project/../shared" "$root/src/shared"
fi
say "make ${targets[*]}"
chroot "$root" bash -c "cd /src/torchattn && make ${targets[*]}"
say "passed"
