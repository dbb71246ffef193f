#pragma once

// The micro-kernel's epilogues beyond storing: the forward's column maxima and lazily
// rescaled exponentials, backward's probabilities and dS = P (dP - delta), each computed on a
// block of C while it is still in registers.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/exp2.h"
#include "ops/cpu/flash_attention/low_precision.h"
#include "ops/cpu/flash_attention/micro_kernel.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

/// Stores the block and folds its column maxima into colmax[col]: the forward's S^T tile and
/// its per-query maxima in one pass, while the block is in registers.
template <typename T>
struct StoreAndColumnMax {
  T* colmax;

  template <int MR, int NV>
  void operator()(
      Vectorized<T> (&acc)[MR][NV], T* c, int64_t ldc, int64_t row0, int64_t col0) const {
    using Vec = Vectorized<T>;
    constexpr int W = Vec::size();
    StoreC{}(acc, c, ldc, row0, col0);
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      Vec m = acc[0][n];
#pragma GCC unroll 8
      for (int i = 1; i < MR; ++i) {
        m = max_fast(m, acc[i][n]);
      }
      T* p = colmax + col0 + n * W;
      max_fast(Vec::loadu(p), m).store(p);
    }
  }
};

/// Stores exp(C - m_ref[col]) and folds the block's column maxima (of C) into colmax and its
/// column sums (of the stored values) into colsum: the forward's lazily rescaled softmax.
/// kRound (low precision on the float32 path): the values are stored rounded to bfloat16 or
/// float16 (`half`); colsum sums them before rounding and colsum_round after.
template <typename T, bool kRound = false>
struct StoreExp2Columns {
  const T* m_ref;
  T* colmax;
  T* colsum;
  T* colsum_round = nullptr;
  bool half = false;

  template <int MR, int NV>
  void operator()(
      Vectorized<T> (&acc)[MR][NV], T* c, int64_t ldc, int64_t /*row0*/, int64_t col0) const {
    using Vec = Vectorized<T>;
    constexpr int W = Vec::size();
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      const int64_t col = col0 + n * W;
      const Vec ref = Vec::loadu(m_ref + col);
      Vec mx = acc[0][n];
      Vec sum(T(0)), sum_round(T(0));
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        mx = max_fast(mx, acc[i][n]);
        const Vec e = exp_minus(acc[i][n], ref);
        sum = sum + e;
        if constexpr (kRound) {
          const Vec r = round_lanes(e, half);
          r.store(c + i * ldc + n * W);
          sum_round = sum_round + r;
        } else {
          e.store(c + i * ldc + n * W);
        }
      }
      max_fast(Vec::loadu(colmax + col), mx).store(colmax + col);
      (Vec::loadu(colsum + col) + sum).store(colsum + col);
      if constexpr (kRound) {
        (Vec::loadu(colsum_round + col) + sum_round).store(colsum_round + col);
      }
    }
  }
};

/// Stores exp2((C - max[row]) * log2(e) - log2_sum[row]): the backward's probabilities from
/// the forward's row statistics (log2_sum = log_sum * log2(e)).
template <typename T>
struct StoreExp2 {
  const T* max;
  const T* log2_sum;

  template <int MR, int NV>
  void operator()(
      Vectorized<T> (&acc)[MR][NV], T* c, int64_t ldc, int64_t row0, int64_t /*col0*/) const {
    using Vec = Vectorized<T>;
    constexpr int W = Vec::size();
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const Vec m(max[row0 + i]), ls(log2_sum[row0 + i]);
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        probability(acc[i][n], m, ls).store(c + i * ldc + n * W);
      }
    }
  }
};

/// Stores P * (C - delta[row]) with P laid out as C (same ld): the softmax gradient dS from
/// dP = dO Vᵀ while dP is in registers.
template <typename T>
struct StoreSoftmaxGrad {
  const T* probs;
  const T* delta;

  template <int MR, int NV>
  void operator()(
      Vectorized<T> (&acc)[MR][NV], T* c, int64_t ldc, int64_t row0, int64_t col0) const {
    using Vec = Vectorized<T>;
    constexpr int W = Vec::size();
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const Vec dl(delta[row0 + i]);
      const T* pr = probs + (row0 + i) * ldc + col0;
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        (Vec::loadu(pr + n * W) * (acc[i][n] - dl)).store(c + i * ldc + n * W);
      }
    }
  }
};

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
