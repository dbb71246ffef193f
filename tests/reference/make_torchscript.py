#!/usr/bin/python3
"""Makes the TorchScript files of tests/reference/torchscript with real PyTorch, for the
interop tests (tests/jit): C++ loads them with torch::jit::load, runs them, and moves their
weights into torchattn modules by name.

  /usr/bin/python3 tests/reference/make_torchscript.py --library build/libtorchattn.so --out tests/reference/torchscript
  /usr/bin/python3 tests/reference/make_torchscript.py --library build/libtorchattn.so --check tests/reference/torchscript

--check regenerates into a temporary directory and fails unless every committed file has the
same code and the same tensors as the regenerated one. The files record the torch version that
made them (torch_version.txt); under another major version (PyTorch 2.x scripts
nn.MultiheadAttention into different code) only the tensors are compared.

Files (all float32, fixed seeds):
  mha_scripted.pt   torch.jit.script(nn.MultiheadAttention(16, 4, batch_first=True))
  mha_traced.pt     torch.jit.trace of an nn.MultiheadAttention(16, 2, kdim=12, vdim=10) wrapper
  op_model.pt       a scripted module that calls torch.ops.torchattn.scaled_dot_product_attention
  seq2seq_gru.pt    torch.jit.trace of bench/translation_models.py's GruSeq2Seq (vocab 40/50, 16 dims):
                    the translation example's test (tests/jit, tagged [translation])
"""

import argparse
import os
import sys
import tempfile

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench"))
from translation_models import GruSeq2Seq  # noqa: E402


class TracedMha(nn.Module):
    """nn.MultiheadAttention with separate key/value sizes, traced with a padding mask."""

    def __init__(self):
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, kdim=12, vdim=10, batch_first=True)

    def forward(self, q, k, v, key_padding_mask):
        return self.attn(q, k, v, key_padding_mask=key_padding_mask)[0]


class OpModel(nn.Module):
    """Projections around torchattn's fused op: out = W_o sdpa(W_q x, W_k x, W_v x, causal)."""

    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x):
        b, l, e = x.shape
        qkv = self.qkv(x).view(b, l, 3, self.heads, e // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        y = torch.ops.torchattn.scaled_dot_product_attention(q, k, v, None, 0.0, True, None)
        return self.out(y.transpose(1, 2).reshape(b, l, e))


def make(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    torch.jit.save(torch.jit.script(mha), os.path.join(out_dir, "mha_scripted.pt"))

    torch.manual_seed(1)
    traced = TracedMha().eval()
    q, k, v = torch.randn(2, 5, 16), torch.randn(2, 7, 12), torch.randn(2, 7, 10)
    pad = torch.zeros(2, 7, dtype=torch.bool)
    pad[1, 5:] = True
    torch.jit.save(torch.jit.trace(traced, (q, k, v, pad)), os.path.join(out_dir, "mha_traced.pt"))

    torch.manual_seed(2)
    torch.jit.save(torch.jit.script(OpModel().eval()), os.path.join(out_dir, "op_model.pt"))

    torch.manual_seed(3)
    gru = GruSeq2Seq(40, 50, embed_dim=16, hidden_dim=16).eval()
    src = torch.randint(4, 40, (3, 6))
    src[1, 4:] = 0
    src[2, 2:] = 0
    tgt_in = torch.randint(4, 50, (3, 5))
    with torch.no_grad():
        torch.jit.save(torch.jit.trace(gru, (src, src.eq(0), tgt_in), check_trace=False),
                       os.path.join(out_dir, "seq2seq_gru.pt"))


def same(a_path, b_path, compare_code=True):
    a, b = torch.jit.load(a_path), torch.jit.load(b_path)
    sa, sb = a.state_dict(), b.state_dict()
    if sa.keys() != sb.keys():
        return "different tensor names"
    for name in sa:
        if sa[name].dtype != sb[name].dtype or not torch.equal(sa[name], sb[name]):
            return f"tensor {name} differs"
    if compare_code and a.code != b.code:
        return "different code"
    return None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--library", required=True, help="libtorchattn.so, for op_model.pt")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--out")
    g.add_argument("--check")
    a = p.parse_args()
    torch.ops.load_library(a.library)
    if a.out:
        make(a.out)
        with open(os.path.join(a.out, "torch_version.txt"), "w") as f:
            f.write(torch.__version__ + "\n")
        print(f"wrote {sorted(os.listdir(a.out))} with torch {torch.__version__}")
        return
    with open(os.path.join(a.check, "torch_version.txt")) as f:
        made_by = f.read().strip()
    compare_code = made_by.split(".")[0] == torch.__version__.split(".")[0]
    with tempfile.TemporaryDirectory() as tmp:
        make(tmp)
        stale = []
        for name in sorted(os.listdir(tmp)):
            committed = os.path.join(a.check, name)
            why = "missing" if not os.path.exists(committed) else same(committed, os.path.join(tmp, name), compare_code)
            if why:
                stale.append(f"{name}: {why}")
        if stale:
            print("stale TorchScript files (regenerate with --out):\n  " + "\n  ".join(stale))
            sys.exit(1)
        what = "code and tensors" if compare_code else f"tensors (files made by torch {made_by}; code not compared across major versions)"
        print(f"{len(os.listdir(tmp))} TorchScript files are what the script makes: {what}")


if __name__ == "__main__":
    main()
