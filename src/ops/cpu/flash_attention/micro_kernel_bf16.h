#pragma once

// The fused attention kernel's GEMM on bfloat16 operands with vdpbf16ps (AVX512-BF16), for the
// avx512_bf16 build: the register blocking and epilogues of micro_kernel.h, with each
// step taking two terms of K at once. Products of two bfloat16 numbers are exact in float32;
// vdpbf16ps adds the pair and the accumulator in float32.
//
// Operands are "pairs": 32-bit words, each two bfloat16 numbers adjacent in K (the low half the
// even k). A(i, kp) = a[i * a_rs + kp * a_ks] holds A(i, 2kp) and A(i, 2kp + 1); row kp of B
// holds B(2kp, n) and B(2kp + 1, n) in its word n. An odd K has a zero last half.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/micro_kernel.h"

#if defined(TORCHATTN_CPU_AVX512_BF16)
#define TORCHATTN_BF16_DOT 1
#include "ops/cpu/capability.h"
#include "ops/cpu/flash_attention/micro_kernel_tiles.h"
#else
#define TORCHATTN_BF16_DOT 0
#endif

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

#if TORCHATTN_BF16_DOT

/// C[MR, NV*16] (+)= scale * A[MR, K] B[K, NV*16] on pairs (K2 = ceil(K / 2) words), then
/// `epi` writes the block, as micro_kernel.
template <int MR, int NV, typename Epi>
inline void micro_kernel_pairs(
    int64_t K2, const uint32_t* a, int64_t a_rs, int64_t a_ks, const uint32_t* b, int64_t ldb,
    float* c, int64_t ldc, bool accumulate, float scale, const Epi& epi, int64_t row0,
    int64_t col0) {
  using Vec = Vectorized<float>;
  constexpr int W = 16;
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      acc[i][n] = _mm512_setzero_ps();
    }
  }
  for (int64_t kp = 0; kp < K2; ++kp) {
    const uint32_t* bk = b + kp * ldb;
    const uint32_t* ak = a + kp * a_ks;
    __m512i bv[NV];
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      bv[n] = _mm512_loadu_si512(bk + n * W);
    }
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
      const __m512i ai = _mm512_set1_epi32(static_cast<int>(ak[i * a_rs]));
#pragma GCC unroll 4
      for (int n = 0; n < NV; ++n) {
        acc[i][n] = _mm512_dpbf16_ps(acc[i][n], (__m512bh)ai, (__m512bh)bv[n]);
      }
    }
  }
  Vec out[MR][NV];
  const __m512 s = _mm512_set1_ps(scale);
#pragma GCC unroll 8
  for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
    for (int n = 0; n < NV; ++n) {
      __m512 v = scale == 1.0f ? acc[i][n] : _mm512_mul_ps(acc[i][n], s);
      if (accumulate) {
        v = _mm512_add_ps(v, _mm512_loadu_ps(c + i * ldc + n * W));
      }
      out[i][n] = Vec(v);
    }
  }
  epi(out, c, ldc, row0, col0);
}

template <int NV, typename Epi, int MR = kMaxRows - 1>
inline void tail_rows_pairs(
    int64_t rows, int64_t K2, const uint32_t* a, int64_t a_rs, int64_t a_ks, const uint32_t* b,
    int64_t ldb, float* c, int64_t ldc, bool accumulate, float scale, const Epi& epi, int64_t row0,
    int64_t col0) {
  if constexpr (MR >= 1) {
    if (rows == MR) {
      micro_kernel_pairs<MR, NV>(
          K2, a, a_rs, a_ks, b, ldb, c, ldc, accumulate, scale, epi, row0, col0);
    } else {
      tail_rows_pairs<NV, Epi, MR - 1>(
          rows, K2, a, a_rs, a_ks, b, ldb, c, ldc, accumulate, scale, epi, row0, col0);
    }
  }
}

template <int NV, typename Epi>
void column_panel_pairs(
    int64_t M, int64_t K2, const uint32_t* a, int64_t a_rs, int64_t a_ks, const uint32_t* b,
    int64_t ldb, float* c, int64_t ldc, bool accumulate, float scale, const Epi& epi,
    int64_t col0) {
  int64_t i = 0;
  for (; i + kMaxRows <= M; i += kMaxRows) {
    micro_kernel_pairs<kMaxRows, NV>(
        K2, a + i * a_rs, a_rs, a_ks, b, ldb, c + i * ldc, ldc, accumulate, scale, epi, i, col0);
  }
  if (i < M) {
    tail_rows_pairs<NV>(
        M - i, K2, a + i * a_rs, a_rs, a_ks, b, ldb, c + i * ldc, ldc, accumulate, scale, epi, i,
        col0);
  }
}

template <typename Epi, int NV = kMaxVecs>
inline void dispatch_panel_pairs(
    int nv, int64_t M, int64_t K2, const uint32_t* a, int64_t a_rs, int64_t a_ks, const uint32_t* b,
    int64_t ldb, float* c, int64_t ldc, bool accumulate, float scale, const Epi& epi,
    int64_t col0) {
  if constexpr (NV >= 1) {
    if (nv == NV) {
      column_panel_pairs<NV>(M, K2, a, a_rs, a_ks, b, ldb, c, ldc, accumulate, scale, epi, col0);
    } else {
      dispatch_panel_pairs<Epi, NV - 1>(
          nv, M, K2, a, a_rs, a_ks, b, ldb, c, ldc, accumulate, scale, epi, col0);
    }
  }
}

/// C[M, N] (+)= scale * A[M, K] B[K, N] on pairs, as gemm: N a multiple of 16, B in panels of
/// panel_width<float>() words, `b_panel` words apart. On AMX tiles where the amx capability
/// runs (micro_kernel_tiles.h), else by vdpbf16ps.
template <typename Epi = StoreC>
void gemm_pairs(
    int64_t M, int64_t N, int64_t K2, const uint32_t* a, int64_t a_rs, int64_t a_ks,
    const uint32_t* b, int64_t ldb, int64_t b_panel, float* c, int64_t ldc, bool accumulate,
    float scale = 1.0f, const Epi& epi = {}) {
  constexpr int W = 16;
  TORCH_INTERNAL_ASSERT(N % W == 0, "gemm_pairs: N=", N, " is not a multiple of ", W);
  switch (tile_path()) {
    case TilePath::amx:
      gemm_pairs_tiles<AmxTiles>(
          M, N, K2, a, a_rs, a_ks, b, ldb, b_panel, c, ldc, accumulate, scale, epi);
      return;
    case TilePath::emulated:
      gemm_pairs_tiles<EmulatedTiles>(
          M, N, K2, a, a_rs, a_ks, b, ldb, b_panel, c, ldc, accumulate, scale, epi);
      return;
    case TilePath::none:
      break;
  }
  const int64_t vecs = N / W;
  for (int64_t v0 = 0; v0 < vecs; v0 += kMaxVecs) {
    const int nv = static_cast<int>(std::min<int64_t>(kMaxVecs, vecs - v0));
    dispatch_panel_pairs(
        nv, M, K2, a, a_rs, a_ks, b + (v0 / kMaxVecs) * b_panel, ldb, c + v0 * W, ldc, accumulate,
        scale, epi, v0 * W);
  }
}

#endif // TORCHATTN_BF16_DOT

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
