#pragma once

// The fused attention kernel's backward, its state: what every work item reads and writes
// (Backward), and the operands of a query head (BackwardHead) and of a kv head (BackwardKV),
// each packed once, by the first work item that needs it. See backward.cpp.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/kernel.h"
#include "ops/cpu/flash_attention/low_precision.h"
#include "ops/cpu/flash_attention/micro_kernel_bf16.h"
#include "ops/cpu/flash_attention/modifiers.h"
#include "ops/cpu/flash_attention/packing.h"
#include "ops/cpu/flash_attention/pair_packing.h"

#include <atomic>
#include <memory>
#include <mutex>

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

/// What every work item of the backward reads and writes.
template <typename T>
struct Backward {
  const at::Tensor& grad_out;
  const at::Tensor& query;
  const at::Tensor& key;
  const at::Tensor& value;
  const at::Tensor& out;
  const T* row_max;
  const T* row_log_sum;
  FlashGrads& grads;
  Modifiers<T> mods;
  FlashArgs args;
  Dims d;
  int64_t k_tiles, q_tiles, chunks, E_pad, Ev_pad, Lk_pad;
  int64_t group;  // query heads per kv head
  int64_t n_diag; // Lq + Lk - 1 diagonals
  int64_t bk;     // keys per tile, at most block_k<T>() (the buffers' leading dimension)
  int64_t lanes;  // kv heads whose chunks interleave in the item order (interleaved_item)
  BufferPool<T>* pool;
  // bfloat16 query, key and value multiplied as pairs by vdpbf16ps (the avx512_bf16
  // build, T float; grad_out and out float32): the five products take their operands as pairs
  // (micro_kernel_bf16.h), P and dS rounded as they are packed.
  bool pairs = false;
};

/// Per query head, packed by the first chunk that needs it and freed by the last, which also
/// writes grad_query: q times the scale and grad_out as rows, delta = rowsum(grad_out * out),
/// the row statistics, and per chunk a grad_query accumulator and the sums of dS along each
/// diagonal (when ALiBi or the position table need their gradients).
template <typename T>
struct BackwardHead {
  std::once_flag packed;
  std::unique_ptr<T[]> q_s, do_p, delta, m, log2_sum, dq_acc;
  std::unique_ptr<double[]> diag_acc; // float64: long sums whose terms cancel (rows of dS sum to 0)
  const T* do_rows = nullptr;         // do_p or grad_out itself
  int64_t ld_do = 0;
  // Backward::pairs: queries as pairs along E [ceil(E / 2), Lq] and along the queries
  // [ceil(Lq / 2), E_pad]; grad_out likewise along Ev [ceil(Ev / 2), Lq] and along the queries
  // [ceil(Lq / 2), Ev_pad].
  std::unique_ptr<uint32_t[]> q_e, q_q, do_e, do_q;
};

/// Per kv head, likewise: keys as rows and in transposed panels, values in transposed panels.
template <typename T>
struct BackwardKV {
  std::once_flag packed;
  std::atomic<int64_t> chunks_left{0};
  std::unique_ptr<T[]> k_p, k_t, v_t;
  const T* k_rows = nullptr; // k_p or key itself
  int64_t ld_k = 0;
  // Backward::pairs: keys as pairs along E [ceil(E / 2), Lk_pad] and along the keys
  // [ceil(Lk / 2), E_pad], values along Ev [ceil(Ev / 2), Lk_pad].
  std::unique_ptr<uint32_t[]> k_e, k_k, v_e;
};

#if TORCHATTN_BF16_DOT
/// Backward::pairs with dP = dO Vᵀ by vdpbf16ps: delta = rowsum(dO * O) with O rounded to
/// bfloat16 (as FlashAttention takes the stored output) and summed by the same vdpbf16ps, pair
/// after pair from 0, as the micro-kernel sums dP: where all of a row's weight is on one key,
/// O is that key's value to the bit, so delta equals its dP to the bit and dS is 0, as in
/// exact arithmetic. 16 rows at a time, one per lane.
inline void pair_deltas(
    const Backward<float>& g, BackwardHead<float>& hd, const float* o_head, int64_t os2,
    int64_t os3) {
  const Dims& d = g.d;
  const int64_t Ev2 = (d.Ev + 1) / 2;
  std::unique_ptr<uint32_t[]> o_e(new uint32_t[static_cast<size_t>(Ev2 * d.Lq)]);
  pack_pairs(o_head, d.Ev, d.Lq, os3, os2, o_e.get(), d.Lq);
  const uint32_t* do_e = hd.do_e.get();
  for (int64_t i0 = 0; i0 < d.Lq; i0 += 16) {
    const __mmask16 rows = static_cast<__mmask16>((1u << std::min<int64_t>(16, d.Lq - i0)) - 1);
    __m512 acc = _mm512_setzero_ps();
    for (int64_t kp = 0; kp < Ev2; ++kp) {
      const __m512i a = _mm512_maskz_loadu_epi32(rows, do_e + kp * d.Lq + i0);
      const __m512i b = _mm512_maskz_loadu_epi32(rows, o_e.get() + kp * d.Lq + i0);
      acc = _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
    }
    _mm512_mask_storeu_ps(hd.delta.get() + i0, rows, acc);
  }
}
#endif

/// Each row's delta and statistics in backward's form.
template <typename T>
void row_statistics(const Backward<T>& g, BackwardHead<T>& hd, int64_t bh) {
  using Vec = Vectorized<T>;
  const Dims& d = g.d;
  const T* o_head = g.out.template data_ptr<T>() + head_offset(g.out, bh, d.H);
  // Read once: Tensor::stride checks the tensor's layout on every call.
  const int64_t os2 = g.out.stride(2), os3 = g.out.stride(3);
  // delta = rowsum(dO * O), summed exactly as the micro-kernel sums dP = dO Vᵀ (the same
  // fmadd, in the same order): where all of a row's weight is on one key, O is that key's
  // value to the bit, so delta equals its dP to the bit and dS = P (dP - delta) is 0, as in
  // exact arithmetic. A huge scale or huge queries would magnify any residue. Each row is one
  // chain of fmadd (lane 0 of a broadcast); kRows rows at a time, so that the chains overlap
  // instead of waiting on the fmadd latency.
  constexpr int64_t kRows = 8;
  bool deltas_done = false;
#if TORCHATTN_BF16_DOT
  if constexpr (std::is_same_v<T, float>) {
    if (g.pairs && tile_path() == TilePath::none) {
      pair_deltas(g, hd, o_head, os2, os3);
      deltas_done = true;
    }
  }
#endif
  for (int64_t i0 = 0; i0 < d.Lq && !deltas_done; i0 += kRows) {
    const int64_t n = std::min(kRows, d.Lq - i0);
    Vec acc[kRows];
    for (int64_t r = 0; r < kRows; ++r) {
      acc[r] = Vec(T(0));
    }
    // The last group repeats its last row in the rows past Lq (their sums are not kept).
    const T* do_r[kRows];
    const T* o_r[kRows];
    for (int64_t r = 0; r < kRows; ++r) {
      const int64_t i = i0 + std::min(r, n - 1);
      do_r[r] = hd.do_rows + i * hd.ld_do;
      o_r[r] = o_head + i * os2;
    }
    for (int64_t e = 0; e < d.Ev; ++e) {
#pragma GCC unroll 8
      for (int64_t r = 0; r < kRows; ++r) {
        acc[r] = at::vec::fmadd(Vec(do_r[r][e]), Vec(o_r[r][e * os3]), acc[r]);
      }
    }
    for (int64_t r = 0; r < n; ++r) {
      T lanes[Vec::size()];
      acc[r].store(lanes);
      hd.delta[i0 + r] = lanes[0];
    }
  }
  for (int64_t i = 0; i < d.Lq; ++i) {
    // A fully masked row (max -inf) gets weights exp2(-inf) = 0 from log2_sum = +inf.
    const T mx = g.row_max[bh * d.Lq + i];
    const bool dead = mx == neg_inf<T>();
    hd.m[i] = dead ? T(0) : mx;
    hd.log2_sum[i] = dead ? std::numeric_limits<T>::infinity()
                          : static_cast<T>(g.row_log_sum[bh * d.Lq + i] * kLog2e);
  }
}

/// Backward::pairs: a query head's operands as pairs (see BackwardHead).
inline void pack_head_pairs(const Backward<float>& g, BackwardHead<float>& hd, int64_t bh) {
  const Dims& d = g.d;
  const int64_t Lq2 = (d.Lq + 1) / 2;
  hd.q_e.reset(new uint32_t[static_cast<size_t>((d.E + 1) / 2 * d.Lq)]);
  hd.q_q.reset(new uint32_t[static_cast<size_t>(Lq2 * g.E_pad)]);
  hd.do_e.reset(new uint32_t[static_cast<size_t>((d.Ev + 1) / 2 * d.Lq)]);
  hd.do_q.reset(new uint32_t[static_cast<size_t>(Lq2 * g.Ev_pad)]);
  const auto* q = g.query.template data_ptr<at::BFloat16>() + head_offset(g.query, bh, d.H);
  const int64_t qr = g.query.stride(2), qc = g.query.stride(3);
  pack_pairs(q, d.E, d.Lq, qc, qr, hd.q_e.get(), d.Lq);
  pack_pairs(q, d.Lq, d.E, qr, qc, hd.q_q.get(), g.E_pad);
  const float* o = hd.do_rows;
  pack_pairs(o, d.Ev, d.Lq, 1, hd.ld_do, hd.do_e.get(), d.Lq);
  pack_pairs(o, d.Lq, d.Ev, hd.ld_do, 1, hd.do_q.get(), g.Ev_pad);
}

/// Pack a query head.
template <typename T>
void pack_head(const Backward<T>& g, BackwardHead<T>& hd, int64_t bh) {
  const Dims& d = g.d;
  hd.delta = g.pool->take(d.Lq);
  hd.q_s = g.pool->take(d.Lq * g.E_pad);
  hd.m = g.pool->take(d.Lq);
  hd.log2_sum = g.pool->take(d.Lq);
  hd.dq_acc = g.pool->take(g.chunks * d.Lq * g.E_pad);
  std::fill(hd.dq_acc.get(), hd.dq_acc.get() + g.chunks * d.Lq * g.E_pad, T(0));
  if (g.grads.grad_diagonal.defined()) {
    hd.diag_acc.reset(new double[static_cast<size_t>(g.chunks * g.n_diag)]());
  }
  // grad_out in T: bfloat16 and float16 converted here, a head at a time.
  with_data<T>(g.grad_out, head_offset(g.grad_out, bh, d.H), [&](const auto* go) {
    hd.do_rows =
        rows_of(go, d.Lq, d.Ev, g.grad_out.stride(2), g.grad_out.stride(3), hd.do_p, hd.ld_do);
  });
  if constexpr (std::is_same_v<T, float>) {
    if (g.pairs) {
      pack_head_pairs(g, hd, bh);
      row_statistics(g, hd, bh);
      return;
    }
  }
  // The queries times the scale exactly as the forward (and the math path) scales them, so
  // that backward's scores are the forward's to the bit (the same products, summed in the same
  // order): P then stays exact where one key takes all the weight. dK = dSᵀ (Q scale) takes
  // the same rows, as the math path's gradient does: scaling after the product would overflow
  // where q is huge and the scale tiny, and give inf * 0 at scale 0.
  with_data<T>(g.query, head_offset(g.query, bh, d.H), [&](const auto* q) {
    pack(
        q, d.Lq, d.E, g.query.stride(2), g.query.stride(3), hd.q_s.get(), g.E_pad,
        static_cast<T>(g.args.scale));
  });
  row_statistics(g, hd, bh);
}

/// Pack a kv head.
template <typename T>
void pack_kv(const Backward<T>& g, BackwardKV<T>& kvh, int64_t kv) {
  const Dims& d = g.d;
  const int64_t PW = panel_width<T>();
  kvh.k_t = g.pool->take(d.E * g.Lk_pad);
  kvh.v_t = g.pool->take(d.Ev * g.Lk_pad);
  if (g.pairs) {
    const int64_t E2 = (d.E + 1) / 2, Ev2 = (d.Ev + 1) / 2;
    kvh.k_e.reset(new uint32_t[static_cast<size_t>(E2 * g.Lk_pad)]);
    kvh.k_k.reset(new uint32_t[static_cast<size_t>((g.Lk_pad / 2) * g.E_pad)]);
    kvh.v_e.reset(new uint32_t[static_cast<size_t>(Ev2 * g.Lk_pad)]);
    const auto* k = g.key.template data_ptr<at::BFloat16>() + kv_offset(g.key, kv);
    const auto* v = g.value.template data_ptr<at::BFloat16>() + kv_offset(g.value, kv);
    const int64_t kr = g.key.stride(2), kc = g.key.stride(3);
    pack_pairs(k, d.E, d.Lk, kc, kr, kvh.k_e.get(), g.Lk_pad);
    pack_pairs(k, d.Lk, d.E, kr, kc, kvh.k_k.get(), g.E_pad);
    // Padding keys up to Lk_pad: zero, as dS's padding columns multiply them.
    std::fill(kvh.k_k.get() + (d.Lk + 1) / 2 * g.E_pad, kvh.k_k.get() + g.Lk_pad / 2 * g.E_pad, 0u);
    pack_pairs(v, d.Ev, d.Lk, g.value.stride(3), g.value.stride(2), kvh.v_e.get(), g.Lk_pad);
    return;
  }
  // bfloat16 and float16 are converted here, a head at a time.
  // (row by row, vectorized; the transposed panels are then made from float rows).
  with_data<T>(g.key, kv_offset(g.key, kv), [&](const auto* k) {
    kvh.k_rows = rows_of(k, d.Lk, d.E, g.key.stride(2), g.key.stride(3), kvh.k_p, kvh.ld_k);
  });
  pack_transposed_panels(kvh.k_rows, d.Lk, d.E, kvh.ld_k, 1, kvh.k_t.get(), PW);
  if (g.value.scalar_type() == c10::CppTypeToScalarType<T>::value) {
    pack_transposed_panels(
        g.value.template data_ptr<T>() + kv_offset(g.value, kv), d.Lk, d.Ev, g.value.stride(2),
        g.value.stride(3), kvh.v_t.get(), PW);
  } else {
    std::unique_ptr<T[]> rows(new T[static_cast<size_t>(d.Lk * d.Ev)]);
    with_data<T>(g.value, kv_offset(g.value, kv), [&](const auto* v) {
      pack(v, d.Lk, d.Ev, g.value.stride(2), g.value.stride(3), rows.get(), d.Ev);
    });
    pack_transposed_panels(rows.get(), d.Lk, d.Ev, d.Ev, 1, kvh.v_t.get(), PW);
  }
}

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
