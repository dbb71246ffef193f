#!/usr/bin/env bash
# Data-parallel training with a rank killed mid-run: the other must exit with an error that
# says a rank died, within the group's timeout (--dist-timeout), not hang.
#
#   data_parallel_dead_rank.sh TORCHATTN_TRANSLATE
set -uo pipefail
bin=${1:?usage: $0 TORCHATTN_TRANSLATE}
dir=$(mktemp -d -t torchattn-ddp-XXXXXX)
trap 'kill -9 $p0 $p1 2>/dev/null; rm -rf "$dir"' EXIT
# A toy corpus: each "French" sentence is the English one reversed with a marker word.
words=(red blue cat dog sees likes big small tom mary)
for i in $(seq 1 400); do
  n=$((2 + RANDOM % 4)) en="" fr="le"
  for ((k = 0; k < n; k++)); do w=${words[RANDOM % 10]}; en="$en $w"; fr="$fr ${w}x"; done
  printf '%s\t%s\n' "${en# }" "$fr" >>"$dir/train.tsv"
done
head -n 40 "$dir/train.tsv" >"$dir/dev.tsv"
export WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$((20000 + RANDOM % 20000)) OMP_NUM_THREADS=1
args=(train --data "$dir" --out "$dir/model" --model transformer --embed-dim 32 --hidden-dim 32
  --layers 1 --heads 2 --ff-dim 64 --epochs 100000 --max-tokens 256 --dist-timeout 5 --quiet)
RANK=0 LOCAL_RANK=0 "$bin" "${args[@]}" 2>"$dir/rank0.err" &
p0=$!
RANK=1 LOCAL_RANK=1 "$bin" "${args[@]}" 2>"$dir/rank1.err" &
p1=$!
# Until both train (rank 0 has written a checkpoint), then kill rank 1 without warning.
for _ in $(seq 1 600); do
  [ -e "$dir/model/checkpoint/progress.txt" ] && break
  sleep 0.1
done
kill -9 $p1
start=$SECONDS
wait $p0
status=$?
took=$((SECONDS - start))
echo "rank 0 exited $status ${took} s after rank 1 was killed; its last words:"
tail -n 3 "$dir/rank0.err"
[ $status -ne 0 ] || { echo "FAILED: rank 0 did not fail"; exit 1; }
[ $took -le 20 ] || { echo "FAILED: rank 0 took ${took} s (timeout 5 s)"; exit 1; }
grep -q "has a rank died" "$dir/rank0.err" || { echo "FAILED: no clear message"; exit 1; }
echo "ok"
