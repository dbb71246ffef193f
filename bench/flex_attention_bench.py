"""torchattn's flex_attention against PyTorch 2.6 on the same shapes, in one process (float32,
B=1, E=64, 2 threads unless OMP_NUM_THREADS says): PyTorch's flex_attention compiled for the
CPU (forward; torch.compile), its flex_attention in eager mode (forward+backward, N <= 4096:
eager materialises the scores) and its scaled_dot_product_attention with the equivalent dense
mask (forward, and forward+backward), against torchattn's op (forward, forward+backward).
Where PyTorch's compiled CPU kernel fails to build, the row says "fails" and the first error
line is printed.

    scripts/chroot.sh run python3 bench/flex_attention_bench.py build-trixie/libtorchattn.so

Prints one row per case with the times and the ratios (PyTorch's time / torchattn's: above 1,
torchattn is faster). Each time is the best of 2 runs after a warm-up (which also compiles).
"""
import math
import sys
import time

import torch
import torch.nn.functional as F


def best_of(fn, runs=2):
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def cases():
    """name, N, H, H_kv, torchattn kwargs, score_mod, mask_mod, dense mask and bias builder."""
    n_long = 16384
    slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / 8) for h in range(8)])
    table = torch.randn(8, 32)
    buckets_4096 = None

    def t5(n):
        rel = torch.arange(-(n - 1), n)
        nb, md = 16, 128
        bucket = (rel > 0).long() * nb
        rel = rel.abs()
        exact = nb // 2
        large = exact + (torch.log(rel.float() / exact) / math.log(md / exact) * (nb - exact)).long()
        return bucket + torch.where(rel < exact, rel, large.clamp(max=nb - 1))

    buckets_4096 = t5(4096)
    docs = torch.arange(n_long) // 2048
    return [
        ("window 256 causal", n_long, 8, 8, dict(causal="top_left", window_left=255),
         None, lambda b, h, q, k: (k <= q) & (q - k <= 255)),
        ("8 documents", n_long, 8, 8, dict(q_doc_ids=docs, kv_doc_ids=docs),
         None, lambda b, h, q, k: docs[q] == docs[k]),
        ("alibi causal", 4096, 8, 8, dict(causal="top_left", alibi_slopes=slopes),
         lambda s, b, h, q, k: s + slopes[h] * (k - q), lambda b, h, q, k: k <= q),
        ("softcap 30", 4096, 8, 8, dict(softcap=30.0),
         lambda s, b, h, q, k: 30.0 * torch.tanh(s / 30.0), None),
        ("t5 table", 4096, 8, 8, dict(position_bias=table, position_buckets=buckets_4096),
         lambda s, b, h, q, k: s + table[h, buckets_4096[k - q + 4095]], None),
        ("gqa 32/8 causal", 4096, 32, 8, dict(causal="top_left", enable_gqa=True),
         None, lambda b, h, q, k: k <= q),
    ]


def dense_bias(n, h, score_mod, mask_mod):
    """The same scores as an explicit float mask [1 or H, n, n] for SDPA (0 where no modifier)."""
    q = torch.arange(n).view(-1, 1)
    k = torch.arange(n).view(1, -1)
    bias = torch.zeros(h, n, n)
    if score_mod is not None:
        for head in range(h):
            bias[head] = score_mod(torch.zeros(n, n), 0, head, q, k)
    if mask_mod is not None:
        bias = bias.masked_fill(~mask_mod(0, 0, q, k), float("-inf"))
    return bias.unsqueeze(0)


def main():
    torch.ops.load_library(sys.argv[1])
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float32, B=1, E=64")
    print(f"{'case':<20} {'N':>6} | {'ours fwd':>9} {'flex comp':>9} {'ratio':>6} | "
          f"{'ours f+b':>9} {'sdpa f+b':>9} {'ratio':>6} | {'sdpa fwd':>9} {'ratio':>6} | "
          f"{'eager f+b':>9} {'ratio':>6}")
    compiled = torch.compile(flex_attention)
    for name, n, h, hkv, kw, score_mod, mask_mod in cases():
        q = torch.randn(1, h, n, 64, requires_grad=True)
        k = torch.randn(1, hkv, n, 64, requires_grad=True)
        v = torch.randn(1, hkv, n, 64, requires_grad=True)
        ours = lambda: torch.ops.torchattn.flex_attention(q, k, v, **kw)[0]
        t_ours_f = best_of(lambda: ours().detach())
        t_ours_fb = best_of(lambda: ours().sum().backward())
        block_mask = create_block_mask(mask_mod, None, None, n, n, device="cpu") if mask_mod else None
        try:
            with torch.no_grad():
                t_flex = best_of(lambda: compiled(q, k, v, score_mod=score_mod,
                                                  block_mask=block_mask, enable_gqa=h != hkv))
            flex_note = f"{t_flex:9.3f} {t_flex / t_ours_f:6.2f}"
        except Exception as e:  # noqa: BLE001 - report what fails to compile, keep going
            flex_note = f"{'fails':>9} {'-':>6}"
            lines = [ln for ln in str(e).splitlines() if "error" in ln] or [str(e)[:160]]
            print(f"  ({name}: compiled flex_attention failed: {type(e).__name__}: "
                  f"{lines[0].strip()[:200]})")
        eager_note = f"{'-':>9} {'-':>6}"
        if n <= 4096:
            t_eager = best_of(lambda: flex_attention(
                q, k, v, score_mod=score_mod, block_mask=block_mask,
                enable_gqa=h != hkv).sum().backward(), runs=1)
            eager_note = f"{t_eager:9.3f} {t_eager / t_ours_fb:6.2f}"
        bias = dense_bias(n, h, score_mod, mask_mod)
        kk = k.repeat_interleave(h // hkv, 1) if h != hkv else k
        vv = v.repeat_interleave(h // hkv, 1) if h != hkv else v
        scale = 1 / 8.0
        def sdpa():
            # The soft-cap is not additive: SDPA cannot express it; its row uses the plain scores.
            return F.scaled_dot_product_attention(q, kk, vv, attn_mask=bias, scale=scale)
        t_sdpa_fb = best_of(lambda: sdpa().sum().backward())
        with torch.no_grad():
            t_sdpa_f = best_of(sdpa)
        print(f"{name:<20} {n:>6} | {t_ours_f:9.3f} {flex_note} | {t_ours_fb:9.3f} "
              f"{t_sdpa_fb:9.3f} {t_sdpa_fb / t_ours_fb:6.2f} | {t_sdpa_f:9.3f} "
              f"{t_sdpa_f / t_ours_f:6.2f} | {eager_note}", flush=True)
        del bias


if __name__ == "__main__":
    main()
