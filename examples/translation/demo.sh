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
say "train: a Transformer from torchattn::nn::MultiheadAttention, ${seconds} s on ${OMP_NUM_THREADS} threads"
rm -rf "$out/model"
"$bin" train --data "$out/data" --out "$out/model" --model transformer --time-budget "$seconds" \
  --pack --ema 0.998 --precision auto

say "evaluate: BLEU on the held-out test split (sacreBLEU 13a, case-insensitive, all references)"
"$bin" evaluate --model "$out/model" --data "$out/data/test.tsv" --show 8

say "translate"
printf '%s\n' "Open the file" "Save the document" "Print the selected pages" "Show hidden files" |
  "$bin" translate --model "$out/model" --beam 4 |
  paste <(printf '%s\n' "Open the file" "Save the document" "Print the selected pages" "Show hidden files") -

say "align: word alignments from the cross-attention (Pharaoh i-j: source word i, output word j)"
printf '%s\n' "Open the selected file" "Delete this folder" |
  "$bin" translate --model "$out/model" --align "$out/align.txt" > "$out/aligned.txt"
paste <(printf '%s\n' "Open the selected file" "Delete this folder") "$out/aligned.txt" \
  "$out/align.txt"

say "plot: every layer and head of the attention, and the encoder's rollout"
"$bin" plot --model "$out/model" --out "$out/heatmap-open-file" "Open the selected file"
"$bin" plot --model "$out/model" --out "$out/heatmap-delete-folder" "Delete this folder"
printf '\nThe model is in %s; translate with:\n  %s translate --model %s "Close the window"\n' \
  "$out/model" "$bin" "$out/model"
