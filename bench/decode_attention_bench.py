"""torchattn's decode_attention against PyTorch 2.6's scaled_dot_product_attention on the same
decoding shapes, in one process (float32 unless a dtype is named, one query per head, E=128, 2 threads unless
OMP_NUM_THREADS says), with the copy bandwidth of the same bytes measured alongside.

    scripts/chroot.sh run python3 bench/decode_attention_bench.py build-trixie/libtorchattn.so [bfloat16|float16]

Prints one row per shape: the time of each, the GB/s of cache (keys and values of the kv heads)
each reads, the copy GB/s and the GB/s of summing the cache (a pure read: what memory allows),
and PyTorch's time / torchattn's (above 1, torchattn is faster).
GQA shapes call PyTorch with enable_gqa=True. Each time is the median of its runs, which
alternate between the three.
"""
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def main():
    torch.ops.load_library(sys.argv[1])
    dtype = getattr(torch, sys.argv[2]) if len(sys.argv) > 2 else torch.float32
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(2)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {dtype}, E=128, Lq=1\n")
    print("| B | H | H_kv | Lk | torchattn ms | GB/s | PyTorch sdpa ms | GB/s | copy GB/s | sum GB/s | sdpa / torchattn |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    shapes = [(1, 32, 32, 32768), (1, 1, 1, 32768), (1, 32, 8, 32768), (1, 32, 32, 4096),
              (8, 32, 8, 4096), (1, 8, 8, 131072), (1, 32, 4, 16384)]
    with torch.no_grad():
        for b, h, hkv, lk in shapes:
            q = torch.randn(b, h, 1, 128, dtype=dtype)
            k, v = torch.randn(b, hkv, lk, 128, dtype=dtype), torch.randn(b, hkv, lk, 128, dtype=dtype)
            k2, v2 = torch.empty_like(k), torch.empty_like(v)
            gb = 2 * k.numel() * k.element_size() / 1e9
            ours = lambda: torch.ops.torchattn.decode_attention(q, k, v)  # noqa: E731
            theirs = lambda: F.scaled_dot_product_attention(q, k, v, enable_gqa=h != hkv)  # noqa: E731
            copy = lambda: (k2.copy_(k), v2.copy_(v))  # noqa: E731
            read = lambda: (k.sum(), v.sum())  # noqa: E731
            times = {fn: [] for fn in (ours, theirs, copy, read)}
            reps = max(5, min(100, int(4 / gb)))
            for fn in times:
                fn()
            for _ in range(reps):
                for fn, ts in times.items():
                    t0 = time.perf_counter()
                    fn()
                    ts.append(time.perf_counter() - t0)
            t_ours, t_theirs, t_copy, t_read = (
                statistics.median(times[fn]) for fn in (ours, theirs, copy, read))
            print(f"| {b} | {h} | {hkv} | {lk} | {t_ours * 1e3:.3f} | {gb / t_ours:.1f} | "
                  f"{t_theirs * 1e3:.3f} | {gb / t_theirs:.1f} | {gb / t_copy:.1f} | {gb / t_read:.1f} | "
                  f"{t_theirs / t_ours:.2f} |")


if __name__ == "__main__":
    main()
