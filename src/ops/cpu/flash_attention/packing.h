#pragma once

// Packing of operands into the layouts the micro-kernel reads: rows with zero padding,
// transposed panels, and rows that are used in place where they already fit.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/common.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

/// Calls fn(p) with p the data of `t` as const S*: T itself, or bfloat16 or float16 inputs,
/// which the packing below converts to T as it copies them.
template <typename T, typename Fn>
void with_data(const at::Tensor& t, int64_t offset, Fn&& fn) {
  switch (t.scalar_type()) {
    case at::kBFloat16:
      fn(t.template data_ptr<at::BFloat16>() + offset);
      break;
    case at::kHalf:
      fn(t.template data_ptr<at::Half>() + offset);
      break;
    default:
      fn(t.template data_ptr<T>() + offset);
  }
}

/// s as T. bfloat16 and float16 by c10's bit-level conversions: their conversion operators use
/// F16C intrinsics on LibTorch 2.x, from headers compiled before the target switch, which GCC
/// then refuses to inline here.
template <typename T, typename S>
inline T to_value(const S& s) {
  if constexpr (std::is_same_v<S, at::Half>) {
    return static_cast<T>(c10::detail::fp16_ieee_to_fp32_value(s.x));
  } else if constexpr (std::is_same_v<S, at::BFloat16>) {
    return static_cast<T>(c10::detail::f32_from_bits(s.x));
  } else {
    return static_cast<T>(s);
  }
}

/// d[0, n) = s[0, n) converted to T: vectorized for float16 (F16C) and bfloat16 (a shift)
/// to float32, element by element otherwise.
template <typename T, typename S>
inline void convert(const S* s, int64_t n, T* d) {
  int64_t i = 0;
  if constexpr (std::is_same_v<T, float> && std::is_same_v<S, at::BFloat16>) {
    // bfloat16 is the high half of a float32: widen and shift (the compiler vectorizes it).
    const auto* u = reinterpret_cast<const uint16_t*>(s);
    for (; i < n; ++i) {
      const uint32_t bits = static_cast<uint32_t>(u[i]) << 16;
      std::memcpy(d + i, &bits, sizeof(bits));
    }
    return;
  }
#if defined(CPU_CAPABILITY_AVX2) || defined(CPU_CAPABILITY_AVX512)
  if constexpr (std::is_same_v<T, float> && std::is_same_v<S, at::Half>) {
    for (; i + 8 <= n; i += 8) {
      _mm256_storeu_ps(
          d + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + i))));
    }
  }
#endif
  for (; i < n; ++i) {
    d[i] = to_value<T>(s[i]);
  }
}

/// dst[r, c] = src[r * rs + c * cs] for r < rows, c < cols, in a [rows, ld] buffer whose
/// columns [cols, ld) are zero; S converted to T (fast where rows are contiguous, cs = 1).
template <typename T, typename S>
void pack(
    const S* src, int64_t rows, int64_t cols, int64_t rs, int64_t cs, T* dst, int64_t ld,
    T mul = T(1)) {
  for (int64_t r = 0; r < rows; ++r) {
    T* d = dst + r * ld;
    const S* s = src + r * rs;
    if (cs == 1 && mul == T(1)) {
      convert(s, cols, d);
    } else if (cs == 1 && !std::is_same_v<S, T>) {
      convert(s, cols, d);
      for (int64_t c = 0; c < cols; ++c) {
        d[c] *= mul;
      }
    } else {
      for (int64_t c = 0; c < cols; ++c) {
        d[c] = to_value<T>(s[c * cs]) * mul;
      }
    }
    std::fill(d + cols, d + ld, T(0));
  }
}

/// The transpose of src [rows, cols] (element (r, c) at src[r * rs + c * cs]) in panels of
/// `pw` rows: dst[(r / pw) * cols * pw + c * pw + r % pw], zero for rows up to a multiple of pw;
/// S converted to T.
template <typename T, typename S>
void pack_transposed_panels(
    const S* src, int64_t rows, int64_t cols, int64_t rs, int64_t cs, T* dst, int64_t pw) {
  const int64_t panels = (rows + pw - 1) / pw;
  for (int64_t p = 0; p < panels; ++p) {
    T* panel = dst + p * cols * pw;
    const int64_t r0 = p * pw;
    const int64_t n = std::min(pw, rows - r0);
    for (int64_t c = 0; c < cols; ++c) {
      T* d = panel + c * pw;
      const S* s = src + r0 * rs + c * cs;
      for (int64_t r = 0; r < n; ++r) {
        d[r] = to_value<T>(s[r * rs]);
      }
      std::fill(d + n, d + pw, T(0));
    }
  }
}

/// Rows of a 2-D view (element (r, c) at src[r * rs + c * cs]) for a B operand: the view
/// itself when its rows are contiguous and a whole number of vectors long (and S is T), else a
/// zero-padded copy in `buf`. Returns the rows and sets `ld` to their stride.
template <typename T, typename S>
const T* rows_of(
    const S* src, int64_t rows, int64_t cols, int64_t rs, int64_t cs, std::unique_ptr<T[]>& buf,
    int64_t& ld) {
  constexpr int W = Vectorized<T>::size();
  if constexpr (std::is_same_v<S, T>) {
    if (cs == 1 && cols % W == 0) {
      ld = rs;
      return src;
    }
  }
  ld = round_up(cols, W);
  buf.reset(new T[static_cast<size_t>(rows * ld)]);
  pack(src, rows, cols, rs, cs, buf.get(), ld);
  return buf.get();
}

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
