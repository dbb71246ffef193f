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

#include "ops/cpu/flash_attention/rounding.h"

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

/// Elements offset + i * stride of `dst`, a tensor's data of `dtype`, = src[i] for i < n: as
/// they are where dtype is T's, bfloat16 and float16 rounded to nearest even as Tensor::copy_
/// rounds (NaN stays NaN). Backward writes its gradients with it straight into their tensors,
/// without float32 copies to convert afterwards; callers look up dtype and data once per tile.
template <typename T>
inline void store_as(
    const T* src, int64_t n, at::ScalarType dtype, void* dst, int64_t offset, int64_t stride) {
  if (dtype == c10::CppTypeToScalarType<T>::value) {
    T* d = static_cast<T*>(dst) + offset;
    if (stride == 1) {
      std::copy(src, src + n, d);
      return;
    }
    for (int64_t i = 0; i < n; ++i) {
      d[i * stride] = src[i];
    }
    return;
  }
  TORCH_INTERNAL_ASSERT(
      (std::is_same_v<T, float>)&&is_low_precision(dtype), "store_as: float32 to ", dtype);
  if constexpr (std::is_same_v<T, float>) {
    auto* d = static_cast<uint16_t*>(dst) + offset;
    int64_t i = 0;
    if (dtype == at::kBFloat16) {
#if defined(CPU_CAPABILITY_AVX512)
      for (; stride == 1 && i + 16 <= n; i += 16) {
        const __m512 v = _mm512_loadu_ps(src + i);
        const __m512i high =
            _mm512_srli_epi32(_mm512_castps_si512(round_lanes(Vectorized<float>(v), false)), 16);
        const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
        const __m512i bits = _mm512_mask_blend_epi32(nan, high, _mm512_set1_epi32(0x7fc0));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(d + i), _mm512_cvtepi32_epi16(bits));
      }
#endif
      for (; i < n; ++i) {
        d[i * stride] = c10::detail::round_to_nearest_even(src[i]);
      }
      return;
    }
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
    for (; stride == 1 && i + 8 <= n; i += 8) {
      _mm_storeu_si128(
          reinterpret_cast<__m128i*>(d + i),
          _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    }
#endif
    for (; i < n; ++i) {
      d[i * stride] = c10::detail::fp16_ieee_from_fp32_value(src[i]);
    }
  }
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
