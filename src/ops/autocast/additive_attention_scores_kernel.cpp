// CPU autocast kernel of additive_attention_scores: a lower-precision op under LibTorch's CPU
// autocast, like scaled_dot_product_attention (ops/autocast/scaled_dot_product_attention_
// kernel.cpp). query, key and score_weight are cast to the autocast dtype.

#include <torchattn/ops/additive_attention_scores.h>

#include "detail/compat.h"
#include "ops/registration.h"

#include <torch/library.h>

namespace torchattn::ops {

namespace {

torch::Tensor additive_scores_autocast(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& score_weight) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  using torchattn::detail::autocast_cpu;
  return torchattn::ops::additive_attention_scores(
      autocast_cpu(query), autocast_cpu(key), autocast_cpu(score_weight));
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, AutocastCPU, m) {
  m.impl("additive_attention_scores", TORCH_FN(torchattn::ops::additive_scores_autocast));
}

TORCHATTN_REGISTRATION_ANCHOR(additive_attention_scores_autocast_registered)
