# Sourced by scripts/*.sh: the Debian mirror this machine's apt already uses, so that no host
# name is written into the repository.

# Prints the first URI of an apt source for suite $1 (e.g. bookworm), deb822 or one-line.
debian_mirror_for() {
  local suite=$1 f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -r "$f" ] || continue
    awk -v suite="$suite" '
      BEGIN { RS=""; FS="\n" }
      {
        uris=""; suites=""
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/)   { sub(/^URIs:[ \t]*/, "", $i); uris=$i }
          if ($i ~ /^Suites:/) { sub(/^Suites:[ \t]*/, "", $i); suites=" " $i " " }
        }
        if (index(suites, " " suite " ") && uris != "") { split(uris, u, " "); print u[1]; exit }
      }' "$f"
  done | head -n 1 | grep . && return 0
  # one-line format: "deb [opts] URI suite components"
  grep -rhsE '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
    | sed -E 's/\[[^]]*\]//' | awk -v suite="$suite" '$3 == suite { print $2; exit }' | grep .
}
