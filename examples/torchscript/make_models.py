#!/usr/bin/python3
"""Scripts and saves the two models that torchattn-torchscript (torchscript.cpp) loads:

  block.pt   a pre-norm self-attention block on nn.MultiheadAttention (plain PyTorch)
  op_block.pt  the same block with torchattn's fused op in place of nn.MultiheadAttention,
             after torch.ops.load_library(libtorchattn.so)

  /usr/bin/python3 examples/torchscript/make_models.py --library build/libtorchattn.so --out DIR
"""

import argparse
import os

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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--library", required=True, help="path to libtorchattn.so")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.ops.load_library(a.library)
    os.makedirs(a.out, exist_ok=True)
    torch.manual_seed(0)
    torch.jit.save(torch.jit.script(Block().eval()), os.path.join(a.out, "block.pt"))
    torch.jit.save(torch.jit.script(OpBlock().eval()), os.path.join(a.out, "op_block.pt"))
    print(f"wrote block.pt and op_block.pt to {a.out} (torch {torch.__version__})")


if __name__ == "__main__":
    main()
