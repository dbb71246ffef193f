// Meta (shape-only) kernels of additive_attention_scores and its backward: the CPU kernels'
// checks, outputs without data.

#include "detail/checks.h"
#include "ops/registration.h"

#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

torch::Tensor additive_scores_meta(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& score_weight) {
  // query [..., Lq, D], key [..., Lk, D], score_weight [D] -> scores [..., Lq, Lk]
  torchattn::detail::check_additive_args(
      "torchattn::additive_attention_scores", query, key, score_weight);
  auto shape = query.sizes().vec();
  shape.back() = key.size(-2);
  return at::empty(shape, query.options());
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> additive_scores_backward_meta(
    const torch::Tensor& grad_scores, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& score_weight) {
  torchattn::detail::check_additive_backward_args(
      "torchattn::_additive_attention_scores_backward", grad_scores, query, key, score_weight);
  return {
      at::empty(query.sizes(), query.options()), at::empty(key.sizes(), key.options()),
      at::empty(score_weight.sizes(), score_weight.options())};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Meta, m) {
  m.impl("additive_attention_scores", TORCH_FN(torchattn::ops::additive_scores_meta));
  m.impl(
      "_additive_attention_scores_backward",
      TORCH_FN(torchattn::ops::additive_scores_backward_meta));
}

TORCHATTN_REGISTRATION_ANCHOR(additive_attention_scores_meta_registered)
