#pragma once

// The fused attention kernel's backward, one query tile against one key tile: P from the
// forward's statistics, then dV, dS = P (dP - delta), the modifiers' gradients, dK and dQ,
// on float operands or (Backward::pairs) on bfloat16 pairs. See backward.cpp.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/backward_heads.h"
#include "ops/cpu/flash_attention/epilogues.h"

#include <vector>

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

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
/// kBand: the tile is masked only by a band of keys per query (causal, sliding window, prefix;
/// no mask tensor, documents or blocks), and P is zero outside row r's keys [lo[r], hi[r]]
/// (relative to the tile), so that the tile takes the unmasked tiles' path (P's pairs here,
/// dS straight to its pairs) instead of the masked tiles' passes over the scores. Zeroed by
/// selection, not by a product: a masked score that overflowed to inf gives 0, as the math
/// path's -inf does.
template <bool kBand = false>
struct StoreExp2Pairs {
  const float* max;
  const float* log2_sum;
  uint32_t* p_q;
  int64_t ld;
  const int32_t* lo = nullptr;
  const int32_t* hi = nullptr;

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
        if constexpr (kBand) {
          const __m512i iota =
              _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
          const __m512i col =
              _mm512_add_epi32(iota, _mm512_set1_epi32(static_cast<int32_t>(col0 + n * 16)));
          const __mmask16 keep = _mm512_cmpge_epi32_mask(col, _mm512_set1_epi32(lo[row0 + i])) &
                                 _mm512_cmple_epi32_mask(col, _mm512_set1_epi32(hi[row0 + i]));
          acc[i][n] = _mm512_maskz_mov_ps(keep, acc[i][n]);
        }
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
            StoreExp2Pairs<>{row_m + tp.i0, row_log2_sum + tp.i0, buf.p_q, BK});
        return false;
      }
      if (kind == TileKind::partial && g.mods.band_only() && tp.nk == tp.nk_pad) {
        thread_local std::vector<int32_t> lo, hi;
        lo.resize(static_cast<size_t>(tp.nq));
        hi.resize(static_cast<size_t>(tp.nq));
        for (int64_t r = 0; r < tp.nq; ++r) {
          g.mods.tile_interval(tp.b, tp.i0 + r, tp.j0, tp.nk, lo[r], hi[r]);
        }
        gemm_pairs(
            tp.nq, tp.nk_pad, E2, a, 1, g.d.Lq, b, g.Lk_pad, PW, buf.p, BK, false, scale,
            StoreExp2Pairs<true>{
                row_m + tp.i0, row_log2_sum + tp.i0, buf.p_q, BK, lo.data(), hi.data()});
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

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
