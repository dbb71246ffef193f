#pragma once

// bfloat16 operands of the fused attention kernel as pairs (micro_kernel_bf16.h): 32-bit words,
// each two bfloat16 numbers adjacent in K, the low half the even k. pack_pairs makes them from
// bfloat16 tensors (or float32 views of bfloat16 numbers) in any layout; the avx512_bf16 build
// does the common layouts in vectors (rows interleaved, or 16 x 16 blocks of words transposed
// in registers), and packs float32 tiles (P, dS) rounded to nearest even.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/micro_kernel_bf16.h"

#include <algorithm>
#include <cstring>

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

/// bfloat16 bits of x, rounded to nearest even, as c10::BFloat16 (and the other builds'
/// round_to) round it; NaN stays NaN.
inline uint16_t bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, sizeof(u));
  if (x != x) {
    return static_cast<uint16_t>((u >> 16) | 0x40u);
  }
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/// The word of the pair (lo, hi).
inline uint32_t pair_of(float lo, float hi) {
  return static_cast<uint32_t>(bf16_bits(lo)) | (static_cast<uint32_t>(bf16_bits(hi)) << 16);
}

/// The pair of bfloat16 values lo, hi as a word.
inline uint32_t pair_of(at::BFloat16 lo, at::BFloat16 hi) {
  return static_cast<uint32_t>(lo.x) | (static_cast<uint32_t>(hi.x) << 16);
}

#if TORCHATTN_BF16_DOT

/// Words (lo[c], hi[c]) for c < 16: two rows of floats rounded to nearest even and interleaved.
inline __m512i pairs16(const float* lo, const float* hi) {
  const __m512i l = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(lo)));
  const __m512i h = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(hi)));
  return _mm512_or_si512(l, _mm512_slli_epi32(h, 16));
}

/// r[j] lane i becomes r[i] lane j: a 16 x 16 block of words transposed in registers
/// (interleave words, then 64-bit halves, within 128-bit lanes; then move the lanes).
inline void transpose_words_16x16(__m512i (&r)[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  // u[4g + k], lane l: rows 4g..4g+3 of column 4l + k.
  __m512i u[16];
  for (int g = 0; g < 4; ++g) {
    const __m512i* tg = t + 4 * g;
    u[4 * g] = _mm512_unpacklo_epi64(tg[0], tg[2]);
    u[4 * g + 1] = _mm512_unpackhi_epi64(tg[0], tg[2]);
    u[4 * g + 2] = _mm512_unpacklo_epi64(tg[1], tg[3]);
    u[4 * g + 3] = _mm512_unpackhi_epi64(tg[1], tg[3]);
  }
  for (int k = 0; k < 4; ++k) {
    const __m512i v0 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0x88);
    const __m512i v1 = _mm512_shuffle_i32x4(u[k], u[4 + k], 0xdd);
    const __m512i w0 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0x88);
    const __m512i w1 = _mm512_shuffle_i32x4(u[8 + k], u[12 + k], 0xdd);
    r[k] = _mm512_shuffle_i32x4(v0, w0, 0x88);
    r[8 + k] = _mm512_shuffle_i32x4(v0, w0, 0xdd);
    r[4 + k] = _mm512_shuffle_i32x4(v1, w1, 0x88);
    r[12 + k] = _mm512_shuffle_i32x4(v1, w1, 0xdd);
  }
}

/// Pairs along contiguous rows, gathered across columns (the transposed layouts of pack_pairs,
/// rs = 1), 16 pairs of 16 columns at a time: row j of a block is the 16 words of column c + j
/// (load(c + j) gives them), transposed into 16 words of each of 16 pairs. Returns the first
/// pair not done (every whole block of 16 pairs; columns past the last 16 by load_word).
template <typename Load, typename LoadWord>
inline int64_t transposed_pairs(
    int64_t rows, int64_t cols, uint32_t* dst, int64_t ld, const Load& load,
    const LoadWord& load_word) {
  int64_t kp = 0;
  for (; kp * 2 + 32 <= rows; kp += 16) {
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) {
      __m512i r[16];
      for (int j = 0; j < 16; ++j) {
        r[j] = load(c + j, kp);
      }
      transpose_words_16x16(r);
      for (int k = 0; k < 16; ++k) {
        _mm512_storeu_si512(dst + (kp + k) * ld + c, r[k]);
      }
    }
    for (int k = 0; k < 16; ++k) {
      uint32_t* d = dst + (kp + k) * ld;
      for (int64_t cc = c; cc < cols; ++cc) {
        d[cc] = load_word(cc, kp + k);
      }
      std::fill(d + cols, d + ld, 0u);
    }
  }
  return kp;
}

/// dst[kp * ld + c] = the pair (src[2kp * rs + c], src[(2kp + 1) * rs + c]) of floats for
/// c < cols (a multiple of 16), kp < ceil(rows / 2); an odd row count pairs with zeros. Adds
/// each column's sum of the rounded values to col_sum[c], unless col_sum is null.
inline void pack_pairs_from_floats(
    const float* src, int64_t rows, int64_t cols, int64_t rs, uint32_t* dst, int64_t ld,
    float* col_sum) {
  static const float zeros[16] = {};
  for (int64_t c = 0; c < cols; c += 16) {
    __m512 sum = col_sum != nullptr ? _mm512_loadu_ps(col_sum + c) : _mm512_setzero_ps();
    for (int64_t kp = 0; kp * 2 < rows; ++kp) {
      const float* lo = src + 2 * kp * rs + c;
      const float* hi = 2 * kp + 1 < rows ? lo + rs : zeros;
      const __m512i l = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(lo)));
      const __m512i h = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(hi)));
      _mm512_storeu_si512(dst + kp * ld + c, _mm512_or_si512(l, _mm512_slli_epi32(h, 16)));
      sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(l, 16)));
      sum = _mm512_add_ps(sum, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
    }
    if (col_sum != nullptr) {
      _mm512_storeu_ps(col_sum + c, sum);
    }
  }
}

/// dst[r * ld + kp] = the pair (src[r * rs + 2kp], src[r * rs + 2kp + 1]) of floats, rounded,
/// for r < rows and kp < cols / 2 (cols a multiple of 16): pairs along each row.
inline void pack_row_pairs(
    const float* src, int64_t rows, int64_t cols, int64_t rs, uint32_t* dst, int64_t ld) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * rs;
    uint32_t* d = dst + r * ld;
    int64_t c = 0;
    for (; c + 32 <= cols; c += 32) {
      // 32 bfloat16 in order: word kp holds elements 2kp and 2kp + 1.
      const __m512bh b = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(s + c + 16), _mm512_loadu_ps(s + c));
      _mm512_storeu_si512(d + c / 2, (__m512i)b);
    }
    if (c < cols) {
      const __m256bh b = _mm512_cvtneps_pbh(_mm512_loadu_ps(s + c));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + c / 2), (__m256i)b);
    }
  }
}

#endif // TORCHATTN_BF16_DOT

/// pack_pairs of a float32 view whose values are bfloat16 numbers (bfloat16 inputs converted),
/// which convert exactly.
inline void pack_pairs(
    const float* src, int64_t rows, int64_t cols, int64_t rs, int64_t cs, uint32_t* dst,
    int64_t ld) {
  int64_t kp = 0;
#if TORCHATTN_BF16_DOT
  if (rs == 1) {
    // 32 floats of column c from row 2kp: 16 words in order (cvtne2ps: the second operand low).
    kp = transposed_pairs(
        rows, cols, dst, ld,
        [&](int64_t c, int64_t p) {
          const float* x = src + c * cs + 2 * p;
          return (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + 16), _mm512_loadu_ps(x));
        },
        [&](int64_t c, int64_t p) {
          return pair_of(src[c * cs + 2 * p], src[c * cs + 2 * p + 1]);
        });
  } else if (cs == 1) {
    for (; kp * 2 + 1 < rows; ++kp) {
      const float* lo = src + 2 * kp * rs;
      uint32_t* d = dst + kp * ld;
      int64_t c = 0;
      for (; c + 16 <= cols; c += 16) {
        _mm512_storeu_si512(d + c, pairs16(lo + c, lo + rs + c));
      }
      for (; c < cols; ++c) {
        d[c] = pair_of(lo[c], lo[rs + c]);
      }
      std::fill(d + cols, d + ld, 0u);
    }
  }
#endif
  // Any other layout, and an odd last row (paired with zero).
  for (; kp * 2 < rows; ++kp) {
    const float* lo = src + 2 * kp * rs;
    const float* hi = 2 * kp + 1 < rows ? lo + rs : nullptr;
    uint32_t* d = dst + kp * ld;
    for (int64_t c = 0; c < cols; ++c) {
      d[c] = pair_of(lo[c * cs], hi != nullptr ? hi[c * cs] : 0.0f);
    }
    std::fill(d + cols, d + ld, 0u);
  }
}

/// dst[kp * ld + c] = the pair (src(2kp, c), src(2kp + 1, c)) of a bfloat16 view (element (r, c)
/// at src[r * rs + c * cs]) for r < rows, c < cols, zero elsewhere up to c < ld; kp up to
/// ceil(rows / 2).
inline void pack_pairs(
    const at::BFloat16* src, int64_t rows, int64_t cols, int64_t rs, int64_t cs, uint32_t* dst,
    int64_t ld) {
  const at::BFloat16 zero(0.0f);
  int64_t kp = 0;
  if (rs == 1) {
    // Rows adjacent in memory (keys: the head dim): pair kp of column c is the 32-bit word at
    // src + c * cs + 2kp, as stored.
    auto word = [&](int64_t c, int64_t p) {
      uint32_t w;
      std::memcpy(&w, src + c * cs + 2 * p, sizeof(w));
      return w;
    };
#if TORCHATTN_BF16_DOT
    kp = transposed_pairs(
        rows, cols, dst, ld,
        [&](int64_t c, int64_t p) { return _mm512_loadu_si512(src + c * cs + 2 * p); }, word);
#endif
    for (; kp * 2 + 1 < rows; ++kp) {
      uint32_t* d = dst + kp * ld;
      for (int64_t c = 0; c < cols; ++c) {
        d[c] = word(c, kp);
      }
      std::fill(d + cols, d + ld, 0u);
    }
  }
#if TORCHATTN_BF16_DOT
  if (cs == 1) {
    // Columns adjacent (values: the value dim): two rows widened and interleaved, 16 columns
    // at a time.
    for (; kp * 2 + 1 < rows; ++kp) {
      const auto* lo = reinterpret_cast<const uint16_t*>(src + 2 * kp * rs);
      const auto* hi = reinterpret_cast<const uint16_t*>(src + (2 * kp + 1) * rs);
      uint32_t* d = dst + kp * ld;
      int64_t c = 0;
      for (; c + 16 <= cols; c += 16) {
        const __m512i l = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(lo + c)));
        const __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(hi + c)));
        _mm512_storeu_si512(d + c, _mm512_or_si512(l, _mm512_slli_epi32(h, 16)));
      }
      for (; c < cols; ++c) {
        d[c] = static_cast<uint32_t>(lo[c]) | (static_cast<uint32_t>(hi[c]) << 16);
      }
      std::fill(d + cols, d + ld, 0u);
    }
  }
#endif
  // Any other layout, and an odd last row (paired with zero).
  for (; kp * 2 < rows; ++kp) {
    const at::BFloat16* lo = src + 2 * kp * rs;
    const at::BFloat16* hi = 2 * kp + 1 < rows ? lo + rs : nullptr;
    uint32_t* d = dst + kp * ld;
    for (int64_t c = 0; c < cols; ++c) {
      d[c] = pair_of(lo[c * cs], hi != nullptr ? hi[c * cs] : zero);
    }
    std::fill(d + cols, d + ld, 0u);
  }
}

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
