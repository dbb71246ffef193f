# Sourced by scripts/*.sh: the Debian mirror this machine's apt already uses, so that no host
# name is written into the repository.

# Prints the first URI of an apt source of type deb for suite $1 (e.g. bookworm), from the
# deb822 files (sources.list.d/*.sources) first, then the one-line ones (sources.list and
# sources.list.d/*.list); $2 is the apt directory (default /etc/apt). Returns 1, printing
# nothing, when no source names the suite. Safe under `set -euo pipefail`: a format with no
# files is skipped, not an error.
debian_mirror_for() {
  local suite=$1 apt=${2:-/etc/apt} f uri=""
  local -a deb822=() oneline=()
  for f in "$apt"/sources.list.d/*.sources; do
    if [ -f "$f" ] && [ -r "$f" ]; then deb822+=("$f"); fi
  done
  if [ -f "$apt/sources.list" ] && [ -r "$apt/sources.list" ]; then oneline+=("$apt/sources.list"); fi
  for f in "$apt"/sources.list.d/*.list; do
    if [ -f "$f" ] && [ -r "$f" ]; then oneline+=("$f"); fi
  done
  if [ ${#deb822[@]} -gt 0 ]; then
    # Stanzas are separated by blank lines; '#' lines are comments; "Enabled: no" disables.
    uri=$(awk -v suite="$suite" '
      BEGIN { RS = ""; FS = "\n" }
      {
        uris = ""; suites = ""; types = ""; enabled = 1
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^[ \t]*#/) continue
          if (line ~ /^URIs:/)    { sub(/^URIs:[ \t]*/, "", line); uris = line }
          if (line ~ /^Suites:/)  { sub(/^Suites:[ \t]*/, "", line); suites = " " line " " }
          if (line ~ /^Types:/)   { sub(/^Types:[ \t]*/, "", line); types = " " line " " }
          if (line ~ /^Enabled:[ \t]*[Nn]o/) enabled = 0
        }
        if (enabled && index(types, " deb ") && index(suites, " " suite " ") && uris != "") {
          split(uris, u, " "); print u[1]; exit
        }
      }' "${deb822[@]}")
  fi
  if [ -z "$uri" ] && [ ${#oneline[@]} -gt 0 ]; then
    # "deb [opts] URI suite components", options in brackets possibly with spaces inside.
    uri=$(awk -v suite="$suite" '
      {
        sub(/#.*/, "")
        if ($1 != "deb") next
        sub(/^[ \t]*deb[ \t]+/, "")
        sub(/^\[[^]]*\][ \t]*/, "")
        split($0, w, /[ \t]+/)
        if (w[2] == suite) { print w[1]; exit }
      }' "${oneline[@]}")
  fi
  [ -n "$uri" ] || return 1
  printf '%s\n' "$uri"
}
