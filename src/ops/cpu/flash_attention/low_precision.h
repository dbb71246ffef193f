#pragma once

// bfloat16 and float16 through the fused kernel: the operands are converted to float32 (O(N E)
// work and memory beside the O(N^2 E) of the products), the kernel computes in float32 with
// FlashAttention's rounding, and the results are converted back.
//
// Where the kernel rounds, and why: the weights P = exp(s - m) are rounded to the input dtype
// before P V, and in backward P before dV = Pᵀ dO and dS before dQ = dS K and dK = dSᵀ Q. These
// are the products that FlashAttention (and any bf16/fp16 matrix unit: AMX, vdpbf16ps) takes
// in the input dtype; rounding them here gives the same results on every kernel build. Scores,
// the softmax statistics and every accumulator stay in float32; the statistics and backward's
// dS = P (dP - delta) use P before rounding, as FlashAttention's do.
//
// Two departures from FlashAttention, both for backward's delta = rowsum(dO * O), which must
// equal the sum of P dP over the row: an error there is the same in every dS of the row, and
// sums into dQ and dK undamped (it failed the 2x rule on short rows, by 2.2-2.5x):
// - the forward op returns its output in float32, unrounded (the public ops round it once);
// - the output is normalized by the sum of the rounded weights, not of the exact ones, so that
//   its weights sum to 1 as backward's P does: delta then differs from the sum of P dP by the
//   rounding of each weight times dP's deviation from its mean, not times dP itself.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/common.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

inline bool is_low_precision(at::ScalarType dtype) {
  return dtype == at::kBFloat16 || dtype == at::kHalf;
}

/// `t` in float32 where it is bfloat16 or float16, without materializing broadcast dims: an
/// expanded view [B, H, Lq, Lk] whose stride-0 dims repeat one stored slice converts only that
/// slice. Other tensors (bool masks, int64 indices, undefined ones) are returned as they are.
inline at::Tensor to_float(const at::Tensor& t) {
  if (!t.defined() || !is_low_precision(t.scalar_type())) {
    return t;
  }
  at::Tensor stored = t;
  for (int64_t d = 0; d < t.dim(); ++d) {
    if (t.stride(d) == 0 && t.size(d) > 1) {
      stored = stored.narrow(d, 0, 1);
    }
  }
  return stored.to(at::kFloat).expand(t.sizes());
}

/// The kernel's arguments for float32 operands converted from `dtype`: the score modifiers'
/// tensors in float32, and P and dS rounded to `dtype`.
inline FlashArgs float_args(const FlashArgs& args, at::ScalarType dtype) {
  FlashArgs a = args;
  a.low_precision = dtype;
  a.mods.alibi = to_float(a.mods.alibi);
  a.mods.table = to_float(a.mods.table);
  a.mods.bias = to_float(a.mods.bias);
  return a;
}

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

/// Rounds x[r * ld + c] in place to `dtype` (bfloat16 or float16) for r < rows, c < cols (a
/// multiple of the vector width), and adds each column's sum of the rounded values to
/// col_sum[c]: one pass over the forward's weights.
template <typename T>
inline void round_and_sum_columns(
    T* x, int64_t rows, int64_t cols, int64_t ld, T* col_sum, at::ScalarType dtype) {
  using Vec = Vectorized<T>;
  const bool half = dtype == at::kHalf;
  for (int64_t c = 0; c < cols; c += Vec::size()) {
    Vec sum = Vec::loadu(col_sum + c);
    for (int64_t r = 0; r < rows; ++r) {
      const Vec v = round_lanes(Vec::loadu(x + r * ld + c), half);
      v.store(x + r * ld + c);
      sum = sum + v;
    }
    sum.store(col_sum + c);
  }
}

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
