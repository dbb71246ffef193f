#pragma once

// FlashAttention's rule for bfloat16 and float16 results: against the math path in float64 on
// the same (rounded) inputs, a fused kernel's error is at most 2x the error of the math path
// run in the same low precision, plus FlashAttention's own allowance for rounding the result
// to the dtype: twice the error of (ref + 0.3) - 0.3 in the dtype (its tests' fwd_atol and
// dq_atol). Without it, a tensor of a few dozen elements fails by luck: the math path's
// largest error can fall below half an ulp.

#include "support/capabilities.h"

#include <torchattn/ops/attention.h>

#include <torch/torch.h>

#include <catch2/catch_test_macros.hpp>

namespace torchattn::testing {

/// The largest |got - want| (0 for empty tensors).
inline double max_error(const torch::Tensor& got, const torch::Tensor& want) {
  return got.numel() == 0 ? 0.0 : (got.to(torch::kDouble) - want).abs().max().item<double>();
}

/// FlashAttention's rounding allowance for a result near `ref` in `dtype`: 2 |(r + 0.3) - 0.3 - r|
/// at most, with r = ref rounded to the dtype and the sums in the dtype.
inline double rounding_allowance(const torch::Tensor& ref, torch::ScalarType dtype) {
  if (ref.numel() == 0) {
    return 0.0;
  }
  const auto r = ref.to(dtype);
  return 2.0 * ((r + 0.3) - 0.3 - r).abs().max().item<double>();
}

/// FlashAttention's rule for one result: |fused - ref| <= 2 |math - ref| + the rounding
/// allowance, each the largest over the tensor; fused is in `dtype`.
inline void require_rule(
    const torch::Tensor& fused, const torch::Tensor& math, const torch::Tensor& ref,
    torch::ScalarType dtype) {
  REQUIRE(fused.scalar_type() == dtype);
  const double err_fused = max_error(fused, ref);
  const double err_math = max_error(math, ref);
  const double allowance = rounding_allowance(ref, dtype);
  CAPTURE(err_fused, err_math, allowance);
  REQUIRE(err_fused <= 2.0 * err_math + allowance);
}

/// FlashAttention's rule for each result of run(dtype, need_weights) (the output, then the
/// gradients) on every low-precision build: the fused kernel (need_weights false) and the
/// math path (true) in `dtype`, against the math path in float64.
template <typename Run>
inline void require_rule_on_every_build(torch::ScalarType dtype, Run&& run) {
  for (const auto& cap : low_precision_capabilities()) {
    torchattn::ops::set_kernel_capability(cap);
    const auto ref = run(torch::kDouble, true);
    const auto math = run(dtype, true);
    const auto fused = run(dtype, false);
    for (size_t i = 0; i < ref.size(); ++i) {
      CAPTURE(cap, i);
      require_rule(fused[i], math[i], ref[i], dtype);
    }
  }
}

} // namespace torchattn::testing
