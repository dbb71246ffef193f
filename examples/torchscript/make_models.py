#!/usr/bin/python3
"""Scripts and saves the two models that torchattn-torchscript (torchscript.cpp) loads:

  block.pt   a pre-norm self-attention block on nn.MultiheadAttention (plain PyTorch)
  op_block.pt  the same block with torchattn's fused op in place of nn.MultiheadAttention,
             after torch.ops.load_library(libtorchattn.so)

  /usr/bin/python3 examples/torchscript/make_models.py --library build/libtorchattn.so --out DIR
  (run build/examples/torchscript/torchattn-torchscript DIR)
  /usr/bin/python3 examples/torchscript/make_models.py --library build/libtorchattn.so --check DIR

--check closes the round trip: the weights that C++ imported from block.pt and saved with
torchattn::save_state_dict (block_from_cpp.pt) load into a fresh Python Block, strictly by
name, and give block.pt's outputs. It also shows what loading op_block.pt says in a process
that has not loaded libtorchattn.so.
"""

import argparse
import os
import sys

import torch
from torch import nn


class Block(nn.Module):
    """x + MHA(norm(x)), then x + ff(norm(x)); causal, with a key padding mask."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        L = x.size(1)
        causal = torch.ones(L, L, dtype=torch.bool).triu(1)  # True = masked, as nn.MultiheadAttention wants
        h = self.norm1(x)
        x = x + self.attn(h, h, h, key_padding_mask=padding, attn_mask=causal, need_weights=False)[0]
        return x + self.ff(self.norm2(x))


class OpBlock(nn.Module):
    """The same block calling torch.ops.torchattn.scaled_dot_product_attention itself."""

    def __init__(self, dim: int = 32, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, padding: torch.Tensor) -> torch.Tensor:
        b, l, e = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, l, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        keep = padding.logical_not().view(b, 1, 1, l)  # the op's bool masks are True = may attend
        y = torch.ops.torchattn.scaled_dot_product_attention(q, k, v, keep, 0.0, True, None)
        x = x + self.proj(y.transpose(1, 2).reshape(b, l, e))
        return x + self.ff(self.norm2(x))


def check(library, d):
    import subprocess
    # Without the library, loading a model that calls our op must fail and name the op.
    probe = subprocess.run([sys.executable, "-c", f"import torch; torch.jit.load({os.path.join(d, 'op_block.pt')!r})"],
                           capture_output=True, text=True)
    assert probe.returncode != 0, "op_block.pt loaded without libtorchattn.so"
    assert "torchattn::scaled_dot_product_attention" in probe.stderr, probe.stderr[-500:]
    print("op_block.pt without libtorchattn.so: " + next(l for l in probe.stderr.splitlines() if "torchattn::" in l).strip())

    torch.ops.load_library(library)
    original = torch.jit.load(os.path.join(d, "block.pt"))
    block = Block().eval()
    block.load_state_dict(torch.jit.load(os.path.join(d, "block_from_cpp.pt")).state_dict())  # strict
    x = torch.randn(2, 6, 32)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[1, 4:] = True
    with torch.no_grad():
        diff = (block(x, padding) - original(x, padding)).abs().max().item()
    assert diff == 0.0, f"the weights did not survive the round trip: {diff}"
    print("block_from_cpp.pt: loaded into Python's Block by name (strict); outputs equal block.pt's")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--library", required=True, help="path to libtorchattn.so")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--out")
    g.add_argument("--check")
    a = p.parse_args()
    if a.check:
        check(a.library, a.check)
        return
    torch.ops.load_library(a.library)
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(Block().eval()), os.path.join(a.out, "block.pt"))
    torch.jit.save(torch.jit.script(OpBlock().eval()), os.path.join(a.out, "op_block.pt"))
    print(f"wrote block.pt and op_block.pt to {a.out} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
