// The fused attention kernel's backward: recomputes the scores per tile from the forward's row
// statistics (no buffer grows with Lq x Lk) and accumulates dQ, dK and dV.
//
// The steps, per work item (a kv head, or a chunk of its key tiles, backward_item): pack a head
// (once per head: operands in the micro-kernel's layouts and each row's delta and statistics);
// a key tile (for each query head of its group and each query tile that sees it: P, dV, dS,
// dK and dQ); finish a head (dQ summed over the chunks in a fixed order, buffers freed).
// Under grouped-query attention a work item holds every query head that reads its kv head, so
// that dK and dV are summed over the group in a fixed order, by one thread.
//
// Compiled once per CPU capability (see ops/cpu/vectorized.h).

#include "ops/cpu/flash_attention/kernel.h"

#include "ops/cpu/vectorized.h"

#include "ops/cpu/flash_attention/epilogues.h"
#include "ops/cpu/flash_attention/low_precision.h"
#include "ops/cpu/flash_attention/micro_kernel_bf16.h"
#include "ops/cpu/flash_attention/modifiers.h"
#include "ops/cpu/flash_attention/packing.h"
#include "ops/cpu/flash_attention/pair_packing.h"

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
  for (int64_t i0 = 0; i0 < d.Lq; i0 += kRows) {
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

/// The tile buffers of one thread: P, dS and tanh of the soft-capped scores
/// [kBlockQBackward, BK], dK [BK, E_pad], dV [BK, Ev_pad], and the tile's diagonal terms and
/// their dS sums [kBlockQBackward + BK].
template <typename T>
struct KeyTileBuffers {
  T* p;
  T* ds;
  T* th;
  T* dk;
  T* dv;
  T* diag;
  T* diag_ds;
  // Backward::pairs: P and dS as pairs of queries [kBlockQBackward / 2, BK], dS as pairs of
  // keys [kBlockQBackward, BK / 2].
  uint32_t* p_q;
  uint32_t* ds_q;
  uint32_t* ds_k;
};

/// A query tile against a key tile: which heads and rows, and which keys.
struct TilePos {
  int64_t bh, b, h, i0, nq, j0, nk, nk_pad;
};

#if TORCHATTN_BF16_DOT
/// Row pairs (i, i + 1) of a block as bfloat16 words into dst[(row0 + i) / 2 * ld + col]: pairs
/// along the rows (queries), rounded; an odd last row (the tile's last query) pairs with 0.
template <int MR, int NV>
inline void store_row_pairs(
    const Vectorized<float> (&v)[MR][NV], uint32_t* dst, int64_t ld, int64_t row0, int64_t col0) {
#pragma GCC unroll 4
  for (int i = 0; i < MR; i += 2) {
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      const __m512 hi_v = i + 1 < MR ? __m512(v[i + 1][n]) : _mm512_setzero_ps();
      const __m512i lo = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(v[i][n]));
      const __m512i hi = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(hi_v));
      _mm512_storeu_si512(
          dst + (row0 + i) / 2 * ld + col0 + n * 16,
          _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
    }
  }
}

/// StoreExp2 for Backward::pairs: P stored (dS reads it) and its pairs of queries for dV.
struct StoreExp2Pairs {
  const float* max;
  const float* log2_sum;
  uint32_t* p_q;
  int64_t ld;

  template <int MR, int NV>
  void operator()(
      Vectorized<float> (&acc)[MR][NV], float* c, int64_t ldc, int64_t row0, int64_t col0) const {
    using Vec = Vectorized<float>;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const Vec m(max[row0 + i]), ls(log2_sum[row0 + i]);
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        acc[i][n] = probability(acc[i][n], m, ls);
        acc[i][n].store(c + i * ldc + n * 16);
      }
    }
    store_row_pairs(acc, p_q, ld, row0, col0);
  }
};

/// StoreSoftmaxGrad for Backward::pairs on unmodified tiles: dS = P (dP - delta) straight to
/// its pairs of queries (ds_q, for dK) and of keys (ds_k, for dQ); dS itself is not stored.
struct StoreSoftmaxGradPairs {
  const float* probs;
  const float* delta;
  uint32_t* ds_q;
  uint32_t* ds_k;
  int64_t ld_q, ld_k;

  template <int MR, int NV>
  void operator()(
      Vectorized<float> (&acc)[MR][NV], float* /*c*/, int64_t ldc, int64_t row0,
      int64_t col0) const {
    using Vec = Vectorized<float>;
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const Vec dl(delta[row0 + i]);
      const float* pr = probs + (row0 + i) * ldc + col0;
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        acc[i][n] = Vec::loadu(pr + n * 16) * (acc[i][n] - dl);
      }
      uint32_t* k = ds_k + (row0 + i) * ld_k + col0 / 2;
#pragma GCC unroll 2
      for (int n = 0; n + 1 < NV; n += 2) {
        // 32 bfloat16 in order: word kp holds columns 2kp and 2kp + 1.
        _mm512_storeu_si512(k + n * 8, (__m512i)_mm512_cvtne2ps_pbh(acc[i][n + 1], acc[i][n]));
      }
      if constexpr (NV % 2 == 1) {
        _mm256_storeu_si256(
            reinterpret_cast<__m256i*>(k + (NV - 1) * 8),
            (__m256i)_mm512_cvtneps_pbh(acc[i][NV - 1]));
      }
    }
    store_row_pairs(acc, ds_q, ld_q, row0, col0);
  }
};
#endif

/// P = exp(S - max - log_sum) for the tile: in the GEMM's epilogue where nothing modifies or
/// masks it and no padding column touches it, else after modify_row, row by row. Returns
/// whether the scores were modified (then dS needs the modifiers' gradients).
template <typename T>
bool probabilities(
    const Backward<T>& g, const BackwardHead<T>& hd, const KeyTileBuffers<T>& buf,
    const BackwardKV<T>& kvh, const TilePos& tp, TileKind kind) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  constexpr int64_t BK = block_k<T>();
  const int64_t PW = panel_width<T>();
  const int64_t E = g.d.E, E_pad = g.E_pad;
  const T* qs = hd.q_s.get() + tp.i0 * E_pad;
  const T* k_panels = kvh.k_t.get() + tp.j0 * E;
  const T* row_m = hd.m.get();
  const T* row_log2_sum = hd.log2_sum.get();
  const bool fast = kind == TileKind::full && !g.mods.modifies_scores() && tp.nk == tp.nk_pad;
#if TORCHATTN_BF16_DOT
  if constexpr (std::is_same_v<T, float>) {
    if (g.pairs) {
      const int64_t E2 = (E + 1) / 2;
      const uint32_t* a = hd.q_e.get() + tp.i0;
      const uint32_t* b = kvh.k_e.get() + tp.j0;
      const auto scale = static_cast<float>(g.args.scale);
      if (fast) {
        gemm_pairs(
            tp.nq, tp.nk_pad, E2, a, 1, g.d.Lq, b, g.Lk_pad, PW, buf.p, BK, false, scale,
            StoreExp2Pairs{row_m + tp.i0, row_log2_sum + tp.i0, buf.p_q, BK});
        return false;
      }
      gemm_pairs(tp.nq, tp.nk_pad, E2, a, 1, g.d.Lq, b, g.Lk_pad, PW, buf.p, BK, false, scale);
    }
  }
#endif
  if (fast && !g.pairs) {
    gemm<T>(
        tp.nq, tp.nk_pad, E, qs, E_pad, 1, k_panels, PW, E * PW, buf.p, BK, /*accumulate=*/false,
        StoreExp2<T>{row_m + tp.i0, row_log2_sum + tp.i0});
    return false;
  }
  if (!g.pairs) {
    gemm<T>(tp.nq, tp.nk_pad, E, qs, E_pad, 1, k_panels, PW, E * PW, buf.p, BK, false);
  }
  if (g.mods.has_diagonal()) {
    // Row r, column c has d = j0 + c - i0 - r: index v = c - r + nq - 1.
    g.mods.diagonal_terms(tp.h, tp.j0 - tp.i0 - (tp.nq - 1), tp.nq + tp.nk_pad - 1, buf.diag);
  }
  for (int64_t r = 0; r < tp.nq; ++r) {
    const int64_t i = tp.i0 + r;
    T* s = buf.p + r * BK;
    const T* diag = g.mods.has_diagonal() ? buf.diag + (tp.nq - 1 - r) : nullptr;
    modify_row<T>(g.mods, s, buf.th + r * BK, diag, tp.nk, tp.nk_pad, tp.b, tp.h, i, tp.j0);
    const Vec mx(row_m[i]), ls(row_log2_sum[i]);
    for (int64_t j = 0; j < tp.nk_pad; j += W) {
      probability(Vec::loadu(s + j), mx, ls).store(s + j);
    }
  }
  return true;
}

/// The gradients of the score modifiers from dS: the bias's (dS itself), the sums along each
/// diagonal (ALiBi's and the table's) into `diag_acc`, then dS through the soft-cap.
template <typename T>
void modifier_gradients(
    const Backward<T>& g, const KeyTileBuffers<T>& buf, const TilePos& tp, double* diag_acc) {
  using Vec = Vectorized<T>;
  constexpr int64_t BK = block_k<T>();
  if (g.grads.grad_bias.defined()) {
    T* gb = g.grads.grad_bias.template data_ptr<T>() + (tp.bh * g.d.Lq + tp.i0) * g.d.Lk + tp.j0;
    for (int64_t r = 0; r < tp.nq; ++r) {
      std::copy(buf.ds + r * BK, buf.ds + r * BK + tp.nk, gb + r * g.d.Lk);
    }
  }
  if (diag_acc != nullptr) {
    const int64_t n = tp.nq + tp.nk - 1;
    std::fill(buf.diag_ds, buf.diag_ds + n, T(0));
    for (int64_t r = 0; r < tp.nq; ++r) {
      add_to(buf.diag_ds + (tp.nq - 1 - r), buf.ds + r * BK, tp.nk);
    }
    // v indexes d = j0 - i0 - (nq - 1) + v, which sits at d + Lq - 1 in diag_acc.
    double* acc = diag_acc + (tp.j0 - tp.i0 - (tp.nq - 1) + g.d.Lq - 1);
    for (int64_t v = 0; v < n; ++v) {
      acc[v] += static_cast<double>(buf.diag_ds[v]);
    }
  }
  if (g.mods.softcap > 0) {
    const Vec one(T(1));
    for (int64_t r = 0; r < tp.nq; ++r) {
      T* ds = buf.ds + r * BK;
      const T* th = buf.th + r * BK;
      for (int64_t j = 0; j < tp.nk_pad; j += Vec::size()) {
        const Vec t = Vec::loadu(th + j);
        (Vec::loadu(ds + j) * (one - t * t)).store(ds + j);
      }
    }
  }
}

#if TORCHATTN_BF16_DOT
/// query_tile_gradients' products on pairs (Backward::pairs), after P: dV += Pᵀ dO,
/// dS = P (dP - delta), the modifiers' gradients, dK += scale dSᵀ Q and dQ += dS K, with P and
/// dS rounded to bfloat16 as they are packed.
inline void pair_gradients(
    const Backward<float>& g, const BackwardHead<float>& hd, const BackwardKV<float>& kvh,
    const KeyTileBuffers<float>& buf, int64_t chunk, const TilePos& tp, bool modified) {
  constexpr int64_t BK = block_k<float>();
  const int64_t PW = panel_width<float>();
  const int64_t E_pad = g.E_pad, Ev_pad = g.Ev_pad, Lq = g.d.Lq;
  const int64_t nq2 = (tp.nq + 1) / 2;
  float* dq = hd.dq_acc.get() + chunk * Lq * E_pad;
  if (modified) {
    // Unmodified full tiles got P's pairs in the epilogue (StoreExp2Pairs).
    pack_pairs_from_floats(buf.p, tp.nq, tp.nk_pad, BK, buf.p_q, BK, nullptr);
  }
  gemm_pairs(
      tp.nk, Ev_pad, nq2, buf.p_q, 1, BK, hd.do_q.get() + tp.i0 / 2 * Ev_pad, Ev_pad, PW, buf.dv,
      Ev_pad, /*accumulate=*/true);
  const uint32_t* do_e = hd.do_e.get() + tp.i0;
  const uint32_t* v_e = kvh.v_e.get() + tp.j0;
  const int64_t Ev2 = (g.d.Ev + 1) / 2;
  if (!modified) {
    // dS straight to its pairs (the modifiers' gradients, when there are any, need dS itself).
    gemm_pairs(
        tp.nq, tp.nk_pad, Ev2, do_e, 1, Lq, v_e, g.Lk_pad, PW, buf.ds, BK,
        /*accumulate=*/false, 1.0f,
        StoreSoftmaxGradPairs{buf.p, hd.delta.get() + tp.i0, buf.ds_q, buf.ds_k, BK, BK / 2});
  } else {
    gemm_pairs(
        tp.nq, tp.nk_pad, Ev2, do_e, 1, Lq, v_e, g.Lk_pad, PW, buf.ds, BK,
        /*accumulate=*/false, 1.0f, StoreSoftmaxGrad<float>{buf.p, hd.delta.get() + tp.i0});
    double* diag_acc = hd.diag_acc ? hd.diag_acc.get() + chunk * g.n_diag : nullptr;
    modifier_gradients(g, buf, tp, diag_acc);
    pack_pairs_from_floats(buf.ds, tp.nq, tp.nk_pad, BK, buf.ds_q, BK, nullptr);
    pack_row_pairs(buf.ds, tp.nq, tp.nk_pad, BK, buf.ds_k, BK / 2);
  }
  gemm_pairs(
      tp.nk, E_pad, nq2, buf.ds_q, 1, BK, hd.q_q.get() + tp.i0 / 2 * E_pad, E_pad, PW, buf.dk,
      E_pad, /*accumulate=*/true, static_cast<float>(g.args.scale));
  gemm_pairs(
      tp.nq, E_pad, tp.nk_pad / 2, buf.ds_k, BK / 2, 1, kvh.k_k.get() + tp.j0 / 2 * E_pad, E_pad,
      PW, dq + tp.i0 * E_pad, E_pad, /*accumulate=*/true);
}
#endif

/// One query tile of a key tile: P, then dV += Pᵀ dO, dS = P (dP - delta) with dP = dO Vᵀ in
/// registers, the modifiers' gradients, dK += dSᵀ (Q scale) and dQ += dS K (scale applied when
/// the head finishes).
template <typename T>
void query_tile_gradients(
    const Backward<T>& g, const BackwardHead<T>& hd, const BackwardKV<T>& kvh,
    const KeyTileBuffers<T>& buf, int64_t chunk, const TilePos& tp, TileKind kind) {
  constexpr int64_t BK = block_k<T>();
  const int64_t PW = panel_width<T>();
  const int64_t E_pad = g.E_pad, Ev_pad = g.Ev_pad, Ev = g.d.Ev;
  const T* doh = hd.do_rows + tp.i0 * hd.ld_do;
  const T* qs = hd.q_s.get() + tp.i0 * E_pad;
  T* dq = hd.dq_acc.get() + chunk * g.d.Lq * E_pad;
  const bool modified = probabilities(g, hd, buf, kvh, tp, kind);
#if TORCHATTN_BF16_DOT
  if constexpr (std::is_same_v<T, float>) {
    if (g.pairs) {
      pair_gradients(g, hd, kvh, buf, chunk, tp, modified);
      return;
    }
  }
#endif
  // P, then dS, in the input dtype for their products (bfloat16, float16; see
  // low_precision.h). The rounded P waits in dS's buffer: dS = P (dP - delta) reads P unrounded.
  const T* p_product = buf.p;
  if (g.args.low_precision != at::ScalarType::Undefined) {
    for (int64_t r = 0; r < tp.nq; ++r) {
      std::copy(buf.p + r * BK, buf.p + r * BK + tp.nk_pad, buf.ds + r * BK);
    }
    round_rows(buf.ds, tp.nq, tp.nk_pad, BK, g.args.low_precision);
    p_product = buf.ds;
  }
  gemm<T>(tp.nk, Ev_pad, tp.nq, p_product, 1, BK, doh, hd.ld_do, PW, buf.dv, Ev_pad, true);
  gemm<T>(
      tp.nq, tp.nk_pad, Ev, doh, hd.ld_do, 1, kvh.v_t.get() + tp.j0 * Ev, PW, Ev * PW, buf.ds, BK,
      /*accumulate=*/false, StoreSoftmaxGrad<T>{buf.p, hd.delta.get() + tp.i0});
  if (modified) {
    double* diag_acc = hd.diag_acc ? hd.diag_acc.get() + chunk * g.n_diag : nullptr;
    modifier_gradients(g, buf, tp, diag_acc);
  }
  round_rows(buf.ds, tp.nq, tp.nk_pad, BK, g.args.low_precision);
  gemm<T>(tp.nk, E_pad, tp.nq, buf.ds, 1, BK, qs, E_pad, PW, buf.dk, E_pad, true);
  gemm<T>(
      tp.nq, E_pad, tp.nk, buf.ds, BK, 1, kvh.k_rows + tp.j0 * kvh.ld_k, kvh.ld_k, PW,
      dq + tp.i0 * E_pad, E_pad, /*accumulate=*/true);
}

/// A key tile of kv head `kv`: its dK and dV over every query head of the group and every
/// query tile that sees it, written to grad_key and grad_value.
template <typename T>
void key_tile(
    const Backward<T>& g, BackwardHead<T>* heads, const BackwardKV<T>& kvh,
    const KeyTileBuffers<T>& buf, int64_t kv, int64_t chunk, int64_t kt) {
  const Dims& d = g.d;
  constexpr int64_t W = Vectorized<T>::size();
  const int64_t j0 = kt * g.bk;
  const int64_t nk = std::min(g.bk, d.Lk - j0);
  std::fill(buf.dk, buf.dk + nk * g.E_pad, T(0));
  std::fill(buf.dv, buf.dv + nk * g.Ev_pad, T(0));
  const int64_t b = kv / (d.H / g.group);
  // Only the queries that may see these keys: query tiles start at the first of them.
  int64_t i_begin, i_end;
  g.mods.query_range(b, j0, j0 + nk - 1, i_begin, i_end);
  if (g.pairs) {
    i_begin -= i_begin % 2; // pairs of queries start at even rows; the extra row sees no key
  }
  for (int64_t q_head = 0; q_head < g.group; ++q_head) {
    const int64_t h = (kv % (d.H / g.group)) * g.group + q_head;
    const int64_t bh = b * d.H + h;
    for (int64_t i0 = i_begin; i0 < i_end; i0 += kBlockQBackward) {
      const int64_t nq = std::min(kBlockQBackward, d.Lq - i0);
      // Only the keys up to the last these queries may see (causal, window, prefix), whole
      // vectors of them: the rest have P = 0 and dS = 0 here (the causal diagonal's blocks
      // are otherwise half zeros).
      int64_t k_first, k_end;
      g.mods.key_range(b, i0, i0 + nq, k_first, k_end);
      const int64_t nk_seen = std::clamp<int64_t>(round_up(k_end - j0, W), W, nk);
      const TilePos tp{bh, b, h, i0, nq, j0, nk_seen, round_up(nk_seen, W)};
      const TileKind kind = g.mods.classify(b, h, i0, tp.nq, j0, tp.nk);
      if (kind != TileKind::empty) {
        query_tile_gradients(g, heads[bh], kvh, buf, chunk, tp, kind);
      }
    }
  }
  // In their own dtype (store_as); their rows are contiguous (asserted by backward_impl).
  const at::Tensor& gk = g.grads.grad_key;
  const at::Tensor& gv = g.grads.grad_value;
  const at::ScalarType gk_type = gk.scalar_type(), gv_type = gv.scalar_type();
  void* const gk_data = gk.data_ptr();
  void* const gv_data = gv.data_ptr();
  const int64_t gk_head = kv_offset(gk, kv), gv_head = kv_offset(gv, kv);
  const int64_t gk2 = gk.stride(2), gv2 = gv.stride(2);
  for (int64_t r = 0; r < nk; ++r) {
    store_as(buf.dk + r * g.E_pad, d.E, gk_type, gk_data, gk_head + (j0 + r) * gk2, 1);
    store_as(buf.dv + r * g.Ev_pad, d.Ev, gv_type, gv_data, gv_head + (j0 + r) * gv2, 1);
  }
}

/// Finish a query head: grad_query = scale * the chunks' accumulators summed in chunk order,
/// likewise the diagonal sums; the head's buffers freed.
template <typename T>
void finish_head(const Backward<T>& g, BackwardHead<T>& hd, int64_t bh) {
  const Dims& d = g.d;
  const T scale = static_cast<T>(g.args.scale);
  const at::Tensor& gq = g.grads.grad_query;
  const at::ScalarType gq_type = gq.scalar_type();
  void* const gq_data = gq.data_ptr();
  const int64_t gq_head = head_offset(gq, bh, d.H), gs2 = gq.stride(2), gs3 = gq.stride(3);
  // Vectors along E (E_pad is whole vectors): each lane sums its chunks in chunk order from 0,
  // as a scalar loop would, so the bits do not depend on the vector width. The sums replace
  // chunk 0's row, which goes to grad_query in its own dtype (store_as).
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  for (int64_t i = 0; i < d.Lq; ++i) {
    T* row = hd.dq_acc.get() + i * g.E_pad;
    for (int64_t e = 0; e < d.E; e += W) {
      Vec sum(T(0));
      for (int64_t c = 0; c < g.chunks; ++c) {
        sum = sum + Vec::loadu(hd.dq_acc.get() + (c * d.Lq + i) * g.E_pad + e);
      }
      (sum * Vec(scale)).store(row + e);
    }
    store_as(row, d.E, gq_type, gq_data, gq_head + i * gs2, gs3);
  }
  if (hd.diag_acc) {
    double* out = g.grads.grad_diagonal.template data_ptr<double>() + bh * g.n_diag;
    for (int64_t c = 0; c < g.chunks; ++c) {
      for (int64_t v = 0; v < g.n_diag; ++v) {
        out[v] += hd.diag_acc[c * g.n_diag + v];
      }
    }
  }
  for (auto* buf : {&hd.delta, &hd.m, &hd.log2_sum}) {
    g.pool->give(d.Lq, *buf);
  }
  g.pool->give(d.Lq * g.E_pad, hd.q_s);
  g.pool->give(g.chunks * d.Lq * g.E_pad, hd.dq_acc);
  hd.do_p.reset();
  hd.diag_acc.reset();
  for (auto* p : {&hd.q_e, &hd.q_q, &hd.do_e, &hd.do_q}) {
    p->reset();
  }
}

/// One work item: a chunk of one kv head's key tiles, interleaved so that each chunk gets
/// early (long) and late causal tiles.
template <typename T>
void backward_item(const Backward<T>& g, BackwardHead<T>* heads, BackwardKV<T>* kvs, int64_t item) {
  constexpr int64_t BK = block_k<T>();
  int64_t kv, chunk;
  interleaved_item(item, g.d.B * g.d.H / g.group, g.chunks, g.lanes, kv, chunk);
  const int64_t first_bh = first_query_head(kv, g.d.H, g.group);
  BackwardKV<T>& kvh = kvs[kv];
  std::call_once(kvh.packed, [&] { pack_kv(g, kvh, kv); });
  for (int64_t q_head = 0; q_head < g.group; ++q_head) {
    const int64_t bh = first_bh + q_head;
    std::call_once(heads[bh].packed, [&] { pack_head(g, heads[bh], bh); });
  }
  thread_local std::vector<T> probs, dscores, tanhs, dk, dv, diag, diag_ds;
  probs.resize(static_cast<size_t>(kBlockQBackward * BK));
  dscores.resize(static_cast<size_t>(kBlockQBackward * BK));
  tanhs.resize(static_cast<size_t>(kBlockQBackward * BK));
  dk.resize(static_cast<size_t>(BK * g.E_pad));
  dv.resize(static_cast<size_t>(BK * g.Ev_pad));
  diag.resize(static_cast<size_t>(kBlockQBackward + BK));
  diag_ds.resize(static_cast<size_t>(kBlockQBackward + BK));
  thread_local std::vector<uint32_t> p_q, ds_q, ds_k;
  if (g.pairs) {
    p_q.resize(static_cast<size_t>(kBlockQBackward / 2 * BK));
    ds_q.resize(static_cast<size_t>(kBlockQBackward / 2 * BK));
    ds_k.resize(static_cast<size_t>(kBlockQBackward * BK / 2));
  }
  const KeyTileBuffers<T> buf{probs.data(), dscores.data(), tanhs.data(), dk.data(),   dv.data(),
                              diag.data(),  diag_ds.data(), p_q.data(),   ds_q.data(), ds_k.data()};
  for (int64_t kt = chunk; kt < g.k_tiles; kt += g.chunks) {
    key_tile(g, heads, kvh, buf, kv, chunk, kt);
  }
  if (--kvh.chunks_left == 0) {
    for (int64_t q_head = 0; q_head < g.group; ++q_head) {
      finish_head(g, heads[first_bh + q_head], first_bh + q_head);
    }
    kvh.k_p.reset();
    g.pool->give(g.d.E * g.Lk_pad, kvh.k_t);
    g.pool->give(g.d.Ev * g.Lk_pad, kvh.v_t);
    kvh.k_e.reset();
    kvh.k_k.reset();
    kvh.v_e.reset();
  }
}

template <typename T>
void backward_impl(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& mask, const at::Tensor& out,
    const at::Tensor& row_max, const at::Tensor& row_log_sum, const FlashArgs& args,
    FlashGrads& grads, bool pairs = false) {
  // grad_out [B, H, Lq, Ev] -> grad_query [B, H, Lq, E], grad_key [B, H_kv, Lk, E],
  //                            grad_value [B, H_kv, Lk, Ev]
  constexpr int64_t W = Vectorized<T>::size();
  TORCH_INTERNAL_ASSERT(
      grads.grad_key.stride(3) == 1 && grads.grad_value.stride(3) == 1,
      "flash_attention_backward: grad_key and grad_value must have contiguous rows");
  const Dims d = dims_of(query, key, value);
  const int64_t kv_heads = d.B * key.size(1);
  const Modifiers<T> mods(mask, args, d);
  const int64_t bk = mods.backward_block_k(block_k<T>(), panel_width<T>());
  const int64_t k_tiles = (d.Lk + bk - 1) / bk;
  // With few kv heads, each one's key tiles are split into chunks, each with its own
  // grad_query accumulators (summed at the end, in chunk order). The split depends on the
  // shape alone, never on the thread count, so that the sums, and so the gradients, are the
  // same bits on any number of threads. At least one chunk, even with no keys: it writes
  // grad_query (zeros).
  const int64_t chunks =
      kv_heads == 0 || kv_heads >= kSplitWorkers
          ? 1
          : std::max<int64_t>(1, std::min(k_tiles, (kSplitWorkers + kv_heads - 1) / kv_heads));
  BufferPool<T> pool;
  const Backward<T> g{
      grad_out,
      query,
      key,
      value,
      out,
      row_max.data_ptr<T>(),
      row_log_sum.data_ptr<T>(),
      grads,
      mods,
      args,
      d,
      k_tiles,
      (d.Lq + kBlockQBackward - 1) / kBlockQBackward,
      chunks,
      round_up(d.E, W),
      round_up(d.Ev, W),
      round_up(d.Lk, panel_width<T>()),
      d.H / key.size(1),
      d.Lq + d.Lk - 1,
      bk,
      item_lanes(kv_heads),
      &pool,
      pairs};
  std::unique_ptr<BackwardHead<T>[]> heads(new BackwardHead<T>[static_cast<size_t>(d.BH())]);
  std::unique_ptr<BackwardKV<T>[]> kvs(new BackwardKV<T>[static_cast<size_t>(kv_heads)]);
  for (int64_t kv = 0; kv < kv_heads; ++kv) {
    kvs[kv].chunks_left = chunks;
  }
  parallel_items(
      kv_heads * chunks, [&](int64_t item) { backward_item(g, heads.get(), kvs.get(), item); });
}

} // namespace

void flash_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& mask, const at::Tensor& out,
    const at::Tensor& row_max, const at::Tensor& row_log_sum, const FlashArgs& args,
    FlashGrads& grads) {
  if (is_low_precision(query.scalar_type())) {
    // bfloat16, float16: in float32 with P and dS rounded (low_precision.h). The kernel
    // converts grad_out a head at a time and writes the gradients in their dtype (store_as);
    // grad_bias is float32 already.
#if TORCHATTN_BF16_DOT
    if (query.scalar_type() == at::kBFloat16) {
      // bfloat16 products by vdpbf16ps: query, key and value stay bfloat16.
      backward_impl<float>(
          grad_out, query, key, value, to_float(mask), to_float(out), row_max, row_log_sum,
          float_args(args, at::kBFloat16), grads, /*pairs=*/true);
      return;
    }
#endif
    backward_impl<float>(
        grad_out, query, key, value, to_float(mask), to_float(out), row_max, row_log_sum,
        float_args(args, query.scalar_type()), grads);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "flash_attention_backward", [&] {
    backward_impl<scalar_t>(
        grad_out, query, key, value, mask, out, row_max, row_log_sum, args, grads);
  });
}

} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu

#include "ops/cpu/vectorized_end.h"
