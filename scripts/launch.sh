#!/usr/bin/env bash
# Runs NPROC copies of a program on this machine with the variables torchrun sets (RANK,
# LOCAL_RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT): the plain shell loop, no Python needed.
#
#   scripts/launch.sh NPROC PROGRAM [ARGS...]
#
# MASTER_ADDR defaults to 127.0.0.1 and MASTER_PORT to a free-looking port in 20000-39999.
# Exits with the first non-zero status of any copy (0 when all succeed); Ctrl-C stops all.
set -uo pipefail
if [ $# -lt 2 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 NPROC PROGRAM [ARGS...]" >&2
  exit 2
fi
n=$1
shift
export WORLD_SIZE=$n MASTER_ADDR=${MASTER_ADDR:-127.0.0.1} MASTER_PORT=${MASTER_PORT:-$((20000 + RANDOM % 20000))}
pids=()
trap 'kill "${pids[@]}" 2>/dev/null' INT TERM
for ((r = 0; r < n; r++)); do
  RANK=$r LOCAL_RANK=$r "$@" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do
  wait "$p"
  s=$?
  [ "$status" -eq 0 ] && status=$s
done
exit "$status"
