#!/usr/bin/python3
"""Training throughput of examples/translation's models in Python PyTorch, on the very batches
bench/translation_bench.cpp trains the C++ models on (it writes them to a file and runs this
script in the same run). Prints `python <model> <target tokens/s> <steps> <seconds>`, then
`steps <seconds of each timed step>`.

  /usr/bin/python3 bench/translation_bench.py --batches FILE --model gru|transformer \
      --src-vocab N --tgt-vocab M [--steps 40] [--warmup 5] [--threads 2]
      [--save-torchscript PATH [--extra-epochs E]]

--save-torchscript writes the trained model's parameters and buffers, named as in
examples/translation's C++ models, as a TorchScript module (torch.jit.trace of the model).
"""

import argparse
import os
import sys
import time

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from translation_models import GruSeq2Seq, TransformerSeq2Seq  # noqa: E402


def read_batches(path):
    """Each batch: a line `B S T`, then the src, tgt_in and tgt_out ids (row-major), one line each."""
    batches = []
    with open(path) as f:
        lines = f.read().split("\n")
    i = 0
    while i + 3 < len(lines) and lines[i]:
        B, S, T = map(int, lines[i].split())
        src = torch.tensor(list(map(int, lines[i + 1].split())), dtype=torch.long).view(B, S)
        tgt_in = torch.tensor(list(map(int, lines[i + 2].split())), dtype=torch.long).view(B, T)
        tgt_out = torch.tensor(list(map(int, lines[i + 3].split())), dtype=torch.long).view(B, T)
        batches.append((src, src.eq(0), tgt_in, tgt_out))
        i += 4
    if not batches:
        raise SystemExit(f"translation_bench.py: no batches in {path}")
    return batches


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--batches", required=True)
    p.add_argument("--model", choices=["gru", "transformer"], required=True)
    p.add_argument("--src-vocab", type=int, required=True)
    p.add_argument("--tgt-vocab", type=int, required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-torchscript")
    p.add_argument("--extra-epochs", type=int, default=0,
                   help="after timing, train this many passes over all batches before saving")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    batches = read_batches(a.batches)
    if a.model == "gru":
        model = GruSeq2Seq(a.src_vocab, a.tgt_vocab)
    else:
        model = TransformerSeq2Seq(a.src_vocab, a.tgt_vocab)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-9)
    model.train()

    def step(batch):
        src, src_pad, tgt_in, tgt_out = batch
        logits = model(src, src_pad, tgt_in)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt_out.reshape(-1),
                               ignore_index=0, label_smoothing=0.1)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return int(tgt_out.ne(0).sum())

    for i in range(a.warmup):
        step(batches[i % len(batches)])
    tokens = 0
    seconds = []
    for i in range(a.steps):
        start = time.perf_counter()
        tokens += step(batches[(a.warmup + i) % len(batches)])
        seconds.append(time.perf_counter() - start)
    print(f"python {a.model} {tokens / sum(seconds):.1f} {a.steps} {sum(seconds):.3f}", flush=True)
    print("steps " + " ".join(f"{t:.6f}" for t in seconds), flush=True)

    for epoch in range(a.extra_epochs):
        loss_sum = 0.0
        for batch in batches:
            loss_sum += step(batch)
        print(f"extra epoch {epoch + 1}/{a.extra_epochs} done", file=sys.stderr, flush=True)

    if a.save_torchscript:
        model.eval()
        src, src_pad, tgt_in, _ = batches[0]
        with torch.no_grad():
            traced = torch.jit.trace(model, (src, src_pad, tgt_in), check_trace=False)
        torch.jit.save(traced, a.save_torchscript)


if __name__ == "__main__":
    main()
