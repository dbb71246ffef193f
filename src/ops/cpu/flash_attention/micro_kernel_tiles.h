#pragma once

// gemm_pairs on AMX-BF16 tiles (tdpbf16ps), for the avx512_bf16 build on a CPU with AMX.
//
// The pairs layout of micro_kernel_bf16.h is AMX's: a B tile is 16 rows of pairs, each row 16
// words (B(2kp, n), B(2kp + 1, n)), as tdpbf16ps reads it. A tile holds 16 rows of A, each 16
// pairs along K. The driver:
// - stages A as [M, K2] rows of pairs, zero padded to whole tiles (the kernel's A operands are
//   mostly transposed views, a_rs = 1, which a tile cannot load);
// - loads B tiles straight from the panels, and stages only a partial last block of pairs;
// - computes 32 x 32 blocks of C in four accumulator tiles (2 x 2: tiles 0-3 C, 4-5 A, 6-7 B);
// - stores each block and runs the epilogue on it in runs of kMaxRows rows, as micro_kernel
//   does on registers, so every epilogue of the vector path serves the tiles unchanged.
//
// The tile instructions are inline assembly (no compiler flag, no target attribute): they run
// only after capability.cpp's arch_prctl granted the tile state. EmulatedTiles implements them
// in C++ with AMX's arithmetic, so that the driver is tested on CPUs without AMX
// (TORCHATTN_EMULATE_AMX=1; see capability.h).
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/micro_kernel.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

/// Rows, columns (words) and pairs of K in one tile.
constexpr int64_t kTile = 16;

/// AMX's tile configuration (palette 1): all eight tiles 16 rows of 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

#if defined(__x86_64__)
/// The tile instructions. `configure` loads the configuration at every call of the driver:
/// another library (oneDNN) may have loaded its own on this thread since.
struct AmxTiles {
  static void configure() {
    static const TileConfig config;
    asm volatile("ldtilecfg %0" ::"m"(config));
  }
  template <int t>
  static void zero() {
    asm volatile("tilezero %%tmm%c0" ::"i"(t));
  }
  template <int t>
  static void load(const void* p, int64_t stride_bytes) {
    asm volatile("tileloadd (%0,%1,1), %%tmm%c2" ::"r"(p), "r"(stride_bytes), "i"(t) : "memory");
  }
  template <int t>
  static void store(void* p, int64_t stride_bytes) {
    asm volatile("tilestored %%tmm%c2, (%0,%1,1)" ::"r"(p), "r"(stride_bytes), "i"(t) : "memory");
  }
  /// tile c += tile a . tile b, on pairs of bfloat16.
  template <int c, int a, int b>
  static void dot() {
    asm volatile("tdpbf16ps %%tmm%c2, %%tmm%c1, %%tmm%c0" ::"i"(c), "i"(a), "i"(b));
  }
};
#endif

/// AMX's tiles in software, with tdpbf16ps's arithmetic: each product of two bfloat16 numbers
/// (exact in float32) added to the float32 accumulator in turn, low half first; inputs that are
/// subnormal count as zero (DAZ) and subnormal results flush to zero (FTZ).
struct EmulatedTiles {
  struct Tile {
    uint32_t w[kTile][kTile];
  };
  static Tile* tiles() {
    thread_local Tile t[8];
    return t;
  }
  static void configure() {}
  template <int t>
  static void zero() {
    std::memset(&tiles()[t], 0, sizeof(Tile));
  }
  template <int t>
  static void load(const void* p, int64_t stride_bytes) {
    for (int64_t r = 0; r < kTile; ++r) {
      std::memcpy(tiles()[t].w[r], static_cast<const char*>(p) + r * stride_bytes, 64);
    }
  }
  template <int t>
  static void store(void* p, int64_t stride_bytes) {
    for (int64_t r = 0; r < kTile; ++r) {
      std::memcpy(static_cast<char*>(p) + r * stride_bytes, tiles()[t].w[r], 64);
    }
  }
  static float widen(uint32_t half_bits) {
    uint32_t u = half_bits << 16;
    if ((u & 0x7f800000u) == 0) {
      u &= 0x80000000u; // DAZ
    }
    float f;
    std::memcpy(&f, &u, sizeof(f));
    return f;
  }
  static float flush(float x) {
    return std::fabs(x) < std::numeric_limits<float>::min() ? std::copysign(0.0f, x) : x;
  }
  template <int c, int a, int b>
  static void dot() {
    Tile& C = tiles()[c];
    const Tile& A = tiles()[a];
    const Tile& B = tiles()[b];
    for (int64_t m = 0; m < kTile; ++m) {
      for (int64_t n = 0; n < kTile; ++n) {
        float acc;
        std::memcpy(&acc, &C.w[m][n], sizeof(acc));
        for (int64_t k = 0; k < kTile; ++k) {
          acc = flush(acc + widen(A.w[m][k] & 0xffffu) * widen(B.w[k][n] & 0xffffu));
          acc = flush(acc + widen(A.w[m][k] >> 16) * widen(B.w[k][n] >> 16));
        }
        std::memcpy(&C.w[m][n], &acc, sizeof(acc));
      }
    }
  }
};

/// Runs `epi` on rows [r0, rows) of a stored block (tile rows of 2 kTile floats) in runs of MR
/// rows, scaled and added to C's old values as micro_kernel_pairs does; NV vectors per row.
template <int NV, typename Epi, int MR = kMaxRows>
inline void tile_epilogue(
    const float* block, int64_t rows, float* c, int64_t ldc, bool accumulate, float scale,
    const Epi& epi, int64_t row0, int64_t col0) {
  using Vec = Vectorized<float>;
  constexpr int W = Vec::size();
  int64_t r = 0;
  for (; r + MR <= rows; r += MR) {
    Vec out[MR][NV];
#pragma GCC unroll 8
    for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 2
      for (int n = 0; n < NV; ++n) {
        Vec v = Vec::loadu(block + (r + i) * 2 * kTile + n * W);
        if (scale != 1.0f) {
          v = v * Vec(scale);
        }
        if (accumulate) {
          v = v + Vec::loadu(c + (r + i) * ldc + n * W);
        }
        out[i][n] = v;
      }
    }
    epi(out, c + r * ldc, ldc, row0 + r, col0);
  }
  if constexpr (MR > 1) {
    if (r < rows) {
      // Fewer than MR rows left: the next smaller run takes them (row0 stays even for pairs).
      tile_epilogue<NV, Epi, MR - 1>(
          block + r * 2 * kTile, rows - r, c + r * ldc, ldc, accumulate, scale, epi, row0 + r,
          col0);
    }
  }
}

/// gemm_pairs' contract (micro_kernel_bf16.h) on tiles: C[M, N] (+)= scale * A[M, K] B[K, N],
/// A(i, kp) = a[i * a_rs + kp * a_ks], B in panels of panel_width<float>() words.
template <typename Tiles, typename Epi>
void gemm_pairs_tiles(
    int64_t M, int64_t N, int64_t K2, const uint32_t* a, int64_t a_rs, int64_t a_ks,
    const uint32_t* b, int64_t ldb, int64_t b_panel, float* c, int64_t ldc, bool accumulate,
    float scale, const Epi& epi) {
  constexpr int64_t T = kTile;
  constexpr int64_t PW = panel_width<float>();
  static_assert(PW % (2 * T) == 0, "panels hold whole pairs of tiles");
  const int64_t K2p = round_up(K2, T);
  thread_local std::vector<uint32_t> a_rows;
  thread_local std::vector<uint32_t> b_last;
  thread_local std::vector<float> block;
  a_rows.assign(static_cast<size_t>(round_up(M, 2 * T) * K2p), 0u);
  for (int64_t i = 0; i < M; ++i) {
    for (int64_t kp = 0; kp < K2; ++kp) {
      a_rows[static_cast<size_t>(i * K2p + kp)] = a[i * a_rs + kp * a_ks];
    }
  }
  block.resize(static_cast<size_t>(4 * T * T));
  b_last.resize(static_cast<size_t>(T * PW));
  const int64_t k_full = K2 / T * T; // pairs of K in whole tiles of B
  Tiles::configure();
  for (int64_t p0 = 0; p0 < N; p0 += PW) {
    const uint32_t* bp = b + p0 / PW * b_panel;
    const int64_t pn = std::min(PW, N - p0);
    if (k_full < K2) {
      std::fill(b_last.begin(), b_last.end(), 0u);
      for (int64_t kp = k_full; kp < K2; ++kp) {
        std::memcpy(
            &b_last[static_cast<size_t>((kp - k_full) * PW)], bp + kp * ldb,
            static_cast<size_t>(pn) * 4);
      }
    }
    for (int64_t i0 = 0; i0 < M; i0 += 2 * T) {
      const bool two_rows = i0 + T < M;
      const uint32_t* a0 = a_rows.data() + i0 * K2p;
      for (int64_t n0 = 0; n0 < pn; n0 += 2 * T) {
        const bool two_cols = n0 + T < pn;
        Tiles::template zero<0>();
        Tiles::template zero<1>();
        Tiles::template zero<2>();
        Tiles::template zero<3>();
        for (int64_t kk = 0; kk < K2p; kk += T) {
          const bool full = kk < k_full;
          const uint32_t* bk = full ? bp + kk * ldb + n0 : b_last.data() + n0;
          const int64_t b_stride = (full ? ldb : PW) * 4;
          Tiles::template load<4>(a0 + kk, K2p * 4);
          Tiles::template load<6>(bk, b_stride);
          Tiles::template dot<0, 4, 6>();
          if (two_cols) {
            Tiles::template load<7>(bk + T, b_stride);
            Tiles::template dot<1, 4, 7>();
          }
          if (two_rows) {
            Tiles::template load<5>(a0 + T * K2p + kk, K2p * 4);
            Tiles::template dot<2, 5, 6>();
            if (two_cols) {
              Tiles::template dot<3, 5, 7>();
            }
          }
        }
        float* blk = block.data();
        Tiles::template store<0>(blk, 2 * T * 4);
        Tiles::template store<1>(blk + T, 2 * T * 4);
        Tiles::template store<2>(blk + 2 * T * T, 2 * T * 4);
        Tiles::template store<3>(blk + 2 * T * T + T, 2 * T * 4);
        const int64_t rows = std::min(2 * T, M - i0);
        float* cb = c + i0 * ldc + p0 + n0;
        if (two_cols) {
          tile_epilogue<2>(blk, rows, cb, ldc, accumulate, scale, epi, i0, p0 + n0);
        } else {
          tile_epilogue<1>(blk, rows, cb, ldc, accumulate, scale, epi, i0, p0 + n0);
        }
      }
    }
  }
}

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
