#pragma once

// The math of scaled dot-product attention with the scale applied to the scores rather than
// to q: a second float64 formulation, whose difference from the first bounds what float64 can
// promise on ill-conditioned inputs (a -1e9 mask next to unit scores keeps ~7 digits).

#include <torch/torch.h>

#include <limits>

namespace torchattn::testing {

// query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev] -> out [..., Lq, Ev]; fully masked
// rows are zero, as in the library's math path.
inline torch::Tensor scale_after_attention(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& mask, bool causal, double scale) {
  auto s = q.matmul(k.transpose(-2, -1)) * scale;
  const double ninf = -std::numeric_limits<double>::infinity();
  if (mask.defined()) {
    s = mask.scalar_type() == torch::kBool ? s.masked_fill(mask.logical_not(), ninf) : s + mask;
  }
  if (causal) {
    s = s.masked_fill(torch::ones({s.size(-2), s.size(-1)}, torch::kBool).triu(1), ninf);
  }
  auto dead = s.eq(ninf).all(-1, /*keepdim=*/true);
  return torch::softmax(s.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0).matmul(v);
}

} // namespace torchattn::testing
