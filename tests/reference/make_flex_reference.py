#!/usr/bin/python3
"""Reference cases for torchattn's flex_attention, made by PyTorch 2.6's own flex_attention.

Each case runs torch.nn.attention.flex_attention in eager mode (CPU, autograd) with a
score_mod and a mask_mod written in Python for one of torchattn's modifiers, and records the
inputs, the modifier's parameters, the output, the logsumexp and the gradients of a fixed
random loss with respect to query, key, value and every learnable modifier (bias, position
table, ALiBi slopes). The bias's gradient comes from scaled_dot_product_attention with the
bias as an explicit float mask, which flex_attention's eager mode cannot differentiate through
a captured tensor. Fully masked rows are avoided: PyTorch's flex_attention and torchattn agree
there (zeros), but its lse there is not defined the same way across versions.

The file is flex.pt in this directory, a scripted container like make_reference.py's (C++
reads it with torch::jit::load). It needs PyTorch >= 2.5, so it runs in the LibTorch 2.6
chroot (scripts/chroot.sh):
    scripts/chroot.sh run python3 tests/reference/make_flex_reference.py --out tests/reference
    scripts/chroot.sh run python3 tests/reference/make_flex_reference.py --check tests/reference
Under PyTorch 1.x both exit 77 (CTest's skip) after saying so.
"""

import argparse
import os
import sys
import tempfile

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import Bag, container  # noqa: E402

TORCH_OK = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)
if TORCH_OK:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention


def t5_buckets(lq, lk, num_buckets=32, max_distance=128, bidirectional=True):
    """HuggingFace's T5Attention._relative_position_bucket of j - i, at j - i + lq - 1."""
    relative = torch.arange(-(lq - 1), lk)
    buckets = torch.zeros_like(relative)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative > 0).to(torch.long) * num_buckets
        relative = torch.abs(relative)
    else:
        relative = -torch.min(relative, torch.zeros_like(relative))
    max_exact = num_buckets // 2
    is_small = relative < max_exact
    large = max_exact + (torch.log(relative.float() / max_exact)
                         / torch.log(torch.tensor(max_distance / max_exact))
                         * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(is_small, relative, large)


# name: (B, H, H_kv, Lq, Lk, E, modifiers); the C++ test applies the same modifiers by name.
CASES = {
    "alibi": (1, 2, 2, 150, 150, 4, {"alibi": True}),
    "softcap": (1, 2, 2, 150, 150, 4, {"softcap": 2.0}),
    "bias": (1, 1, 1, 100, 140, 4, {"bias": True}),
    "t5_table": (1, 2, 2, 150, 150, 4, {"t5": True}),
    "clipped_table": (1, 2, 2, 130, 170, 4, {"clipped": 16}),
    "sliding_window": (1, 1, 1, 300, 300, 4, {"causal": "top_left", "window_left": 64}),
    "documents": (2, 1, 1, 200, 200, 4, {"documents": True}),
    "prefix_lm": (2, 1, 1, 160, 160, 4, {"causal": "top_left", "prefix": [40, 100]}),
    "causal_top_left": (1, 2, 2, 150, 150, 4, {"causal": "top_left"}),
    "causal_bottom_right": (1, 1, 1, 90, 300, 4, {"causal": "bottom_right"}),
    "gqa": (1, 4, 2, 150, 150, 4, {"causal": "top_left"}),
    "combined": (1, 4, 2, 200, 200, 4, {"softcap": 5.0, "alibi": True, "causal": "top_left",
                                        "window_left": 96, "documents": True}),
}


def run_case(name, dtype, seed):
    # flex_attention caches what it traced of a score_mod; every case defines its own under the
    # same code object, so the cache must not carry over.
    torch._dynamo.reset()
    B, H, Hkv, Lq, Lk, E, mods = CASES[name]
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, Lq, E, generator=g, dtype=torch.float64).to(dtype)
    k = torch.randn(B, Hkv, Lk, E, generator=g, dtype=torch.float64).to(dtype)
    v = torch.randn(B, Hkv, Lk, E, generator=g, dtype=torch.float64).to(dtype)
    grad = torch.randn(B, H, Lq, E, generator=g, dtype=torch.float64).to(dtype)
    tensors, learn = {}, {}
    score_terms, mask_terms = [], []
    if "softcap" in mods:
        c = mods["softcap"]
        score_terms.append(lambda s, b, h, qi, ki: c * torch.tanh(s / c))
    if mods.get("alibi"):
        learn["alibi_slopes"] = (torch.rand(H, generator=g, dtype=torch.float64) * 0.5).to(dtype)
        slopes = learn["alibi_slopes"]
        score_terms.append(lambda s, b, h, qi, ki: s + slopes[h] * (ki - qi))
    if mods.get("t5") or "clipped" in mods:
        if mods.get("t5"):
            buckets = t5_buckets(Lq, Lk)
            nb = 32
        else:
            md = mods["clipped"]
            buckets = torch.arange(-(Lq - 1), Lk).clamp(-md, md) + md
            nb = 2 * md + 1
        tensors["position_buckets"] = buckets
        learn["position_bias"] = torch.randn(H, nb, generator=g, dtype=torch.float64).to(dtype)
        table = learn["position_bias"]
        score_terms.append(lambda s, b, h, qi, ki: s + table[h, buckets[ki - qi + Lq - 1]])
    causal = mods.get("causal", "none")
    off = Lk - Lq if causal == "bottom_right" else 0
    if causal != "none":
        if "prefix" in mods:
            prefix = torch.tensor(mods["prefix"])
            tensors["prefix_lengths"] = prefix
            mask_terms.append(lambda b, h, qi, ki: (ki <= qi + off) | (ki < prefix[b]))
        else:
            mask_terms.append(lambda b, h, qi, ki: ki <= qi + off)
    if "window_left" in mods:
        w = mods["window_left"]
        mask_terms.append(lambda b, h, qi, ki: ki >= qi + off - w)
    if mods.get("documents"):
        # Ragged documents, the same for queries and keys, differing per batch entry.
        lengths = [[30, 70, 20, Lq - 120], [Lq - 50, 50]][:B]
        docs = torch.stack([torch.repeat_interleave(torch.arange(len(lens)), torch.tensor(lens))
                            for lens in lengths])
        tensors["q_doc_ids"] = docs
        tensors["kv_doc_ids"] = docs
        mask_terms.append(lambda b, h, qi, ki: docs[b, qi] == docs[b, ki])
    for t in learn.values():
        t.requires_grad_(True)
    for t in (q, k, v):
        t.requires_grad_(True)

    def score_mod(s, b, h, qi, ki):
        for term in score_terms:
            s = term(s, b, h, qi, ki)
        return s

    def mask_mod(b, h, qi, ki):
        allowed = qi >= 0
        for term in mask_terms:
            allowed = allowed & term(b, h, qi, ki)
        return allowed

    gqa = H != Hkv
    if mods.get("bias"):
        # flex_attention cannot differentiate a captured bias in eager mode: SDPA with the bias
        # as an explicit float mask gives the same function and its gradient.
        learn["bias"] = torch.randn(B, H, Lq, Lk, generator=g, dtype=torch.float64).to(dtype)
        learn["bias"].requires_grad_(True)
        s = q @ k.transpose(-1, -2) * E ** -0.5 + learn["bias"]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=learn["bias"])
        lse = torch.logsumexp(s, -1)
    else:
        block_mask = None
        if mask_terms:
            block_mask = create_block_mask(mask_mod, B, H, Lq, Lk, device="cpu")
        out, lse = flex_attention(q, k, v, score_mod=score_mod if score_terms else None,
                                  block_mask=block_mask, enable_gqa=gqa, return_lse=True)
    wrt = [q, k, v] + list(learn.values())
    grads = torch.autograd.grad(out, wrt, grad)
    tensors.update({"query": q, "key": k, "value": v, "grad_output": grad, "output": out,
                    "lse": lse})
    for n, t in learn.items():
        tensors[n] = t
    names = ["query", "key", "value"] + list(learn)
    tensors.update({"grads." + n: gr for n, gr in zip(names, grads)})
    attrs = {"causal": causal, "window_left": mods.get("window_left", -1),
             "softcap": float(mods.get("softcap", 0.0)), "enable_gqa": gqa}
    return Bag({n: t.detach() for n, t in tensors.items()}, attrs)


ATTRS = ("causal", "window_left", "softcap", "enable_gqa")


def compare(committed, fresh, tol64=1e-12, tol32=1e-6):
    """Differences between two flex.pt files: case lists, attributes and tensors."""
    c_names, f_names = committed.case_names.split("\n"), fresh.case_names.split("\n")
    if c_names != f_names:
        return [f"case lists differ: committed {len(c_names)}, script makes {len(f_names)}"]
    problems = []
    for name in f_names:
        c, f = getattr(committed, name), getattr(fresh, name)
        problems += [f"{name}.{a} differs" for a in ATTRS if getattr(c, a) != getattr(f, a)]
        cb, fb = dict(c.named_buffers()), dict(f.named_buffers())
        if sorted(cb) != sorted(fb):
            problems.append(f"{name}: tensors {sorted(cb)} != {sorted(fb)}")
            continue
        for t, b in fb.items():
            a = cb[t]
            tol = tol64 if b.dtype == torch.float64 else tol32
            same = a.shape == b.shape and a.dtype == b.dtype and (
                torch.equal(a, b) if not b.is_floating_point()
                else torch.allclose(a, b, rtol=tol, atol=tol, equal_nan=True))
            if not same:
                problems.append(f"{name}.{t} differs")
    return problems


def build():
    bags = {}
    for i, name in enumerate(CASES):
        for dt, dname in ((torch.float64, "f64"), (torch.float32, "f32")):
            bags[f"{name}_{dname}"] = run_case(name, dt, seed=9000 + i)
    return container(bags)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", help="write flex.pt into this directory")
    group.add_argument("--check", help="fail unless flex.pt in this directory is what the script makes")
    args = parser.parse_args()
    if not TORCH_OK:
        print(f"skipped: flex.pt is made by PyTorch >= 2.5's flex_attention (this is {torch.__version__})")
        return 77
    module = build()
    if args.out:
        module.save(os.path.join(args.out, "flex.pt"))
        print(f"wrote flex.pt: {len(module.case_names.splitlines())} cases, torch {torch.__version__}")
        return 0
    path = os.path.join(args.check, "flex.pt")
    committed = torch.jit.load(path)
    with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
        module.save(tmp.name)
        fresh = torch.jit.load(tmp.name)
    problems = compare(committed, fresh)
    for p in problems[:50]:
        print("  " + p)
    print(f"{path}: {'stale' if problems else 'matches'} "
          f"({len(fresh.case_names.splitlines())} cases, torch {torch.__version__})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
