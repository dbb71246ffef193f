#!/usr/bin/python3
"""Reference tensors for torchattn's tests, made by PyTorch itself.

For every attention variant, mask kind and a few shapes, in float64 and float32, this script
draws inputs with fixed seeds, runs the variant written with PyTorch operations (and, where
PyTorch has the same function, checks that against PyTorch's own implementation), and records
the inputs, parameters, outputs, attention weights and the gradients of a fixed random loss
with respect to every input and parameter.

C++ cannot read Python's torch.save files, so the tensors are buffers of a scripted container
module (one submodule per case) that C++ reads with torch::jit::load. The torch version that
made the file is recorded in its `torch_version` attribute.

Usage (Debian's python3-torch lives in /usr/bin/python3):
    /usr/bin/python3 tests/reference/make_reference.py --out tests/reference
    /usr/bin/python3 tests/reference/make_reference.py --check tests/reference

Files: attention.pt (the score functions, formulas written with PyTorch operations) and
multihead_attention.pt (torch.nn.MultiheadAttention itself, over a sweep of its options), made
by PyTorch 1.13 (Debian 12); torch2.pt, made by PyTorch 2.x only (the LibTorch 2.6 chroot of
scripts/chroot.sh): semantics PyTorch 1.13 lacks, nn.MultiheadAttention's is_causal and
F.scaled_dot_product_attention's scale. Under PyTorch 1.x, --out and --check leave it alone.

--check regenerates the cases and fails unless the committed files hold the same cases with
the same inputs and outputs (to a tolerance that allows for another CPU's BLAS kernels).

Mask conventions (those of torchattn, mirroring PyTorch): a boolean attn_mask is True where
attention is allowed (torch.nn.functional.scaled_dot_product_attention); a boolean
key_padding_mask is True at padding keys (torch.nn.MultiheadAttention); float masks are
added; is_causal is top-left aligned. A query row with every key masked has zero weights and
zero output: PyTorch's softmax gives NaN there, torchattn defines it as zero.
"""

import argparse
import math
import os
import sys
import tempfile

import torch
import torch.nn as nn
import torch.nn.functional as F

NEG_INF = float("-inf")


class Bag(nn.Module):
    """A container of tensors (buffers, nested by dotted name) and scalar attributes."""

    def __init__(self, tensors, attrs):
        super().__init__()
        for name, value in attrs.items():
            setattr(self, name, value)
        for name, tensor in tensors.items():
            *path, leaf = name.split(".")
            owner = self
            for part in path:
                if not hasattr(owner, part):
                    owner.add_module(part, nn.Module())
                owner = getattr(owner, part)
            owner.register_buffer(leaf, tensor.detach().clone())


def attend(scores, value, attn_mask, key_padding_mask, is_causal):
    """softmax over masked scores, then the weighted sum; zero for fully masked rows."""
    allowed = torch.ones(scores.shape, dtype=torch.bool)
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            allowed = allowed & attn_mask
        else:
            scores = scores + attn_mask
    if key_padding_mask is not None:
        kpm = key_padding_mask
        if kpm.dim() == 2:
            kpm = kpm.view([kpm.shape[0]] + [1] * (scores.dim() - 2) + [kpm.shape[1]])
        if kpm.dtype == torch.bool:
            allowed = allowed & ~kpm
        else:
            scores = scores + kpm
    if is_causal:
        lq, lk = scores.shape[-2:]
        allowed = allowed & torch.ones(lq, lk, dtype=torch.bool).tril()
    scores = scores.masked_fill(~allowed, NEG_INF)
    dead = torch.isneginf(scores).all(-1, keepdim=True)
    weights = torch.softmax(scores.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0)
    return weights @ value, weights


class Case:
    def __init__(self, name, variant, dtype, q_shape, k_shape, v_shape, **opts):
        self.name, self.variant, self.dtype = name, variant, dtype
        self.q_shape, self.k_shape, self.v_shape = q_shape, k_shape, v_shape
        self.opts = opts


def make_params(case, q, k, gen):
    """Parameters of the variant's module, by the torchattn module's state-dict names."""
    dt = case.dtype
    if case.variant == "cosine":
        heads = case.opts.get("num_heads", 1)
        temps = case.opts.get("temperatures", [10.0] * heads)
        return {"logit_scale": torch.tensor(temps, dtype=dt).log().view(heads, 1, 1)}
    if case.variant == "additive":
        d = case.opts["hidden_dim"]
        eq, ek = q.shape[-1], k.shape[-1]
        p = {
            "query_proj.weight": torch.randn(d, eq, generator=gen, dtype=dt) / math.sqrt(eq),
            "key_proj.weight": torch.randn(d, ek, generator=gen, dtype=dt) / math.sqrt(ek),
            "score_proj.weight": torch.randn(1, d, generator=gen, dtype=dt) / math.sqrt(d),
        }
        if case.opts.get("bias", True):
            p["query_proj.bias"] = torch.randn(d, generator=gen, dtype=dt) * 0.1
            p["key_proj.bias"] = torch.randn(d, generator=gen, dtype=dt) * 0.1
            p["score_proj.bias"] = torch.randn(1, generator=gen, dtype=dt) * 0.1
        return p
    if case.variant == "general":
        return {"weight": torch.randn(q.shape[-1], k.shape[-1], generator=gen, dtype=dt) / math.sqrt(k.shape[-1])}
    return {}


def scores_of(case, q, k, p):
    """The variant's score function, written with PyTorch operations."""
    v = case.variant
    if v == "dot":
        return q @ k.transpose(-2, -1)
    if v == "sdpa":
        scale = case.opts.get("scale", 1.0 / math.sqrt(q.shape[-1]))
        return (q @ k.transpose(-2, -1)) * scale
    if v == "cosine":
        log_tau = p["logit_scale"]
        if "max_temperature" in case.opts:
            log_tau = torch.clamp(log_tau, max=math.log(case.opts["max_temperature"]))
        tau = log_tau.exp()
        if case.opts.get("num_heads", 1) == 1:
            tau = tau.reshape(())
        eps = 1e-12
        return (F.normalize(q, dim=-1, eps=eps) @ F.normalize(k, dim=-1, eps=eps).transpose(-2, -1)) * tau
    if v == "additive":
        qp = F.linear(q, p["query_proj.weight"], p.get("query_proj.bias"))
        kp = F.linear(k, p["key_proj.weight"], p.get("key_proj.bias"))
        energy = torch.tanh(qp.unsqueeze(-2) + kp.unsqueeze(-3))
        return F.linear(energy, p["score_proj.weight"], p.get("score_proj.bias")).squeeze(-1)
    if v == "general":
        return q @ p["weight"] @ k.transpose(-2, -1)
    raise ValueError(v)


def make_masks(case, gen, scores_shape):
    """The case's masks; some rows are fully masked on purpose."""
    lq, lk = scores_shape[-2:]
    kind = case.opts.get("mask", "none")
    attn_mask = key_padding_mask = None
    if kind in ("bool", "bool_causal"):
        attn_mask = torch.rand(lq, lk, generator=gen) > 0.4
        attn_mask[0, :] = False  # a fully masked row
    elif kind == "float":
        shape = [scores_shape[0]] + [1] * (len(scores_shape) - 3) + [lq, lk]
        attn_mask = torch.randn(shape, generator=gen, dtype=case.dtype)
        attn_mask = attn_mask.masked_fill(torch.rand(shape, generator=gen) > 0.7, NEG_INF)
        attn_mask[0, ..., 1, :] = NEG_INF  # a fully masked row
    elif kind == "kpm_bool":
        key_padding_mask = torch.zeros(scores_shape[0], lk, dtype=torch.bool)
        key_padding_mask[0, -2:] = True
        key_padding_mask[-1, :] = True  # a fully padded sequence
    elif kind == "kpm_float_causal":
        key_padding_mask = torch.zeros(scores_shape[0], lk, dtype=case.dtype)
        key_padding_mask[0, -1] = NEG_INF
        key_padding_mask[-1, 1:3] = torch.randn(2, generator=gen, dtype=case.dtype)
    elif kind == "kpm_1d":
        key_padding_mask = torch.zeros(lk, dtype=torch.bool)
        key_padding_mask[-1] = True
    elif kind == "bool_broadcast":
        # [B, 1, Lq, Lk] over heads
        attn_mask = torch.rand(scores_shape[0], 1, lq, lk, generator=gen) > 0.3
    elif kind != "none":
        raise ValueError(kind)
    return attn_mask, key_padding_mask


def pytorch_oracle(case, q, k, v, attn_mask, kpm, out, weights):
    """Where PyTorch has the same function, check the formula above against it."""
    if case.variant != "sdpa" or kpm is not None or "scale" in case.opts:
        return
    if attn_mask is not None and attn_mask.dtype != torch.bool:
        return
    if bool((weights.sum(-1) == 0).any()):
        return  # PyTorch gives NaN for fully masked rows; torchattn defines them as zero
    is_causal = case.opts.get("is_causal", False)
    tol = 1e-12 if case.dtype == torch.float64 else 1e-5
    if hasattr(F, "_scaled_dot_product_attention"):
        # PyTorch 1.13: private, returns the weights too.
        o, w = F._scaled_dot_product_attention(q, k, v, attn_mask, 0.0, True, is_causal)
        assert torch.allclose(w, weights, rtol=tol, atol=tol), case.name
    else:
        # PyTorch 2.x: public, output only; refuses attn_mask with is_causal, so fold them.
        if is_causal and attn_mask is not None:
            lq, lk = attn_mask.shape[-2:]
            attn_mask = attn_mask & torch.ones(lq, lk, dtype=torch.bool).tril()
            is_causal = False
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
    assert torch.allclose(o, out, rtol=tol, atol=tol), case.name


def with_masks(name, tensors, attn_mask, kpm):
    """Checks that a case's computed tensors are finite, then adds its masks (which hold -inf)."""
    for n, t in tensors.items():
        assert torch.isfinite(t).all(), f"{name}: {n} is not finite"
    if attn_mask is not None:
        tensors["attn_mask"] = attn_mask
    if kpm is not None:
        tensors["key_padding_mask"] = kpm


def run_case(case, seed):
    gen = torch.Generator().manual_seed(seed)
    dt = case.dtype
    q = torch.randn(case.q_shape, generator=gen, dtype=dt)
    k = torch.randn(case.k_shape, generator=gen, dtype=dt)
    v = torch.randn(case.v_shape, generator=gen, dtype=dt)
    if case.opts.get("zero_vectors"):
        q[..., 1, :] = 0.0
        k[..., 2, :] = 0.0
    params = make_params(case, q, k, gen)
    lead = torch.broadcast_shapes(q.shape[:-2], k.shape[:-2])
    scores_shape = list(lead) + [q.shape[-2], k.shape[-2]]
    attn_mask, kpm = make_masks(case, gen, scores_shape)
    is_causal = case.opts.get("is_causal", False)

    # A fixed temperature is a buffer, not a parameter: it gets no gradient.
    trained = {n: t for n, t in params.items() if case.variant != "cosine" or case.opts.get("learnable", True)}
    leaves = {"query": q, "key": k, "value": v, **trained}
    for t in leaves.values():
        t.requires_grad_(True)
    out, weights = attend(scores_of(case, q, k, params), v, attn_mask, kpm, is_causal)
    grad_output = torch.randn(out.shape, generator=gen, dtype=dt)
    grad_weights = torch.randn(weights.shape, generator=gen, dtype=dt)
    loss = (out * grad_output).sum() + (weights * grad_weights).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    with torch.no_grad():
        pytorch_oracle(case, q, k, v, attn_mask, kpm, out, weights)

    tensors = {"query": q, "key": k, "value": v, "output": out, "weights": weights,
               "grad_output": grad_output, "grad_weights": grad_weights}
    for name, t in params.items():
        tensors["params." + name] = t
    for name, g in zip(leaves, grads):
        tensors["grads." + name] = g
    with_masks(case.name, tensors, attn_mask, kpm)
    attrs = {
        "variant": case.variant,
        "is_causal": is_causal,
        "scale": float(case.opts.get("scale", -1.0)),
        "num_heads": int(case.opts.get("num_heads", 1)),
        "learnable": bool(case.opts.get("learnable", True)),
        "max_temperature": float(case.opts.get("max_temperature", -1.0)),
        "hidden_dim": int(case.opts.get("hidden_dim", 0)),
        "bias": bool(case.opts.get("bias", True)),
    }
    return Bag(tensors, attrs)


def cases():
    out = []
    for dt, dname in ((torch.float64, "f64"), (torch.float32, "f32")):
        B, H, Lq, Lk, E, Ev = 2, 3, 4, 6, 8, 5
        mask_kinds = [
            ("plain", {}),
            ("bool_mask", {"mask": "bool"}),
            ("float_mask", {"mask": "float"}),
            ("kpm_bool", {"mask": "kpm_bool"}),
            ("causal_kpm_float", {"mask": "kpm_float_causal", "is_causal": True}),
            ("bool_mask_causal", {"mask": "bool_causal", "is_causal": True}),
            ("bool_broadcast", {"mask": "bool_broadcast"}),
        ]
        variants = {
            "dot": ({}, E),
            "sdpa": ({}, E),
            "cosine": ({"num_heads": H, "temperatures": [5.0, 10.0, 150.0], "max_temperature": 100.0}, E),
            "additive": ({"hidden_dim": 10}, E - 1),
            "general": ({}, E - 1),
        }
        for variant, (vopts, ek) in variants.items():
            for mname, mopts in mask_kinds:
                out.append(Case(f"{variant}_{mname}_{dname}", variant, dt,
                                [B, H, Lq, E], [B, H, Lk, ek], [B, H, Lk, Ev], **vopts, **mopts))
            # [B, L, E] inputs, causal with Lq != Lk and a key broadcast over the batch
            vopts3 = {k: v for k, v in vopts.items() if k not in ("num_heads", "temperatures")}
            out.append(Case(f"{variant}_3d_causal_{dname}", variant, dt,
                            [B, Lk, E], [1, Lq, ek], [B, Lq, Ev], is_causal=True, **vopts3))
            # unbatched [L, E] with a 1-D key padding mask
            out.append(Case(f"{variant}_2d_kpm_{dname}", variant, dt,
                            [Lq, E], [Lk, ek], [Lk, Ev], mask="kpm_1d", **vopts3))
        out.append(Case(f"sdpa_scale_{dname}", "sdpa", dt, [B, H, Lq, E], [B, H, Lk, E], [B, H, Lk, Ev],
                        scale=0.3, mask="bool"))
        out.append(Case(f"cosine_zero_vectors_{dname}", "cosine", dt, [B, H, Lq, E], [B, H, Lk, E],
                        [B, H, Lk, Ev], num_heads=H, temperatures=[2.0, 4.0, 8.0], zero_vectors=True))
        out.append(Case(f"cosine_shared_fixed_{dname}", "cosine", dt, [B, H, Lq, E], [B, H, Lk, E],
                        [B, H, Lk, Ev], temperatures=[10.0], learnable=False, mask="float"))
        out.append(Case(f"additive_nobias_{dname}", "additive", dt, [B, Lq, E], [B, Lk, E - 2],
                        [B, Lk, Ev], hidden_dim=6, bias=False, mask="kpm_bool"))
    return out


def mha_cases():
    """A sweep over torch.nn.MultiheadAttention's options and masks (no fully masked rows:
    PyTorch gives NaN there, and torchattn's zeros are tested on their own)."""
    gen = torch.Generator().manual_seed(7)
    dims = [(8, 2, 8, 8), (12, 3, 12, 12), (8, 1, 8, 8), (8, 2, 6, 10)]  # E, H, kdim, vdim
    masks = ["none", "bool2d", "float2d", "bool3d", "float3d", "kpm_bool", "kpm_float",
             "bool2d+kpm_bool", "float3d+kpm_bool"]
    out = []
    for dt, dname in ((torch.float64, "f64"), (torch.float32, "f32")):
        i = 0
        for e, h, kdim, vdim in dims:
            for mask in masks:
                pick = lambda n: int(torch.randint(n, (1,), generator=gen))
                opts = {
                    "embed_dim": e, "num_heads": h, "kdim": kdim, "vdim": vdim,
                    "batch_first": bool(pick(2)), "bias": pick(4) != 0,
                    "add_bias_kv": pick(3) == 0, "add_zero_attn": pick(3) == 0,
                    "unbatched": pick(4) == 0, "need_weights": pick(4) != 0,
                    "average": pick(2) == 0, "mask": mask,
                    "self_attention": kdim == e and vdim == e and pick(2) == 0,
                }
                if opts["unbatched"] and mask.startswith(("bool3d", "float3d")):
                    opts["unbatched"] = False
                out.append((f"mha{i:03d}_{mask.replace('+', '_')}_{dname}", dt, opts))
                i += 1
    return out


def run_mha_case(name, dt, o, seed):
    gen = torch.Generator().manual_seed(seed)
    e, h, kdim, vdim = o["embed_dim"], o["num_heads"], o["kdim"], o["vdim"]
    mha = nn.MultiheadAttention(e, h, bias=o["bias"], add_bias_kv=o["add_bias_kv"],
                                add_zero_attn=o["add_zero_attn"], kdim=kdim, vdim=vdim,
                                batch_first=o["batch_first"]).to(dt)
    with torch.no_grad():  # random parameters, biases included (PyTorch zeroes them)
        for p in mha.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dt) * 0.3)
    B, L, S = 2, 4, 5
    if o["self_attention"]:
        S = L
    def seq(n, d):
        if o["unbatched"]:
            return torch.randn(n, d, generator=gen, dtype=dt)
        shape = (B, n, d) if o["batch_first"] else (n, B, d)
        return torch.randn(shape, generator=gen, dtype=dt)
    q = seq(L, e)
    if o["self_attention"]:
        k = v = q
    else:
        k, v = seq(S, kdim), seq(S, vdim)
    attn_mask = kpm = None
    kinds = [k for k in o["mask"].split("+") if k != "none"]
    for kind in kinds:
        if kind in ("bool2d", "bool3d"):
            shape = (L, S) if kind == "bool2d" else (B * h, L, S)
            attn_mask = torch.rand(shape, generator=gen) > 0.6  # true = masked
            attn_mask[..., 0] = False
        elif kind in ("float2d", "float3d"):
            shape = (L, S) if kind == "float2d" else (B * h, L, S)
            attn_mask = torch.randn(shape, generator=gen, dtype=dt)
            attn_mask = attn_mask.masked_fill(torch.rand(shape, generator=gen) > 0.7, NEG_INF)
            attn_mask[..., 0] = 0.0
        elif kind == "kpm_bool":
            kpm = torch.zeros((S,) if o["unbatched"] else (B, S), dtype=torch.bool)
            kpm[..., -1] = True
            if not o["unbatched"]:
                kpm[0, -2] = True
        elif kind == "kpm_float":
            kpm = torch.randn((S,) if o["unbatched"] else (B, S), generator=gen, dtype=dt)
            kpm[..., -1] = NEG_INF
    leaves = {"query": q} if o["self_attention"] else {"query": q, "key": k, "value": v}
    for t in leaves.values():
        t.requires_grad_(True)
    if o["self_attention"]:
        k = v = q
    if o.get("is_causal", False):
        # PyTorch 2.x: is_causal is a hint that needs the causal mask itself; torchattn's
        # is_causal applies it, so the mask is not stored.
        causal = torch.ones(L, S, dtype=torch.bool).triu(1)
        out, weights = mha(q, k, v, key_padding_mask=kpm, need_weights=o["need_weights"],
                           attn_mask=causal, average_attn_weights=o["average"], is_causal=True)
    else:
        out, weights = mha(q, k, v, key_padding_mask=kpm, need_weights=o["need_weights"],
                           attn_mask=attn_mask, average_attn_weights=o["average"])
    grad_output = torch.randn(out.shape, generator=gen, dtype=dt)
    loss = (out * grad_output).sum()
    tensors = {"query": q, "output": out, "grad_output": grad_output}
    if not o["self_attention"]:
        tensors.update(key=k, value=v)
    if weights is not None:
        grad_weights = torch.randn(weights.shape, generator=gen, dtype=dt)
        loss = loss + (weights * grad_weights).sum()
        tensors.update(weights=weights, grad_weights=grad_weights)
    params = dict(mha.named_parameters())
    grads = torch.autograd.grad(loss, list(leaves.values()) + list(params.values()))
    for n, g in zip(list(leaves) + ["params." + p for p in params], grads):
        tensors["grads." + n] = g
    for n, p in params.items():
        tensors["params." + n] = p
    with_masks(name, tensors, attn_mask, kpm)
    return Bag(tensors, dict(o))


def mha_causal_cases():
    """nn.MultiheadAttention(..., is_causal=True), PyTorch 2.x only."""
    gen = torch.Generator().manual_seed(11)
    out = []
    for dt, dname in ((torch.float64, "f64"), (torch.float32, "f32")):
        for i, (mask, need_weights, self_attention) in enumerate(
                [("none", False, True), ("none", True, True), ("kpm_bool", False, True),
                 ("kpm_bool", True, False), ("none", False, False)]):
            pick = lambda n: int(torch.randint(n, (1,), generator=gen))
            opts = {"embed_dim": 8, "num_heads": 2, "kdim": 8, "vdim": 8,
                    "batch_first": bool(pick(2)), "bias": True, "add_bias_kv": False,
                    "add_zero_attn": False, "unbatched": False, "need_weights": need_weights,
                    "average": True, "mask": mask, "self_attention": self_attention,
                    "is_causal": True}
            out.append((f"mha_causal{i}_{mask}_{dname}", dt, opts))
    return out


def run_sdpa2_case(name, dt, o, seed):
    """F.scaled_dot_product_attention with PyTorch 2.x's scale argument (and is_causal)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 3, o["lq"], 8, generator=gen, dtype=dt, requires_grad=True)
    k = torch.randn(2, 3, o["lk"], 8, generator=gen, dtype=dt, requires_grad=True)
    v = torch.randn(2, 3, o["lk"], 6, generator=gen, dtype=dt, requires_grad=True)
    attn_mask = None
    if o["mask"] == "bool":
        attn_mask = torch.rand(o["lq"], o["lk"], generator=gen) > 0.3  # true = may attend
        attn_mask[:, 0] = True
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=o["is_causal"],
                                         scale=o["scale"])
    grad_output = torch.randn(out.shape, generator=gen, dtype=dt)
    grads = torch.autograd.grad((out * grad_output).sum(), (q, k, v))
    tensors = {"query": q, "key": k, "value": v, "output": out, "grad_output": grad_output,
               "grads.query": grads[0], "grads.key": grads[1], "grads.value": grads[2]}
    with_masks(name, tensors, attn_mask, None)
    return Bag(tensors, dict(o))


def sdpa2_cases():
    out = []
    for dt, dname in ((torch.float64, "f64"), (torch.float32, "f32")):
        for i, (lq, lk, mask, is_causal, scale) in enumerate(
                [(5, 7, "none", False, 0.7), (5, 7, "bool", False, 0.2), (6, 4, "none", True, 1.3),
                 (7, 7, "none", True, 0.05)]):
            out.append((f"sdpa2_{i}_{mask}_{dname}", dt,
                        {"lq": lq, "lk": lk, "mask": mask, "is_causal": is_causal, "scale": scale}))
    return out


def container(bags):
    root = nn.Module()
    for name, bag in bags.items():
        root.add_module(name, bag)
    root.torch_version = torch.__version__
    root.case_names = "\n".join(bags)
    return torch.jit.script(root)


def build():
    """The reference files by name: attention.pt (score functions), multihead_attention.pt."""
    attention = {c.name: run_case(c, seed=1000 + i) for i, c in enumerate(cases())}
    mha = {n: run_mha_case(n, dt, o, seed=5000 + i) for i, (n, dt, o) in enumerate(mha_cases())}
    files = {"attention.pt": container(attention), "multihead_attention.pt": container(mha)}
    if TORCH2:
        torch2 = {n: run_mha_case(n, dt, o, seed=7000 + i)
                  for i, (n, dt, o) in enumerate(mha_causal_cases())}
        torch2.update({n: run_sdpa2_case(n, dt, o, seed=8000 + i)
                       for i, (n, dt, o) in enumerate(sdpa2_cases())})
        files["torch2.pt"] = container(torch2)
    return files


# torch2.pt needs PyTorch 2.x; attention.pt and multihead_attention.pt come from 1.13.
TORCH2 = int(torch.__version__.split(".")[0]) >= 2


ATTRS = ("variant", "is_causal", "scale", "num_heads", "learnable", "max_temperature", "hidden_dim",
         "bias", "embed_dim", "kdim", "vdim", "batch_first", "add_bias_kv", "add_zero_attn",
         "unbatched", "need_weights", "average", "mask", "self_attention", "lq", "lk")


def compare(committed, fresh, float32_tol=1e-6, float64_tol=1e-12):
    """Differences between two reference files: case lists, attributes and tensors."""
    problems = []
    c_names, f_names = committed.case_names.split("\n"), fresh.case_names.split("\n")
    if c_names != f_names:
        problems.append(f"case lists differ: committed {len(c_names)}, script makes {len(f_names)}")
        return problems
    for name in f_names:
        c, f = getattr(committed, name), getattr(fresh, name)
        for attr in ATTRS:
            if hasattr(f, attr) and getattr(c, attr) != getattr(f, attr):
                problems.append(f"{name}.{attr}: {getattr(c, attr)} != {getattr(f, attr)}")
        cb, fb = dict(c.named_buffers()), dict(f.named_buffers())
        if sorted(cb) != sorted(fb):
            problems.append(f"{name}: tensors {sorted(cb)} != {sorted(fb)}")
            continue
        for t in fb:
            a, b = cb[t], fb[t]
            tol = float64_tol if b.dtype == torch.float64 else float32_tol
            same = a.shape == b.shape and a.dtype == b.dtype and (
                torch.equal(a, b) if not b.is_floating_point()
                else torch.allclose(a, b, rtol=tol, atol=tol, equal_nan=True))
            if not same:
                problems.append(f"{name}.{t} differs")
    return problems


def single_file_main(doc, file_name, build_file, count):
    """main() of a script that writes one reference file: --out DIR writes it, --check DIR
    fails unless the committed file is what build_file() makes now."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", help=f"write {file_name} into this directory")
    group.add_argument("--check", help=f"fail unless {file_name} in this directory is what the script makes")
    args = parser.parse_args()
    module = build_file()
    if args.out:
        module.save(os.path.join(args.out, file_name))
        print(f"wrote {file_name}: {count} cases, torch {torch.__version__}")
        return 0
    path = os.path.join(args.check, file_name)
    committed = torch.jit.load(path)
    with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
        module.save(tmp.name)
        fresh = torch.jit.load(tmp.name)
    problems = compare(committed, fresh)
    for p in problems[:50]:
        print("  " + p)
    print(f"{path}: {'stale' if problems else 'matches'} ({count} cases, torch {torch.__version__})")
    return 1 if problems else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--out", help="write the reference files into this directory")
    group.add_argument("--check", help="fail unless the files in this directory are what the script makes")
    args = parser.parse_args()
    torch.manual_seed(0)
    modules = build()
    if args.out:
        for file, module in modules.items():
            if TORCH2 and file != "torch2.pt":
                continue  # made by PyTorch 1.13; under 2.x only checked
            module.save(os.path.join(args.out, file))
            print(f"wrote {file}: {len(module.case_names.splitlines())} cases, torch {torch.__version__}")
        return 0
    status = 0
    if not TORCH2:
        print(f"torch2.pt: made by PyTorch 2.x, checked only there (this is {torch.__version__})")
    for file, module in modules.items():
        path = os.path.join(args.check, file)
        committed = torch.jit.load(path)
        with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
            module.save(tmp.name)
            fresh = torch.jit.load(tmp.name)
        same_major = committed.torch_version.split(".")[0] == torch.__version__.split(".")[0]
        if same_major:
            problems = compare(committed, fresh)
        else:
            # Another PyTorch generation (the LibTorch 2.6 chroot): its ATen rounds differently,
            # so the references must agree within the tests' own tolerances.
            problems = compare(committed, fresh, float32_tol=1e-5, float64_tol=1e-10)
        if problems:
            print(f"{path} is stale (made by torch {committed.torch_version}; this is {torch.__version__}):")
            for p in problems[:50]:
                print("  " + p)
            print("regenerate with: /usr/bin/python3 tests/reference/make_reference.py --out tests/reference")
            status = 1
        else:
            print(f"{path}: {len(fresh.case_names.splitlines())} cases match (made by torch "
                  f"{committed.torch_version}, checked with {torch.__version__}"
                  f"{'' if same_major else ' within 1e-5 float32, 1e-10 float64'})")
    return status


if __name__ == "__main__":
    sys.exit(main())
