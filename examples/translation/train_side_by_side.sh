#!/usr/bin/env bash
# Trains K models side by side, each on its share of the threads (OMP_NUM_THREADS, else nproc,
# divided by K; at least one), with seeds 1..K, into OUT/model-1 .. OUT/model-K; decode them
# together with `translate --model OUT/model-1,OUT/model-2`. Each run's lines are printed as
# they come, prefixed "[model I]", and kept in OUT/train-I.log; the script fails if any run
# fails, showing the end of its log.
# Usage: train_side_by_side.sh BIN OUT K [train options...]
set -euo pipefail
usage="usage: train_side_by_side.sh BIN OUT K [train options...]"
bin=${1:?$usage}
out=${2:?$usage}
k=${3:?$usage}
shift 3
if ! [[ "$k" =~ ^[1-9][0-9]*$ ]]; then
  echo "train_side_by_side.sh: K must be a positive integer, got '$k'" >&2
  exit 2
fi
threads=$(( ${OMP_NUM_THREADS:-$(nproc)} / k ))
(( threads >= 1 )) || threads=1
mkdir -p "$out"
echo "train: $k models side by side, $threads thread(s) each, logs in $out/train-*.log"
pids=()
for i in $(seq 1 "$k"); do
  rm -rf "$out/model-$i"
  OMP_NUM_THREADS=$threads "$bin" train --out "$out/model-$i" --seed "$i" --quiet "$@" \
    > >(tee "$out/train-$i.log" | sed -u "s/^/[model $i] /") 2>&1 &
  pids+=($!)
done
# Stopped, the script stops its runs (each keeps its last finished epoch: train --resume).
trap 'kill "${pids[@]}" 2>/dev/null || true' INT TERM
failed=()
for i in $(seq 1 "$k"); do
  wait "${pids[$((i - 1))]}" || failed+=("$i")
done
wait # the output's tee and sed
for i in "${failed[@]}"; do
  echo "train_side_by_side.sh: model $i failed; the end of $out/train-$i.log:" >&2
  tail -n 20 "$out/train-$i.log" >&2
done
(( ${#failed[@]} == 0 ))
