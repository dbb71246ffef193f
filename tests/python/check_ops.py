"""torchattn's dispatcher ops from Python: torch.ops.load_library, eager calls with autograd
(scaled_dot_product_attention and additive_attention_scores),
and the op inside a scripted function saved and loaded with torch.jit.

    /usr/bin/python3 check_ops.py path/to/libtorchattn.so

Exits non-zero on the first mismatch. Run by CTest when Python with torch is present.
"""
import io
import math
import sys

import torch


def math_attention(q, k, v, mask=None, is_causal=False, scale=None):
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q * scale) @ k.transpose(-2, -1)
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    if is_causal:
        lq, lk = s.shape[-2:]
        s = s.masked_fill(~torch.ones(lq, lk, dtype=torch.bool).tril(), float("-inf"))
    dead = (s == float("-inf")).all(-1, keepdim=True)
    return torch.softmax(s.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0) @ v


def check(name, got, want, tol):
    err = (got - want).abs().max().item() if got.numel() else 0.0
    print(f"{name}: max |diff| {err:.3g}")
    if not err <= tol:
        sys.exit(f"{name}: max |diff| {err} exceeds {tol}")


def math_flex(q, k, v, slopes, bias, window_left, softcap):
    """flex_attention's formula, top-left causal, for query [B, H, L, E] and GQA key/value."""
    h, hkv, lq, lk = q.shape[1], k.shape[1], q.shape[2], k.shape[2]
    k, v = k.repeat_interleave(h // hkv, 1), v.repeat_interleave(h // hkv, 1)
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    s = softcap * torch.tanh(s / softcap)
    i, j = torch.arange(lq).view(-1, 1), torch.arange(lk).view(1, -1)
    s = s + slopes.view(1, -1, 1, 1) * (j - i) + bias
    allowed = (j <= i) & (j >= i - window_left)
    return torch.softmax(s.masked_fill(~allowed, float("-inf")), -1) @ v


def check_flex():
    """flex_attention with keyword modifiers, its gradients (query, key, value, bias, slopes),
    and inside a scripted function."""
    flex = torch.ops.torchattn.flex_attention
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        q = torch.randn(2, 4, 150, 16, dtype=dtype, requires_grad=True)
        k = torch.randn(2, 2, 150, 16, dtype=dtype, requires_grad=True)
        v = torch.randn(2, 2, 150, 8, dtype=dtype, requires_grad=True)
        slopes = torch.rand(4, dtype=dtype, requires_grad=True)
        bias = torch.randn(1, 4, 150, 150, dtype=dtype, requires_grad=True)
        out, lse = flex(q, k, v, bias=bias, causal="top_left", window_left=40, softcap=5.0,
                        alibi_slopes=slopes, enable_gqa=True)
        want = math_flex(q, k, v, slopes, bias, 40, 5.0)
        check(f"{dtype} flex_attention output", out, want, tol)
        grad = torch.randn_like(out)
        wrt = (q, k, v, bias, slopes)
        for n, a, b in zip(("q", "k", "v", "bias", "slopes"), torch.autograd.grad(out, wrt, grad),
                           torch.autograd.grad(want, wrt, grad)):
            check(f"{dtype} flex_attention grad_{n}", a, b, tol * 100 * (1 + b.abs().max().item()))

    @torch.jit.script
    def local(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchattn.flex_attention(q, k, v, causal="top_left", window_left=3)[0]

    buffer = io.BytesIO()
    torch.jit.save(local, buffer)
    buffer.seek(0)
    q = torch.randn(1, 2, 9, 8)
    zero = torch.zeros(2)
    check("flex_attention scripted, saved and loaded", torch.jit.load(buffer)(q, q, q),
          math_flex(q, q, q, zero, 0.0, 3, 1e9), 1e-5)


def check_decode():
    """decode_attention with per-row cache lengths and GQA, without gradients (the decoding
    kernel) and with them (the tiled route), from Python and scripted."""
    dec = torch.ops.torchattn.decode_attention
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        q = torch.randn(2, 4, 1, 16, dtype=dtype)
        k, v = torch.randn(2, 2, 300, 16, dtype=dtype), torch.randn(2, 2, 300, 16, dtype=dtype)
        lengths = torch.tensor([300, 120])
        keep = torch.arange(300)[None, None, None, :] < lengths.view(2, 1, 1, 1)
        want = math_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1), mask=keep)
        with torch.no_grad():
            out, lse = dec(q, k, v, kv_lengths=lengths)
        check(f"{dtype} decode_attention output", out, want, tol)
        qg = q.clone().requires_grad_()
        out_g, _ = dec(qg, k, v, kv_lengths=lengths)
        check(f"{dtype} decode_attention with grad", out_g.detach(), want, tol)
        torch.autograd.grad(out_g.sum(), qg)

    @torch.jit.script
    def step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchattn.decode_attention(q, k, v, kv_lengths=n, window_left=15)[0]

    q, k = torch.randn(1, 2, 1, 8), torch.randn(1, 2, 40, 8)
    keep = (torch.arange(40) < 30) & (torch.arange(40) >= 29 - 15)
    check("decode_attention scripted", step(q, k, k, torch.tensor([30])),
          math_attention(q, k, k, mask=keep.view(1, 1, 1, 40)), 1e-5)


def check_low_precision():
    """bf16 and fp16 from Python and scripted, on every build the CPU runs (kernel_capability),
    by FlashAttention's rule: the op's error against float64 math at most 2x that of PyTorch's
    math in the dtype (fp16 on LibTorch 1.x: float32 ops, each result rounded to fp16), plus
    the rounding allowance 2 |(r + 0.3) - 0.3 - r|."""
    op = torch.ops.torchattn.scaled_dot_product_attention
    caps = ["amx", "avx512_bf16", "avx512", "avx2", "default"]
    best = torch.ops.torchattn.kernel_capability()
    caps = caps[caps.index(best):]

    def rounded_math(q, k, v, dtype):
        def r(t):
            return t.to(dtype).float()
        s = r(r(q * 0.125) @ k.transpose(-2, -1))
        return r(r(s.softmax(-1)) @ v)

    for dtype in (torch.bfloat16, torch.float16):
        q, k, v = (torch.randn(2, 3, 50, 40).to(dtype) for _ in range(3))
        ref = math_attention(q.double(), k.double(), v.double(), scale=0.125)
        low = rounded_math(q.float(), k.float(), v.float(), dtype).double()
        allowance = 2 * ((ref.to(dtype) + 0.3) - 0.3 - ref.to(dtype)).abs().max().item()
        err_math = (low - ref).abs().max().item()
        for cap in caps:
            previous = torch.ops.torchattn.set_kernel_capability(cap)
            out = op(q, k, v, None, 0.0, False, scale=0.125)
            torch.ops.torchattn.set_kernel_capability(previous)
            if out.dtype != dtype:
                sys.exit(f"{dtype} {cap}: output is {out.dtype}")
            err = (out.double() - ref).abs().max().item()
            if not err <= 2 * err_math + allowance:
                sys.exit(f"{dtype} {cap}: error {err:.3g} > 2 x {err_math:.3g} + {allowance:.3g}")
            print(f"{dtype} {cap}: error {err:.3g}, math {err_math:.3g}: ok")

    @torch.jit.script
    def scripted(q: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchattn.scaled_dot_product_attention(q, q, q, None, 0.0, True, None)

    q = torch.randn(1, 2, 20, 16).to(torch.bfloat16)
    if scripted(q).dtype != torch.bfloat16:
        sys.exit("scripted bf16 attention changed the dtype")
    print("bf16 scripted: ok")


def check_autocast():
    """Under torch.autocast("cpu") the ops run in bfloat16 on float32 inputs, as PyTorch's own
    scaled_dot_product_attention does: the result equals the op on the bf16-cast inputs."""
    q, k, v = (torch.randn(2, 3, 19, 16) for _ in range(3))
    mask = torch.randn(19, 19)
    sdpa = torch.ops.torchattn.scaled_dot_product_attention
    flex = torch.ops.torchattn.flex_attention
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sdpa(q, k, v, mask, 0.0, False, None)
        flex_out, lse = flex(q, k, v, attn_mask=mask, causal="top_left")
    bf = [t.bfloat16() for t in (q, k, v, mask)]
    for name, got, want in [
            ("sdpa", out, sdpa(*bf, 0.0, False, None)),
            ("flex_attention", flex_out, flex(*bf[:3], attn_mask=bf[3], causal="top_left")[0])]:
        if got.dtype != torch.bfloat16 or not torch.equal(got, want):
            sys.exit(f"autocast {name}: {got.dtype}, not the op on bf16 inputs")
    if lse.dtype != torch.float32:
        sys.exit(f"autocast flex_attention: lse is {lse.dtype}, expected float32")
    print("autocast bf16: ok")


def check_graph():
    """graph_attention ("dot" and "additive", with an edge_scale) against the composite that
    PyTorch Geometric runs, with gradients, and scripted."""
    op = torch.ops.torchattn.graph_attention
    n, e, h, d, c = 20, 90, 3, 5, 7
    src, dst = torch.randint(0, n, (e,)), torch.randint(0, n - 2, (e,))
    order = torch.sort(dst, stable=True).indices
    src, dst = src[order], dst[order]
    row_ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(dst, minlength=n).cumsum(0)])
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        for score in ("dot", "additive"):
            q, k = torch.randn(n, h, d, dtype=dtype), torch.randn(n, h, d, dtype=dtype)
            v, w = torch.randn(n, h, c, dtype=dtype), torch.randn(h, d, dtype=dtype)
            es = torch.rand(e, h, dtype=dtype)
            leaves = [t.requires_grad_() for t in (q, k, v, w, es)]
            if score == "dot":
                s = (q[dst] * k[src]).sum(-1) * 0.5
            else:
                s = (torch.nn.functional.leaky_relu(q[dst] + k[src], 0.2) * w).sum(-1) * 0.5
            m = torch.full((n, h), float("-inf"), dtype=dtype).scatter_reduce(
                0, dst[:, None].expand(-1, h), s.detach(), "amax")
            p = torch.exp(s - m[dst])
            a = p / torch.zeros(n, h, dtype=dtype).index_add(0, dst, p)[dst]
            want = torch.zeros(n, h, c, dtype=dtype).index_add(0, dst, (a * es)[..., None] * v[src])
            out, lse, weights = op(q, k, v, row_ptr, src, score=score,
                                   score_weight=w if score == "additive" else None, scale=0.5,
                                   edge_scale=es, need_weights=True)
            check(f"{dtype} graph_attention {score}", out, want, tol)
            check(f"{dtype} graph_attention {score} weights", weights, a * es, tol)
            grad = torch.randn_like(out)
            used = leaves if score == "additive" else [q, k, v, es]
            for i, (x, y) in enumerate(zip(torch.autograd.grad(out, used, grad),
                                           torch.autograd.grad(want, used, grad))):
                check(f"{dtype} graph_attention {score} grad {i}", x, y, tol * 10)

    @torch.jit.script
    def gat(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, row_ptr: torch.Tensor,
            col: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchattn.graph_attention(q, k, v, row_ptr, col)[0]

    # A learnable table looked up per pair (Graphormer), deterministic gradient.
    table = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    index = torch.randint(0, 6, (2, 7, 9))
    bias = torch.ops.torchattn.table_bias(table, index)
    check("table_bias", bias, table[:, index].permute(1, 0, 2, 3), 0)
    grad = torch.randn_like(bias)
    want = torch.stack([torch.bincount(index.flatten(), grad[:, h].flatten(), 6) for h in range(4)])
    check("table_bias grad", torch.autograd.grad(bias, table, grad)[0], want, 1e-12)

    q = torch.randn(n, h, d)
    check("graph_attention scripted", gat(q, q, q, row_ptr, src), op(q, q, q, row_ptr, src)[0], 0)


def main():
    torch.ops.load_library(sys.argv[1])
    torch.manual_seed(0)
    op = torch.ops.torchattn.scaled_dot_product_attention
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        q = torch.randn(2, 3, 37, 16, dtype=dtype, requires_grad=True)
        k = torch.randn(2, 3, 300, 16, dtype=dtype, requires_grad=True)
        v = torch.randn(2, 3, 300, 24, dtype=dtype, requires_grad=True)
        mask = torch.rand(37, 300) > 0.3
        for is_causal in (False, True):
            out = op(q, k, v, mask, 0.0, is_causal, scale=0.3)
            want = math_attention(q, k, v, mask, is_causal, 0.3)
            check(f"{dtype} causal={is_causal} output", out, want, tol)
            grad = torch.randn_like(out)
            for n, a, b in zip("qkv", torch.autograd.grad(out, (q, k, v), grad),
                               torch.autograd.grad(want, (q, k, v), grad)):
                check(f"{dtype} causal={is_causal} grad_{n}", a, b, tol * 10)

    # Every finite mask value is a score: Hugging Face's finfo(dtype).min padding on a whole
    # row (the uniform average) and on some keys, with gradients, against float64 math.
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        q64, k64, v64 = (torch.randn(1, 2, 40, 8, dtype=torch.float64) for _ in range(3))
        mask = torch.zeros(40, 40, dtype=torch.float64)
        mask[3] = torch.finfo(dtype).min
        mask[:, 5] = torch.finfo(dtype).min
        q, k, v = (t.to(dtype).requires_grad_() for t in (q64, k64, v64))
        out = op(q, k, v, mask.to(dtype), 0.0, False)
        qe, ke, ve = (t.to(dtype).double().requires_grad_() for t in (q64, k64, v64))
        want = math_attention(qe, ke, ve, mask.to(dtype).double())
        check(f"{dtype} finfo.min mask output", out.double(), want, tol * 3)
        grad = torch.randn_like(out)
        for n, a, b in zip("qkv", torch.autograd.grad(out, (q, k, v), grad),
                           torch.autograd.grad(want, (qe, ke, ve), grad.double())):
            check(f"{dtype} finfo.min mask grad_{n}", a.double(), b, tol * 10)
    # The internal backward refuses statistics the forward cannot make.
    q, k, v = (torch.randn(1, 2, 5, 8) for _ in range(3))
    out, row_max, row_log_sum = torch.ops.torchattn._scaled_dot_product_attention_forward(
        q, k, v, None, False, 0.35)
    try:
        torch.ops.torchattn._scaled_dot_product_attention_backward(
            torch.ones_like(out), q, k, v, None, out, row_max,
            torch.full_like(row_log_sum, float("-inf")), False, 0.35)
        sys.exit("the backward op accepted a -inf row_log_sum")
    except RuntimeError as e:
        if "are not softmax statistics of the forward op" not in str(e):
            raise
    print("statistics refused: ok")

    additive = torch.ops.torchattn.additive_attention_scores
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-10)):
        q = torch.randn(4, 7, 32, dtype=dtype, requires_grad=True)
        k = torch.randn(4, 11, 32, dtype=dtype, requires_grad=True)
        w = torch.randn(32, dtype=dtype, requires_grad=True)
        got = additive(q, k, w)
        want = torch.tanh(q.unsqueeze(2) + k.unsqueeze(1)) @ w
        check(f"{dtype} additive scores", got, want, tol)
        grad = torch.randn_like(got)
        for n, a, b in zip("qkw", torch.autograd.grad(got, (q, k, w), grad),
                           torch.autograd.grad(want, (q, k, w), grad)):
            check(f"{dtype} additive grad_{n}", a, b, tol * 10)

    check_flex()
    check_decode()
    check_low_precision()
    check_autocast()
    check_graph()

    @torch.jit.script
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return torch.ops.torchattn.scaled_dot_product_attention(q, k, v, None, 0.0, True)

    buffer = io.BytesIO()
    torch.jit.save(attend, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    q = torch.randn(1, 2, 9, 8)
    check("scripted, saved and loaded", loaded(q, q, q), math_attention(q, q, q, is_causal=True), 1e-5)
    print("ok")


if __name__ == "__main__":
    main()
