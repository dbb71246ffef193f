#!/usr/bin/env bash
# `make demo`: prepares the default corpus (French gettext catalogs of Debian packages),
# trains the Transformer for a few minutes, prints its test BLEU and sample translations, and
# writes attention heatmaps. Usage: demo.sh BUILD_DIR [TRAIN_SECONDS]
set -euo pipefail
build=${1:?usage: demo.sh BUILD_DIR [TRAIN_SECONDS]}
seconds=${2:-${TORCHATTN_DEMO_SECONDS:-270}}
bin="$build/examples/translation/torchattn-translate"
out="$build/demo"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}

say() { printf '\n== %s\n' "$*"; }

say "prepare: the French catalogs of Debian packages (apt-get download, cached)"
"$bin" prepare --out "$out/data"

# Packed batches and the moving average of the weights (the README's recipe); bfloat16 autocast
# where torchattn's kernels multiply bfloat16 natively (AVX512-BF16 or AMX), float32 elsewhere.
# Two models side by side, half the threads each (seeds 1 and 2), decoded as an ensemble: on
# two Zen 5 cores 46.77 BLEU against 44.54 for one model on both threads (README, "Session 22").
say "train: two Transformers from torchattn::nn::MultiheadAttention side by side, ${seconds} s, ${OMP_NUM_THREADS} threads in all"
rm -rf "$out/model"
bash "$(dirname "$0")/train_side_by_side.sh" "$bin" "$out" 2 --data "$out/data" \
  --model transformer --time-budget "$seconds" --pack --ema 0.998 --precision auto
models="$out/model-1,$out/model-2"

say "evaluate: BLEU on the held-out test split (sacreBLEU 13a, case-insensitive, all references)"
"$bin" evaluate --model "$models" --data "$out/data/test.tsv" --show 8

say "translate"
printf '%s\n' "Open the file" "Save the document" "Print the selected pages" "Show hidden files" |
  "$bin" translate --model "$models" --beam 4 |
  paste <(printf '%s\n' "Open the file" "Save the document" "Print the selected pages" "Show hidden files") -

say "align: word alignments from the cross-attention (Pharaoh i-j: source word i, output word j)"
printf '%s\n' "Open the selected file" "Delete this folder" |
  "$bin" translate --model "$models" --align "$out/align.txt" > "$out/aligned.txt"
paste <(printf '%s\n' "Open the selected file" "Delete this folder") "$out/aligned.txt" \
  "$out/align.txt"

say "plot: every layer and head of the first model's attention, and the encoder's rollout"
"$bin" plot --model "$out/model-1" --out "$out/heatmap-open-file" "Open the selected file"
"$bin" plot --model "$out/model-1" --out "$out/heatmap-delete-folder" "Delete this folder"
printf '\nThe models are in %s and %s; translate with:\n  %s translate --model %s "Close the window"\n' \
  "$out/model-1" "$out/model-2" "$bin" "$models"
