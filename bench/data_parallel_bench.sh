#!/usr/bin/env bash
# Data-parallel training throughput of the translator on this machine: one process with two
# threads against two ranks with one thread each (scripts/launch.sh), the same global batches
# and steps, alternating for ROUNDS rounds. Prints target tokens per second in the training
# steps (dev evaluation excluded), the ratio, and the time rank 0 waited for all-reduces.
#
#   bench/data_parallel_bench.sh BUILD_DIR DATA_DIR [STEPS] [ROUNDS]
#   (DATA_DIR from `torchattn-translate prepare`, e.g. build/tatoeba/data of make demo-tatoeba)
set -euo pipefail
build=${1:?usage: $0 BUILD_DIR DATA_DIR [STEPS] [ROUNDS]}
data=${2:?usage: $0 BUILD_DIR DATA_DIR [STEPS] [ROUNDS]}
steps=${3:-150}
rounds=${4:-2}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin="$build/examples/translation/torchattn-translate"
tmp=$(mktemp -d -t torchattn-ddp-bench-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
rate() { sed -n 's/^train: \([0-9]*\) target tokens per second.*/\1/p'; }
for r in $(seq 1 "$rounds"); do
  rm -rf "$tmp"/*
  one=$(OMP_NUM_THREADS=2 "$bin" train --data "$data" --out "$tmp/one" --max-steps "$steps" --quiet 2>&1 |
    grep "target tokens per second")
  two=$(OMP_NUM_THREADS=1 bash "$here/scripts/launch.sh" 2 "$bin" train --data "$data" --out "$tmp/two" \
    --max-steps "$steps" --quiet 2>&1 | grep "target tokens per second")
  a=$(echo "$one" | rate)
  b=$(echo "$two" | rate)
  echo "round $r: 1 process x 2 threads: $one"
  echo "round $r: 2 ranks x 1 thread:    $two"
  awk -v a="$a" -v b="$b" -v r="$r" 'BEGIN { printf "round %d: two ranks / one process = %.3f\n", r, b / a }'
done
