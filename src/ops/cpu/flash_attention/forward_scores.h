#pragma once

// The fused attention kernel's forward, scoring a key tile: S^T = K Q^T for a tile of keys
// against the query tile, then the online softmax, in one of three ways (forward.cpp says
// which): a masked or modified tile, its maxima in a pass of their own; a first tile, its
// maxima from the micro-kernel's registers; a lazily rescaled tile, exp in the epilogue.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/epilogues.h"
#include "ops/cpu/flash_attention/forward_tiles.h"

#include <algorithm>

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

/// Column maxima of strip c (W queries) of S^T [nk, BQ] into cm, on independent chains: bound
/// by throughput, not by the latency of max.
template <typename T>
inline void max_strip(const T* st, int64_t nk, int64_t c, T* cm) {
  using Vec = Vectorized<T>;
  constexpr int64_t BQ = forward_block_q<T>();
  const Vec ninf(neg_inf<T>());
  Vec mx0 = ninf, mx1 = ninf, mx2 = ninf, mx3 = ninf;
  int64_t j = 0;
  for (; j + 4 <= nk; j += 4) {
    const T* p = st + j * BQ + c;
    mx0 = max_fast(mx0, Vec::loadu(p));
    mx1 = max_fast(mx1, Vec::loadu(p + BQ));
    mx2 = max_fast(mx2, Vec::loadu(p + 2 * BQ));
    mx3 = max_fast(mx3, Vec::loadu(p + 3 * BQ));
  }
  for (; j < nk; ++j) {
    mx0 = max_fast(mx0, Vec::loadu(st + j * BQ + c));
  }
  max_fast(max_fast(mx0, mx1), max_fast(mx2, mx3)).store(cm + c);
}

/// The online-softmax step of strip c from its column maxima: a new running max, exp against
/// it in place, the sums, and the accumulator rows rescaled.
template <typename T>
inline void softmax_strip(const QueryTile<T>& t, int64_t nk, int64_t c) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  constexpr int64_t BQ = forward_block_q<T>();
  // Locals: the vector stores may alias anything, so fields would be reloaded after each.
  T* st = t.st;
  T* l_run = t.l_run;
  T* m_run = t.m_run;
  const int64_t ev_pad = t.ev_pad;
  const Vec ninf(neg_inf<T>());
  const Vec m_old = Vec::loadu(m_run + c);
  const Vec m_new = at::vec::maximum(Vec::loadu(t.col_max + c), m_old);
  // Queries with no key allowed yet subtract 0 instead of -inf: their weights stay 0 and
  // their alpha is exp2(-inf) = 0 on an accumulator that is still 0.
  const Vec m_use = Vec::blendv(m_new, Vec(T(0)), m_new == ninf);
  const Vec alpha = exp_minus(m_old, m_use);
  // Two sums: two chains hide the add latency.
  Vec sum0(T(0)), sum1(T(0));
  int64_t j = 0;
  for (; j + 2 <= nk; j += 2) {
    T* p = st + j * BQ + c;
    const Vec e0 = exp_minus(Vec::loadu(p), m_use);
    const Vec e1 = exp_minus(Vec::loadu(p + BQ), m_use);
    e0.store(p);
    e1.store(p + BQ);
    sum0 = sum0 + e0;
    sum1 = sum1 + e1;
  }
  if (j < nk) {
    T* p = st + j * BQ + c;
    const Vec e = exp_minus(Vec::loadu(p), m_use);
    e.store(p);
    sum0 = sum0 + e;
  }
  at::vec::fmadd(Vec::loadu(l_run + c), alpha, sum0 + sum1).store(l_run + c);
  if (t.l_round != nullptr) {
    (Vec::loadu(t.l_round + c) * alpha).store(t.l_round + c);
  }
  m_new.store(m_run + c);
  T alphas[Vec::size()];
  alpha.store(alphas);
  for (int64_t r = 0; r < W && c + r < t.nq; ++r) {
    if (alphas[r] != T(1)) {
      T* a = t.acc + (c + r) * ev_pad;
      const Vec va(alphas[r]);
      for (int64_t e = 0; e < ev_pad; e += W) {
        (Vec::loadu(a + e) * va).store(a + e);
      }
    }
  }
}

/// S^T = K Q^T for the key tile [nk] at k_tile (Forward::pairs: at key j0 of the head's
/// key pairs) and the tile's columns [c0, c1), raw.
template <typename T, typename Epi = StoreC>
inline void scores_columns(
    const Forward<T>& f, const QueryTile<T>& t, const T* k_tile, int64_t nk, int64_t c0, int64_t c1,
    Epi epi = Epi()) {
#if TORCHATTN_BF16_DOT
  if constexpr (std::is_same_v<T, float>) {
    if (f.pairs) {
      const auto* k_pairs = reinterpret_cast<const uint32_t*>(k_tile);
      gemm_pairs(
          nk, c1 - c0, (f.d.E + 1) / 2, k_pairs, t.key_rs, t.key_cs, t.q_pairs + c0, t.nq_pad,
          panel_width<T>(), t.st + c0, forward_block_q<T>(), /*accumulate=*/false,
          static_cast<float>(f.args.scale), epi);
      return;
    }
  }
#endif
  gemm<T>(
      nk, c1 - c0, f.d.E, k_tile, t.key_rs, t.key_cs, t.q_t + c0, t.nq_pad, panel_width<T>(),
      t.st + c0, forward_block_q<T>(), /*accumulate=*/false, epi);
}

/// Score a modified tile: a modifier or mask touches it, so the maxima come after, in a pass
/// of their own. Only its columns [c0, c1) (whole vectors): the queries outside them see none
/// of its keys (causal, window, prefix), so their weights, running statistics and output stay
/// as they are.
template <typename T>
void score_masked_tile(
    const Forward<T>& f, const QueryTile<T>& t, const T* k_tile, int64_t j0, int64_t nk, int64_t c0,
    int64_t c1) {
  constexpr int64_t W = Vectorized<T>::size();
  scores_columns(f, t, k_tile, nk, c0, c1);
  const T* rdiag = nullptr;
  if (f.mods.has_diagonal()) {
    // S^T[j, c] has d = j0 + j - i0 - c; v = c - j + nk - 1 runs down the diagonals.
    const int64_t n = t.nq_pad + nk - 1;
    f.mods.diagonal_terms(t.h, j0 - t.i0 - (t.nq_pad - 1), n, t.rdiag);
    std::reverse(t.rdiag, t.rdiag + n);
    rdiag = t.rdiag + c0;
  }
  modify_transposed(
      f.mods, t.st + c0, forward_block_q<T>(), nk, std::min(t.nq, c1) - c0, c1 - c0, rdiag, t.b,
      t.h, t.i0 + c0, j0);
  for (int64_t c = c0; c < c1; c += W) {
    max_strip(t.st, nk, c, t.col_max);
    softmax_strip(t, nk, c);
  }
}

/// Score a first tile: some query has no finite running max yet; the maxima come from the
/// micro-kernel's registers.
template <typename T>
void score_first_tile(const Forward<T>& f, const QueryTile<T>& t, const T* k_tile, int64_t nk) {
  constexpr int64_t W = Vectorized<T>::size();
  std::fill(t.col_max, t.col_max + t.nq_pad, neg_inf<T>());
  scores_columns(f, t, k_tile, nk, 0, t.nq_pad, StoreAndColumnMax<T>{t.col_max});
  for (int64_t c = 0; c < t.nq_pad; c += W) {
    softmax_strip(t, nk, c);
  }
}

#if TORCHATTN_BF16_DOT
/// StoreExp2Columns for Forward::pairs: the weights go, rounded to bfloat16, straight to P's
/// pairs of keys (S^T is not stored); their column sums before rounding go to colsum and after
/// it to colsum_round. Saves a pass over the tile (15% of the bf16 forward at N=2048).
/// kBand: the tile is masked only by a band of keys per query (causal, sliding window, prefix;
/// Modifiers::band_only), `band` (its columns from band_c0 on) says which: the keys outside
/// a query's band weigh 0 and do not count in its max. By selection, not by a product, so that
/// a masked score that overflowed to inf gives 0, as the math path's -inf does. A block of
/// rows that every column of a vector sees takes the unmasked code; one that none sees, zeros.
template <bool kBand = false>
struct StoreExp2Pairs {
  const float* m_ref;
  float* colmax;
  float* colsum;
  float* colsum_round;
  uint32_t* pairs; // [keys / 2, ld]
  int64_t ld;
  const BandColumns* band = nullptr;
  int64_t band_c0 = 0;

  /// The weight of score s of key row `key` against ref, and mx taking s; kMasked: 0 and mx as
  /// it was where the key is outside the column's band [first, last].
  template <bool kMasked>
  static Vectorized<float> weight(
      const Vectorized<float>& s, const Vectorized<float>& ref, int64_t key, __m512i first,
      __m512i last, Vectorized<float>& mx) {
    const Vectorized<float> e = exp_minus(s, ref);
    if constexpr (kMasked) {
      const __m512i k = _mm512_set1_epi32(static_cast<int32_t>(key));
      const __mmask16 keep = _mm512_cmple_epi32_mask(first, k) & _mm512_cmpge_epi32_mask(last, k);
      mx = _mm512_mask_max_ps(mx, keep, mx, s);
      return _mm512_maskz_mov_ps(keep, e);
    }
    mx = max_fast(mx, s);
    return e;
  }

  /// Vector n of the block: weights, pairs and column statistics.
  template <bool kMasked, int MR, int NV>
  void columns(Vectorized<float> (&acc)[MR][NV], int n, int64_t row0, int64_t col0) const {
    using Vec = Vectorized<float>;
    const int64_t col = col0 + n * Vec::size();
    const Vec ref = Vec::loadu(m_ref + col);
    Vec mx(neg_inf<float>());
    Vec sum(0.f);
    __m512 sum_round = _mm512_setzero_ps();
    __m512i first = _mm512_setzero_si512(), last = _mm512_setzero_si512();
    if constexpr (kMasked) {
      first = _mm512_loadu_si512(band->lo + band_c0 + col);
      last = _mm512_loadu_si512(band->hi + band_c0 + col);
    }
#pragma GCC unroll 4
    for (int i = 0; i < MR; i += 2) {
      // Row blocks start at even rows; an odd last row (the tile's last key) pairs with 0.
      const Vec e0 = weight<kMasked>(acc[i][n], ref, row0 + i, first, last, mx);
      const Vec e1 = i + 1 < MR ? weight<kMasked>(acc[i + 1][n], ref, row0 + i + 1, first, last, mx)
                                : Vec(0.f);
      sum = sum + e0 + e1;
      const __m512i lo16 = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(e0));
      const __m512i hi16 = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(e1));
      _mm512_storeu_si512(
          pairs + (row0 + i) / 2 * ld + col, _mm512_or_si512(lo16, _mm512_slli_epi32(hi16, 16)));
      sum_round = _mm512_add_ps(sum_round, _mm512_castsi512_ps(_mm512_slli_epi32(lo16, 16)));
      sum_round = _mm512_add_ps(sum_round, _mm512_castsi512_ps(_mm512_slli_epi32(hi16, 16)));
    }
    max_fast(Vec::loadu(colmax + col), mx).store(colmax + col);
    (Vec::loadu(colsum + col) + sum).store(colsum + col);
    _mm512_storeu_ps(
        colsum_round + col, _mm512_add_ps(_mm512_loadu_ps(colsum_round + col), sum_round));
  }

  template <int MR, int NV>
  void operator()(
      Vectorized<float> (&acc)[MR][NV], float* /*c*/, int64_t /*ldc*/, int64_t row0,
      int64_t col0) const {
    constexpr int W = Vectorized<float>::size();
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      if constexpr (kBand) {
        const int64_t v = (band_c0 + col0) / W + n;
        const int64_t row1 = row0 + MR - 1;
        if (row0 > band->any_hi[v] || row1 < band->any_lo[v]) {
          // No column sees these keys: zero weights, the statistics as they are.
          for (int i = 0; i < MR; i += 2) {
            _mm512_storeu_si512(pairs + (row0 + i) / 2 * ld + col0 + n * W, _mm512_setzero_si512());
          }
        } else if (band->all_lo[v] <= row0 && row1 <= band->all_hi[v]) {
          columns<false>(acc, n, row0, col0);
        } else {
          columns<true>(acc, n, row0, col0);
        }
      } else {
        columns<false>(acc, n, row0, col0);
      }
    }
  }
};
#endif

/// Each query's keys in the tile [j0, j0 + nk) by causal, window and prefix, relative to the
/// tile, for the query columns [c0, c1) (whole vectors; BandColumns); padding columns see none.
template <typename T>
void band_columns(
    const Forward<T>& f, const QueryTile<T>& t, int64_t j0, int64_t nk, int64_t c0, int64_t c1) {
  constexpr int64_t W = 16;
  BandColumns& bc = *t.band;
  for (int64_t c = c0; c < c1; ++c) {
    bc.lo[c] = static_cast<int32_t>(nk);
    bc.hi[c] = -1;
    if (c < t.nq) {
      f.mods.tile_interval(t.b, t.i0 + c, j0, nk, bc.lo[c], bc.hi[c]);
    }
  }
  for (int64_t v = c0 / W; v < c1 / W; ++v) {
    const int32_t* lo = bc.lo + v * W;
    const int32_t* hi = bc.hi + v * W;
    bc.all_lo[v] = *std::max_element(lo, lo + W);
    bc.all_hi[v] = *std::min_element(hi, hi + W);
    bc.any_lo[v] = *std::min_element(lo, lo + W);
    bc.any_hi[v] = *std::max_element(hi, hi + W);
  }
}

/// Score a tile lazily rescaled: exp against the running max, in the micro-kernel's epilogue,
/// with the sums and the new maxima, for the queries [c0, c1). The running max stays unless a
/// strip's scores exceed it by more than kLazyRescale (weights up to 2^8 are harmless); such a
/// strip is recomputed and takes the first tile's step. Returns whether P is ready for P V
/// already (Forward::pairs: the epilogue packs it; low precision: the epilogue rounds it).
/// `band` (Forward::pairs, Modifiers::band_only): a tile that causal, window or prefix mask in
/// part takes this path too, its weights outside each query's band zeroed in the epilogue
/// (StoreExp2Pairs<true>) instead of the masked tiles' passes over S^T (a fifth of the bf16
/// causal forward at N = 512).
template <typename T>
bool score_lazy_tile(
    const Forward<T>& f, const QueryTile<T>& t, const T* k_tile, int64_t j0, int64_t nk, int64_t c0,
    int64_t c1, bool band = false) {
  using Vec = Vectorized<T>;
  constexpr int64_t W = Vec::size();
  constexpr int64_t BQ = forward_block_q<T>();
  T* cm = t.col_max;
  T* cs = t.col_sum;
  std::fill(cm + c0, cm + c1, neg_inf<T>());
  std::fill(cs + c0, cs + c1, T(0));
  bool packed = false;
#if TORCHATTN_BF16_DOT
  if constexpr (std::is_same_v<T, float>) {
    if (f.pairs) {
      std::fill(t.col_sum_round + c0, t.col_sum_round + c1, 0.f);
      if (band) {
        band_columns(f, t, j0, nk, c0, c1);
        scores_columns(
            f, t, k_tile, nk, c0, c1,
            StoreExp2Pairs<true>{
                t.m_run + c0, cm + c0, cs + c0, t.col_sum_round + c0, t.p_pairs + c0, BQ, t.band,
                c0});
      } else {
        scores_columns(
            f, t, k_tile, nk, c0, c1,
            StoreExp2Pairs<>{
                t.m_run + c0, cm + c0, cs + c0, t.col_sum_round + c0, t.p_pairs + c0, BQ});
      }
      packed = true;
    }
  }
#endif
  TORCH_INTERNAL_ASSERT(packed || (!band && c0 == 0 && c1 == t.nq_pad));
  // Low precision (the float32 path): the epilogue rounds the weights as it stores them and
  // sums them both ways, which saves accumulate_values' pass over the tile.
  const bool rounds = !packed && t.l_round != nullptr;
  if (rounds) {
    std::fill(t.col_sum_round, t.col_sum_round + t.nq_pad, T(0));
    scores_columns(
        f, t, k_tile, nk, 0, t.nq_pad,
        StoreExp2Columns<T, /*kRound=*/true>{
            t.m_run, cm, cs, t.col_sum_round, f.args.low_precision == at::kHalf});
  } else if (!packed) {
    scores_columns(f, t, k_tile, nk, 0, t.nq_pad, StoreExp2Columns<T>{t.m_run, cm, cs});
  }
  for (int64_t c = c0; c < c1; c += W) {
    bool exceeds = false;
    for (int64_t r = 0; r < W; ++r) {
      exceeds = exceeds || !(cm[c + r] <= t.m_run[c + r] + static_cast<T>(kLazyRescale));
    }
    if (exceeds) {
      scores_columns(f, t, k_tile, nk, c, c + W);
      if (band) {
        modify_transposed(
            f.mods, t.st + c, BQ, nk, std::min(t.nq, c + W) - c, W, static_cast<const T*>(nullptr),
            t.b, t.h, t.i0 + c, j0);
      }
      max_strip(t.st, nk, c, cm);
      softmax_strip(t, nk, c);
#if TORCHATTN_BF16_DOT
      if constexpr (std::is_same_v<T, float>) {
        if (packed) {
          pack_pairs_from_floats(t.st + c, nk, W, BQ, t.p_pairs + c, BQ, t.l_round + c);
        }
      }
#endif
      if (rounds) {
        round_and_sum_columns(t.st + c, nk, W, BQ, t.l_round + c, f.args.low_precision);
      }
    } else {
      (Vec::loadu(t.l_run + c) + Vec::loadu(cs + c)).store(t.l_run + c);
      if (packed || rounds) {
        (Vec::loadu(t.l_round + c) + Vec::loadu(t.col_sum_round + c)).store(t.l_round + c);
      }
    }
  }
  return packed || rounds;
}

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
