#!/usr/bin/env bash
# torchattn-translate end to end on a toy corpus made here: prepare, train, interrupt and
# resume, translate (arguments and stdin), evaluate, plot, and the errors of bad input.
set -euo pipefail
bin=${1:?usage: cli_smoke.sh PATH_TO_torchattn-translate SOURCE_DIR}
source_dir=$(cd "${2:?usage: cli_smoke.sh PATH_TO_torchattn-translate SOURCE_DIR}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
fail() { echo "cli_smoke: FAIL: $*" >&2; exit 1; }

# Toy "French": the English words reversed with a suffix. 600 sources, 2 references each.
words=(red blue cat dog sees likes big small tom mary)
RANDOM=7
for i in $(seq 600); do
  n=$((2 + RANDOM % 3)); en=(); for k in $(seq $n); do en+=("${words[RANDOM % 10]}"); done
  fr="le"; for ((k=${#en[@]}-1; k>=0; k--)); do fr+=" ${en[k]}x"; done
  printf '%s\t%s\t%s !\n' "${en[*]}" "$fr" "$fr"
done > toy.tsv

"$bin" prepare --data toy.tsv --out data > prepare.log
grep -q "train" prepare.log || fail "prepare printed no summary"
for f in train dev test; do [ -s "data/$f.tsv" ] || fail "prepare wrote no data/$f.tsv"; done

common=(--data data --out model --model gru --attention general --embed-dim 32 --hidden-dim 32 --max-tokens 256 --warmup 20 --lr 0.003 --quiet)
"$bin" train "${common[@]}" --epochs 1 > train.log 2>&1 || fail "train failed: $(cat train.log)"
"$bin" train "${common[@]}" --epochs 1 > again.log 2>&1 && fail "training into a used directory succeeded"
grep -q "already holds a training run" again.log || fail "no message for a used --out: $(cat again.log)"
"$bin" train --resume --out model --epochs 3 --quiet > resume.log 2>&1 || fail "resume failed: $(cat resume.log)"
grep -q "resuming 'model' after epoch 1" resume.log || fail "resume did not continue from epoch 1: $(cat resume.log)"
[ "$(tail -n +2 model/history.tsv | wc -l)" -eq 3 ] || fail "history.tsv does not hold 3 epochs"

out=$("$bin" translate --model model "red cat" "tom sees mary")
[ "$(printf '%s\n' "$out" | wc -l)" -eq 2 ] || fail "translate gave not 2 lines: $out"
out=$(printf 'red cat\n\nblue dog\n' | "$bin" translate --model model --beam 3)
[ "$(printf '%s\n' "$out" | wc -l)" -eq 3 ] || fail "translate from stdin gave not 3 lines: $out"

"$bin" evaluate --model model --data data/test.tsv > eval.log
grep -Eq '^BLEU = [0-9.]+ ' eval.log || fail "evaluate printed no BLEU: $(cat eval.log)"
# An ensemble of the model with itself averages equal probabilities: the same BLEU.
"$bin" evaluate --model model,model --data data/test.tsv > eval2.log || fail "evaluate --model model,model failed"
[ "$(grep -Eo '^BLEU = [0-9.]+' eval2.log)" = "$(grep -Eo '^BLEU = [0-9.]+' eval.log)" ] || fail "an ensemble of one model twice changed BLEU: $(cat eval.log eval2.log)"

"$bin" plot --model model --out heat "red cat sees blue dog" > plot.log
[ -s heat.png ] && [ -s heat.svg ] || fail "plot wrote no heat.png/heat.svg"

# Subwords, packed batches, the Transformer's plot grid and word alignments.
"$bin" prepare --data toy.tsv --out data-bpe --subwords bpe --vocab-size 60 > bpe.log 2>&1 || fail "prepare --subwords bpe failed: $(cat bpe.log)"
[ -s data-bpe/src.spm.model ] && [ -s data-bpe/tgt.spm.model ] || fail "prepare wrote no SentencePiece models"
"$bin" train --data data-bpe --out m-bpe --pack --hidden-dim 32 --heads 2 --layers 2 --ff-dim 64 --max-tokens 256 --warmup 20 --epochs 2 --tie-embeddings --ema 0.99 --schedule linear --word-dropout 0.1 --precision auto --quiet > bpe-train.log 2>&1 || fail "train on subwords failed: $(cat bpe-train.log)"
grep -qE "^precision=(fp32|bf16)$" m-bpe/train.txt || fail "--precision auto was not resolved in train.txt: $(grep precision m-bpe/train.txt)"
grep -q "tokenizer=sentencepiece" m-bpe/options.txt || fail "the model directory does not name its tokenizer"
grep -q "tie_embeddings=1" m-bpe/options.txt || fail "options.txt does not say tie_embeddings=1"
[ -s m-bpe/checkpoint/average.pt ] || fail "train --ema wrote no checkpoint/average.pt"
"$bin" translate --model m-bpe --align align.txt "red cat" "tom sees mary" > bpe.out || fail "translate --align failed"
[ "$(wc -l < align.txt)" -eq 2 ] || fail "align.txt has not 2 lines: $(cat align.txt)"
grep -Eqv '^([0-9]+-[0-9]+)( [0-9]+-[0-9]+)*$' align.txt && fail "align.txt is not in the Pharaoh format: $(cat align.txt)"
grep -qF "$(printf '\342\226\201')" bpe.out && fail "translate printed subword pieces (U+2581): $(cat bpe.out)"
"$bin" plot --model m-bpe --out grid "red cat sees tom" > grid.log || fail "plot failed: $(cat grid.log)"
grep -q "13 panels" grid.log || fail "plot did not draw 3 kinds x 2 layers x 2 heads + rollout: $(cat grid.log)"
[ "$(grep -o '<g class="panel"' grid.svg | wc -l)" -eq 13 ] || fail "grid.svg has not 13 panels"
"$bin" plot --model m-bpe --out one --layer 2 --head 1 "red cat" > one.log || fail "plot --layer --head failed"
grep -q "4 panels" one.log || fail "plot --layer 2 --head 1 did not draw 3 panels + rollout: $(cat one.log)"

# A GRU model made in Python (bench/translation_models.py), imported and used for translation.
python=${TORCHATTN_PYTHON:-python3}
if command -v "$python" >/dev/null && "$python" -c "import torch" 2>/dev/null; then
  $python - "$source_dir/bench" model <<'PY'
import sys, torch
sys.path.insert(0, sys.argv[1])
from translation_models import GruSeq2Seq
count = lambda f: sum(1 for _ in open(f))
vs, vt = count(sys.argv[2] + "/src.vocab"), count(sys.argv[2] + "/tgt.vocab")
torch.manual_seed(0)
m = GruSeq2Seq(vs, vt, embed_dim=24, hidden_dim=20).eval()
src = torch.randint(4, vs, (2, 3))
with torch.no_grad():
    torch.jit.save(torch.jit.trace(m, (src, src.eq(0), torch.randint(4, vt, (2, 4))), check_trace=False), "py_gru.pt")
PY
  "$bin" import --torchscript py_gru.pt --vocab model --out imported > import.log || fail "import failed"
  grep -q "hidden_dim=20" imported/options.txt || fail "import did not read the sizes from the tensors"
  [ "$("$bin" translate --model imported "red cat" "blue dog" | wc -l)" -eq 2 ] || fail "the imported model did not translate"
else
  echo "cli_smoke: no $python with torch; the import step is skipped"
fi

# Bad input: clear messages and exit status 1, never a crash.
expect_error() {  # expect_error PATTERN COMMAND...
  local pattern=$1; shift
  set +e; "$@" > err.log 2>&1; local rc=$?; set -e
  [ $rc -eq 1 ] || fail "'$*' exited with $rc, expected 1: $(cat err.log)"
  grep -q "$pattern" err.log || fail "'$*' did not say '$pattern': $(cat err.log)"
}
expect_error "does not exist" "$bin" translate --model nowhere "x"
printf 'just one column\n' > bad.tsv
expect_error "line 1: no tab" "$bin" prepare --data bad.tsv --out bad
expect_error "is not a TorchScript archive" "$bin" import --torchscript toy.tsv --vocab model --out bad-import
[ "$(wc -l < err.log)" -eq 1 ] || fail "import of a garbage file printed more than its one-line error: $(cat err.log)"

# Nonsense options and input: a one-line reason and a non-zero status.
expect_refusal() {  # expect_refusal PATTERN COMMAND... (any non-zero status)
  local pattern=$1; shift
  set +e; "$@" > err.log 2>&1 < "${stdin:-/dev/null}"; local rc=$?; set -e
  [ $rc -ne 0 ] || fail "'$*' succeeded: $(cat err.log)"
  grep -qF -- "$pattern" err.log || fail "'$*' did not say '$pattern': $(cat err.log)"
}
small=(--model gru --attention general --embed-dim 32 --hidden-dim 32 --warmup 20 --lr 0.003 --quiet)
expect_refusal "--time-budget: -5 is not a finite number in [0, 1000000000]" "$bin" train --data data --out m-budget "${small[@]}" --time-budget -5
expect_refusal "max_tokens is 1, expected at least max_len (128)" "$bin" train --data data --out m-tokens "${small[@]}" --max-tokens 1
expect_refusal "--alpha: nan is not a finite number in [0, 10]" "$bin" translate --model model --alpha nan "red cat"
expect_refusal "--alpha: -50 is not a finite number in [0, 10]" "$bin" translate --model model --alpha -50 "red cat"
expect_refusal "--show" "$bin" evaluate --model model --data data/test.tsv --show -5
expect_refusal "unknown subcommand 'frobnicate'; expected one of prepare, train, translate" "$bin" frobnicate
expect_refusal "--subwords: wordpiece not in {unigram,bpe,none}" "$bin" prepare --data toy.tsv --out bad-sp --subwords wordpiece
expect_refusal "--layer 9 is not a layer of this model (1 to 2)" "$bin" plot --model m-bpe --out x --layer 9 "red cat"
expect_refusal "--pack needs the Transformer" "$bin" train --data data --out m-pack "${small[@]}" --pack
expect_refusal "tie_embeddings needs the Transformer" "$bin" train --data data --out m-tie "${small[@]}" --tie-embeddings
expect_refusal "--ema: 1 is not a finite number in [0, 0.9999]" "$bin" train --data data --out m-ema "${small[@]}" --ema 1
expect_refusal "--word-dropout: 1 is not a finite number in [0, 0.99]" "$bin" train --data data --out m-wd "${small[@]}" --word-dropout 1
expect_refusal "--schedule: cosine not in {inverse-sqrt,linear}" "$bin" train --data data --out m-sched "${small[@]}" --schedule cosine
expect_refusal "translate: sentence 1 has no words" "$bin" translate --model model ""
printf 'red cat\nblue \377 dog\n' > bad-utf8.txt
stdin=bad-utf8.txt expect_refusal "translate: line 2 is not valid UTF-8: 'blue \xff dog'" "$bin" translate --model model
# A sentence longer than the model reads: translated, with a warning.
long=$(for i in $(seq 300); do printf 'red '; done)
"$bin" translate --model model "$long" > long.out 2> long.err || fail "a long sentence failed: $(cat long.err)"
grep -qF "sentence 1 has 300 tokens; the model reads the first 128" long.err || fail "no warning for a long sentence: $(cat long.err)"
# Training data with a sentence longer than max_len: left out, and said so.
{ cat toy.tsv; printf '%s\tle x\n' "$long"; } > long.tsv
"$bin" prepare --data long.tsv --out data-long --dev 0.01 --test 0.01 > /dev/null
"$bin" train --data data-long --out m-long "${small[@]}" --max-tokens 256 --epochs 1 > long-train.log 2>&1 || fail "train failed: $(cat long-train.log)"
grep -qE "warning: [0-9]+ pairs have a sentence longer than max_len \(128 tokens\) and are left out" long-train.log || fail "no warning for a long training sentence: $(cat long-train.log)"
# A corrupt options.txt is reported with its bytes escaped, never echoed raw to the terminal.
cp -r model garbled
printf '\001\002garbage\377\n' > garbled/options.txt
expect_refusal "expected key=value, got '\\x01\\x02garbage\\xff'" "$bin" translate --model garbled "red cat"
if LC_ALL=C grep -q "$(printf '[\001-\010\016-\037\177-\377]')" err.log; then fail "raw bytes in the message: $(cat -v err.log)"; fi
head -c 100 model/model.pt > trunc.pt && cp trunc.pt model/model.pt
expect_error "is not a weights file" "$bin" translate --model model "red cat"
# Models side by side (train_side_by_side.sh, what make demo-tatoeba runs): a directory and a
# summary per model, seeds 1 and 2, decoded together; a bad K and a failing run are refused.
side=("$source_dir/examples/translation/train_side_by_side.sh" "$bin")
bash "${side[@]}" side 2 --data data "${small[@]}" --max-tokens 256 --epochs 1 > side.log 2>&1 || fail "train_side_by_side.sh failed: $(cat side.log)"
[ "$(grep -c "^\[model [12]\] train: 1 epochs in .* model in 'side/model-[12]'" side.log)" -eq 2 ] || fail "not two summaries: $(cat side.log)"
for i in 1 2; do
  [ -s "side/model-$i/model.pt" ] || fail "no side/model-$i/model.pt"
  grep -qx "seed=$i" "side/model-$i/train.txt" || fail "side/model-$i was not trained with seed $i"
done
"$bin" evaluate --model side/model-1,side/model-2 --data data/test.tsv > side-eval.log || fail "evaluating the two side by side failed"
grep -Eq '^BLEU = [0-9.]+ ' side-eval.log || fail "no BLEU for the two side by side: $(cat side-eval.log)"
expect_refusal "K must be a positive integer, got '0'" bash "${side[@]}" side0 0 --data data
expect_refusal "model 1 failed" bash "${side[@]}" side-bad 2 --data no-such-data --epochs 1

echo "cli_smoke: OK"
