#!/usr/bin/python3
"""Reference cases for torchattn's RotaryEmbedding and GroupedQueryAttention, in float64.

The block is written here from the published architecture (Hugging Face's LlamaAttention and
MistralAttention; Meta's reference Llama for the interleaved rotary layout), not from
torchattn: q_proj, k_proj, v_proj and o_proj, rotary embeddings on queries and keys, key/value
heads repeated per group, causal and sliding-window masks, a key padding mask, softmax and the
output projection. The rotary frequencies follow Hugging Face's rope initialisers (default,
linear, NTK, llama3). rotate_half rotates with cos/sin of the concatenated frequencies, as
Hugging Face does; the interleaved layout multiplies complex pairs by polar(1, angle), as
Meta's reference does: two formulations, neither the C++ one.

Each case records the module's options, its parameters by state-dict name, the input, the
output and the gradients of sum(output * grad_out) with respect to the input and every
parameter. The file is gqa.pt in this directory, a scripted container like make_reference.py's:
    /usr/bin/python3 tests/reference/make_gqa_reference.py --out tests/reference
    /usr/bin/python3 tests/reference/make_gqa_reference.py --check tests/reference
"""

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_reference import Bag, container, single_file_main  # noqa: E402

# name: (B, L, embed_dim, num_heads, num_kv_heads, head_dim, options)
CASES = {
    "mha_rope": (2, 7, 32, 4, 4, 8, {}),
    "gqa_interleaved_bias": (2, 6, 32, 4, 2, 8, {"interleaved": True, "bias": True}),
    "mqa_partial_window_padding": (2, 9, 24, 4, 1, 6,
                                   {"rotary_dim": 4, "sliding_window": 3, "padding": True}),
    "gqa_llama3": (1, 8, 32, 8, 2, 8, {"scaling": "llama3", "factor": 8.0, "base": 500000.0,
                                      "original_max_positions": 16}),
    "gqa_linear_noncausal": (2, 5, 16, 4, 2, 4, {"scaling": "linear", "factor": 2.0,
                                                 "is_causal": False}),
    "mha_ntk_interleaved": (1, 6, 16, 2, 2, 8, {"scaling": "ntk", "factor": 4.0,
                                                "interleaved": True}),
    "norope_window": (2, 8, 16, 4, 2, 4, {"rope": False, "sliding_window": 2}),
}

DEFAULTS = {"interleaved": False, "bias": False, "rotary_dim": 0, "sliding_window": -1,
            "padding": False, "scaling": "none", "factor": 1.0, "base": 10000.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_positions": 8192,
            "is_causal": True, "rope": True}


def inv_freq(dim, o):
    """Hugging Face's rope initialisers: default, linear, dynamic NTK (at its scaled base) and
    llama3."""
    base = o["base"]
    if o["scaling"] == "ntk":
        base = base * o["factor"] ** (dim / (dim - 2))
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    if o["scaling"] == "linear":
        inv = inv / o["factor"]
    if o["scaling"] == "llama3":
        factor, low, high = o["factor"], o["low_freq_factor"], o["high_freq_factor"]
        old = o["original_max_positions"]
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv
        inv_llama = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * inv_llama / factor + smooth * inv_llama
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        inv = torch.where(medium, smoothed, inv_llama)
    return inv


def rotate(x, positions, o):
    """x [B, H, L, hd] rotated on its first rotary_dim features at positions [L]."""
    hd = x.shape[-1]
    rd = o["rotary_dim"] or hd
    angles = positions.to(torch.float64)[:, None] * inv_freq(rd, o)[None, :]  # [L, rd/2]
    x_rot, x_pass = x[..., :rd], x[..., rd:]
    if o["interleaved"]:  # Meta's reference: complex pairs times polar(1, angle)
        pairs = torch.view_as_complex(x_rot.reshape(*x_rot.shape[:-1], rd // 2, 2).contiguous())
        rotated = torch.view_as_real(pairs * torch.polar(torch.ones_like(angles), angles))
        rotated = rotated.flatten(-2)
    else:  # Hugging Face's rotate_half
        emb = torch.cat((angles, angles), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        half1, half2 = x_rot[..., : rd // 2], x_rot[..., rd // 2:]
        rotated = x_rot * cos + torch.cat((-half2, half1), dim=-1) * sin
    return torch.cat((rotated, x_pass), dim=-1)


def block(x, p, num_heads, num_kv_heads, head_dim, o, key_padding_mask):
    b, l, _ = x.shape

    def proj(name, heads):
        y = x @ p[name + ".weight"].T
        if o["bias"]:
            y = y + p[name + ".bias"]
        return y.view(b, l, heads, head_dim).transpose(1, 2)

    q, k, v = proj("q_proj", num_heads), proj("k_proj", num_kv_heads), proj("v_proj", num_kv_heads)
    if o["rope"]:
        pos = torch.arange(l)
        q, k = rotate(q, pos, o), rotate(k, pos, o)
    group = num_heads // num_kv_heads
    k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
    i, j = torch.arange(l)[:, None], torch.arange(l)[None, :]
    allowed = torch.ones(l, l, dtype=torch.bool)
    if o["is_causal"]:
        allowed = allowed & (j <= i)
    if o["sliding_window"] > 0:
        allowed = allowed & (i - j < o["sliding_window"])
    allowed = allowed[None, None].expand(b, 1, l, l)
    if key_padding_mask is not None:
        allowed = allowed & ~key_padding_mask[:, None, None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    dead = (~allowed).all(-1, keepdim=True)
    weights = torch.softmax(scores.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0)
    out = (weights @ v).transpose(1, 2).reshape(b, l, num_heads * head_dim)
    out = out @ p["o_proj.weight"].T
    if o["bias"]:
        out = out + p["o_proj.bias"]
    return out


def run_case(name, spec, seed):
    b, l, d, h, hkv, hd, opts = spec
    o = dict(DEFAULTS, **opts)
    gen = torch.Generator().manual_seed(seed)
    dt = torch.float64
    shapes = {"q_proj": (h * hd, d), "k_proj": (hkv * hd, d), "v_proj": (hkv * hd, d),
              "o_proj": (d, h * hd)}
    params = {}
    for n, shape in shapes.items():
        params[n + ".weight"] = (torch.randn(shape, generator=gen, dtype=dt) * 0.3).requires_grad_()
        if o["bias"]:
            params[n + ".bias"] = (torch.randn(shape[0], generator=gen, dtype=dt) * 0.1).requires_grad_()
    x = torch.randn(b, l, d, generator=gen, dtype=dt).requires_grad_()
    kpm = None
    if o["padding"]:
        kpm = torch.zeros(b, l, dtype=torch.bool)
        kpm[1, l - 2:] = True
    out = block(x, params, h, hkv, hd, o, kpm)
    grad_out = torch.randn(out.shape, generator=gen, dtype=dt)
    names = ["x"] + list(params)
    grads = torch.autograd.grad(out, [x] + list(params.values()), grad_out)
    tensors = {"x": x, "output": out, "grad_out": grad_out}
    tensors.update({"params." + n: t for n, t in params.items()})
    tensors.update({"grads." + n: g for n, g in zip(names, grads)})
    if kpm is not None:
        tensors["key_padding_mask"] = kpm
    attrs = {"num_heads": h, "num_kv_heads": hkv, "head_dim": hd}
    attrs.update({k: o[k] for k in DEFAULTS if k != "padding"})
    return Bag(tensors, attrs)


def build():
    return container({n: run_case(n, s, 7000 + i) for i, (n, s) in enumerate(CASES.items())})


if __name__ == "__main__":
    sys.exit(single_file_main(__doc__, "gqa.pt", build, len(CASES)))
