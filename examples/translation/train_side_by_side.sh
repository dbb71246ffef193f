#!/usr/bin/env bash
# Trains K models side by side, each on its share of the CPUs (nproc / K threads, at least
# one), with seeds 1..K, into OUT/model-1 .. OUT/model-K; decode them together with
# `translate --model OUT/model-1,OUT/model-2`. Each run's output goes to OUT/train-I.log; the
# script prints each run's summary line and fails if any run fails (showing the end of its log).
# Usage: train_side_by_side.sh BIN OUT K [train options...]
set -euo pipefail
bin=${1:?usage: train_side_by_side.sh BIN OUT K [train options...]}
out=${2:?usage: train_side_by_side.sh BIN OUT K [train options...]}
k=${3:?usage: train_side_by_side.sh BIN OUT K [train options...]}
shift 3
if ! [[ "$k" =~ ^[1-9][0-9]*$ ]]; then
  echo "train_side_by_side.sh: K must be a positive integer, got '$k'" >&2
  exit 2
fi
threads=$(( $(nproc) / k ))
(( threads >= 1 )) || threads=1
mkdir -p "$out"
pids=()
for i in $(seq 1 "$k"); do
  rm -rf "$out/model-$i"
  OMP_NUM_THREADS=$threads "$bin" train --out "$out/model-$i" --seed "$i" --quiet "$@" \
    > "$out/train-$i.log" 2>&1 &
  pids+=($!)
done
# An interrupted script stops its runs (each keeps its last finished epoch: train --resume).
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
echo "train: $k models side by side, $threads thread(s) each, logs in $out/train-*.log"
status=0
for i in $(seq 1 "$k"); do
  if wait "${pids[$((i - 1))]}"; then
    tail -n 1 "$out/train-$i.log"
  else
    echo "train_side_by_side.sh: model $i failed; the end of $out/train-$i.log:" >&2
    tail -n 20 "$out/train-$i.log" >&2
    status=1
  fi
done
exit "$status"
