#pragma once

// The small GEMM of the fused attention kernel: a register-blocked micro-kernel whose
// epilogue (a functor) does something with each finished block of C while it is in registers,
// and the panel loops around it.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/common.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

/// What a micro-kernel does with its finished block of C: here, store it. Other epilogues
/// (below) also work on the block while it is still in registers; row0 and col0 place it in C.
struct StoreC {
  template <typename V, int MR, int NV>
  void operator()(
      V (&acc)[MR][NV], typename V::value_type* c, int64_t ldc, int64_t /*row0*/,
      int64_t /*col0*/) const {
    constexpr int W = V::size();
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        acc[i][n].store(c + i * ldc + n * W);
      }
    }
  }
};

/// Stores acc into C and zeroes it: the running total of micro_kernel's earlier K chunks.
template <int MR, int NV, typename V>
inline void store_block(V (&acc)[MR][NV], typename V::value_type* c, int64_t ldc) {
  constexpr int W = V::size();
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      acc[i][n].store(c + i * ldc + n * W);
      acc[i][n] = V(typename V::value_type(0));
    }
  }
}

// C[MR, NV*W] (+)= A[MR, K] B[K, NV*W], with A(i, k) = a[i * a_rs + k * a_ks] (so A may be a
// transposed view) and row k of B at b + k * ldb; `epi` then writes the block.
template <typename T, int MR, int NV, typename Epi>
inline void micro_kernel(
    int64_t K, const T* a, int64_t a_rs, int64_t a_ks, const T* b, int64_t ldb, T* c, int64_t ldc,
    bool accumulate, const Epi& epi, int64_t row0, int64_t col0) {
  using Vec = Vectorized<T>;
  constexpr int W = Vec::size();
  Vec acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      acc[i][n] = accumulate ? Vec::loadu(c + i * ldc + n * W) : Vec(T(0));
    }
  }
  for (int64_t k0 = 0; k0 < K; k0 += kChunkK) {
    const int64_t k_end = std::min(K, k0 + kChunkK);
    if (k0 > 0) {
      // The running total waits in C while this chunk sums from zero (two-level summation,
      // as BLAS kernels sum per K block): a long dot product (E = 4096) then errs as a
      // 256-term sum plus a short one, not as one 4096-term chain.
      store_block<MR, NV>(acc, c, ldc);
    }
    for (int64_t k = k0; k < k_end; ++k) {
      const T* bk = b + k * ldb;
      const T* ak = a + k * a_ks;
      Vec bv[NV];
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        bv[n] = Vec::loadu(bk + n * W);
      }
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
        const Vec ai(ak[i * a_rs]);
#pragma GCC unroll 4
        for (int n = 0; n < NV; ++n) {
          acc[i][n] = at::vec::fmadd(ai, bv[n], acc[i][n]);
        }
      }
    }
    if (k0 > 0) {
#pragma GCC unroll 8
      for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
        for (int n = 0; n < NV; ++n) {
          acc[i][n] = acc[i][n] + Vec::loadu(c + i * ldc + n * W);
        }
      }
    }
  }
  epi(acc, c, ldc, row0, col0);
}

template <typename T, int NV, typename Epi, int MR = kMaxRows - 1>
inline void tail_rows(
    int64_t rows, int64_t K, const T* a, int64_t a_rs, int64_t a_ks, const T* b, int64_t ldb, T* c,
    int64_t ldc, bool accumulate, const Epi& epi, int64_t row0, int64_t col0) {
  if constexpr (MR >= 1) {
    if (rows == MR) {
      micro_kernel<T, MR, NV>(K, a, a_rs, a_ks, b, ldb, c, ldc, accumulate, epi, row0, col0);
    } else {
      tail_rows<T, NV, Epi, MR - 1>(
          rows, K, a, a_rs, a_ks, b, ldb, c, ldc, accumulate, epi, row0, col0);
    }
  }
}

template <typename T, int NV, typename Epi>
void column_panel(
    int64_t M, int64_t K, const T* a, int64_t a_rs, int64_t a_ks, const T* b, int64_t ldb, T* c,
    int64_t ldc, bool accumulate, const Epi& epi, int64_t col0) {
  int64_t i = 0;
  for (; i + kMaxRows <= M; i += kMaxRows) {
    micro_kernel<T, kMaxRows, NV>(
        K, a + i * a_rs, a_rs, a_ks, b, ldb, c + i * ldc, ldc, accumulate, epi, i, col0);
  }
  if (i < M) {
    tail_rows<T, NV>(
        M - i, K, a + i * a_rs, a_rs, a_ks, b, ldb, c + i * ldc, ldc, accumulate, epi, i, col0);
  }
}

template <typename T, typename Epi, int NV = kMaxVecs>
inline void dispatch_panel(
    int nv, int64_t M, int64_t K, const T* a, int64_t a_rs, int64_t a_ks, const T* b, int64_t ldb,
    T* c, int64_t ldc, bool accumulate, const Epi& epi, int64_t col0) {
  if constexpr (NV >= 1) {
    if (nv == NV) {
      column_panel<T, NV>(M, K, a, a_rs, a_ks, b, ldb, c, ldc, accumulate, epi, col0);
    } else {
      dispatch_panel<T, Epi, NV - 1>(
          nv, M, K, a, a_rs, a_ks, b, ldb, c, ldc, accumulate, epi, col0);
    }
  }
}

/// Columns per B panel: the width of one micro-kernel call.
template <typename T>
constexpr int64_t panel_width() {
  return kMaxVecs * Vectorized<T>::size();
}

/// Keys per forward tile: the rows of S^T, a whole number of micro-kernel row blocks.
constexpr int64_t forward_block_k() {
  return kBlockKTarget / kMaxRows * kMaxRows;
}

/// Keys per tile: a whole number of panels, since tiles index the panel-packed keys.
template <typename T>
constexpr int64_t block_k() {
  return kBlockKTarget / panel_width<T>() * panel_width<T>();
}

// C[M, N] (+)= A[M, K] B[K, N]; N is a multiple of the vector width (callers pad). B is read
// in panels of panel_width() columns: element (k, n) at
// b + (n / panel_width) * b_panel + k * ldb + n % panel_width. A row-major B has
// b_panel = panel_width; a panel-packed one (each panel's K rows contiguous) has
// b_panel = K * panel_width and ldb = panel_width, so a panel streams through L1 whatever
// the length of the rows it came from.
template <typename T, typename Epi = StoreC>
void gemm(
    int64_t M, int64_t N, int64_t K, const T* a, int64_t a_rs, int64_t a_ks, const T* b,
    int64_t ldb, int64_t b_panel, T* c, int64_t ldc, bool accumulate, const Epi& epi = {}) {
  constexpr int W = Vectorized<T>::size();
  TORCH_INTERNAL_ASSERT(N % W == 0, "gemm: N=", N, " is not a multiple of ", W);
  const int64_t vecs = N / W;
  for (int64_t v0 = 0; v0 < vecs; v0 += kMaxVecs) {
    const int nv = static_cast<int>(std::min<int64_t>(kMaxVecs, vecs - v0));
    dispatch_panel<T>(
        nv, M, K, a, a_rs, a_ks, b + (v0 / kMaxVecs) * b_panel, ldb, c + v0 * W, ldc, accumulate,
        epi, v0 * W);
  }
}

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
