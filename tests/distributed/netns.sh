#!/usr/bin/env bash
# Two ranks of PROGRAM in two network namespaces joined by a veth pair (10.213.0.1 and
# 10.213.0.2, addresses that exist only inside those namespaces), so that the rendezvous and
# Gloo cross a real (virtual) network interface instead of loopback. Exits 77 (skipped) where
# namespaces cannot be made (no root, no CAP_NET_ADMIN, no `ip`).
#
#   tests/distributed/netns.sh PROGRAM [ARGS...]
set -uo pipefail
id=$$
ns0=torchattn-$id-0 ns1=torchattn-$id-1
cleanup() {
  ip netns del "$ns0" 2>/dev/null
  ip netns del "$ns1" 2>/dev/null
}
trap cleanup EXIT
if ! command -v ip >/dev/null || ! ip netns add "$ns0" 2>/dev/null || ! ip netns add "$ns1" 2>/dev/null; then
  echo "netns: skipped: cannot create network namespaces here (needs root with CAP_NET_ADMIN and iproute2)"
  exit 77
fi
set -e
ip link add "ta$id-0" netns "$ns0" type veth peer name "ta$id-1" netns "$ns1"
ip -n "$ns0" addr add 10.213.0.1/24 dev "ta$id-0"
ip -n "$ns1" addr add 10.213.0.2/24 dev "ta$id-1"
for ns in "$ns0" "$ns1"; do
  ip -n "$ns" link set lo up
done
ip -n "$ns0" link set "ta$id-0" up
ip -n "$ns1" link set "ta$id-1" up
set +e
port=$((20000 + RANDOM % 20000))
common=(WORLD_SIZE=2 MASTER_ADDR=10.213.0.1 MASTER_PORT=$port)
ip netns exec "$ns0" env "${common[@]}" RANK=0 LOCAL_RANK=0 GLOO_SOCKET_IFNAME="ta$id-0" "$@" &
p0=$!
ip netns exec "$ns1" env "${common[@]}" RANK=1 LOCAL_RANK=0 GLOO_SOCKET_IFNAME="ta$id-1" "$@" &
p1=$!
wait $p0
s0=$?
wait $p1
s1=$?
echo "netns: rank 0 exited $s0, rank 1 exited $s1 (over veth 10.213.0.1 <-> 10.213.0.2)"
[ $s0 -eq 0 ] && [ $s1 -eq 0 ]
