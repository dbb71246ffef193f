#pragma once

// Rounding float32 values to bfloat16 or float16 and back, to nearest even, as a conversion to
// the dtype and back would: the fused kernel's P and dS (low_precision.h) and the decoding
// kernel's P (flash_decoding/rows.h) before their products, the same on every vector build.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/common.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

/// Rounds x[0, n) in place to the nearest value of `dtype` (bfloat16 or float16; nothing for
/// Undefined), to nearest even, as a conversion to that dtype and back would.
template <typename T>
inline void round_to(T* x, int64_t n, at::ScalarType dtype) {
  if constexpr (std::is_same_v<T, float>) {
    if (dtype == at::kBFloat16) {
      // The high 16 bits, rounded to nearest even on the low 16; NaN stays NaN (a payload in
      // the low bits alone would round to inf).
      for (int64_t i = 0; i < n; ++i) {
        uint32_t u;
        std::memcpy(&u, x + i, sizeof(u));
        const uint32_t r = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
        float f;
        std::memcpy(&f, &r, sizeof(f));
        x[i] = x[i] != x[i] ? x[i] : f;
      }
    } else if (dtype == at::kHalf) {
      int64_t i = 0;
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
      for (; i + 8 <= n; i += 8) {
        const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_ps(x + i, _mm256_cvtph_ps(h));
      }
#endif
      for (; i < n; ++i) {
        // c10's bit-level conversions: c10::Half's operators use F16C intrinsics on LibTorch
        // 2.x, declared before this file's target switch.
        x[i] = c10::detail::fp16_ieee_to_fp32_value(c10::detail::fp16_ieee_from_fp32_value(x[i]));
      }
    }
  } else {
    (void)x, (void)n, (void)dtype;
  }
}

/// Rounds `rows` rows of `cols` elements, `ld` apart, as round_to.
template <typename T>
inline void round_rows(T* x, int64_t rows, int64_t cols, int64_t ld, at::ScalarType dtype) {
  if (dtype == at::ScalarType::Undefined) {
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    round_to(x + r * ld, cols, dtype);
  }
}

/// x rounded to bfloat16 (`half` false) or float16, to nearest even, lane by lane.
template <typename T>
inline Vectorized<T> round_lanes(const Vectorized<T>& x, bool half) {
#if defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float>) {
    const __m512 v = x;
    if (half) {
      return _mm512_cvtph_ps(_mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    const __m512i u = _mm512_castps_si512(v);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_and_si512(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb),
        _mm512_set1_epi32(static_cast<int>(0xffff0000u)));
    // NaN stays NaN (a payload in the low bits alone would round to inf).
    const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    return _mm512_mask_blend_ps(nan, _mm512_castsi512_ps(r), v);
  }
#elif defined(CPU_CAPABILITY_AVX2)
  if constexpr (std::is_same_v<T, float>) {
    const __m256 v = x;
    if (half) {
      return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
    const __m256i u = _mm256_castps_si256(v);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
    const __m256i r = _mm256_and_si256(
        _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb),
        _mm256_set1_epi32(static_cast<int>(0xffff0000u)));
    return _mm256_blendv_ps(_mm256_castsi256_ps(r), v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
#endif
  T lanes[Vectorized<T>::size()];
  x.store(lanes);
  round_to(lanes, Vectorized<T>::size(), half ? at::kHalf : at::kBFloat16);
  return Vectorized<T>::loadu(lanes);
}

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
