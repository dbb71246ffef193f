// CPU kernels of additive_attention_scores and _additive_attention_scores_backward: checks,
// then the vector build of the fused score (ops/cpu/additive_scores/kernel.cpp) that the CPU runs.

#include <torchattn/ops/additive_attention_scores.h>

#include "detail/checks.h"
#include "ops/cpu/additive_scores/kernel.h"
#include "ops/registration.h"

#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

/// Leading dims of [..., L, D] as one: the batch of the kernels' [N, L, D].
int64_t leading(const torch::Tensor& t) {
  return c10::multiply_integers(t.sizes().slice(0, t.dim() - 2));
}

/// The additive scores' shape [..., Lq, Lk] for query [..., Lq, D] and key [..., Lk, D].
std::vector<int64_t> scores_shape(const torch::Tensor& query, const torch::Tensor& key) {
  auto shape = query.sizes().vec();
  shape.back() = key.size(-2);
  return shape;
}

torch::Tensor additive_scores_cpu(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& score_weight) {
  // query [..., Lq, D], key [..., Lk, D], score_weight [D] -> scores [..., Lq, Lk]
  torchattn::detail::check_additive_args(
      "torchattn::additive_attention_scores", query, key, score_weight);
  const int64_t N = leading(query), Lq = query.size(-2), Lk = key.size(-2), D = query.size(-1);
  auto scores = torch::empty({N, Lq, Lk}, query.options());
  TORCHATTN_CAPABILITY_KERNEL(additive_scores_forward)
  (query.reshape({N, Lq, D}).contiguous(), key.reshape({N, Lk, D}).contiguous(),
   score_weight.contiguous(), scores);
  return scores.view(scores_shape(query, key));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> additive_scores_backward_cpu(
    const torch::Tensor& grad_scores, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& score_weight) {
  // grad_scores [..., Lq, Lk] -> grad_query [..., Lq, D], grad_key [..., Lk, D], grad_score_weight
  // [D]
  torchattn::detail::check_additive_backward_args(
      "torchattn::_additive_attention_scores_backward", grad_scores, query, key, score_weight);
  const int64_t N = leading(query), Lq = query.size(-2), Lk = key.size(-2), D = query.size(-1);
  auto gq = torch::empty({N, Lq, D}, query.options());
  auto gk = torch::empty({N, Lk, D}, key.options());
  auto gw = torch::empty({D}, score_weight.options());
  TORCHATTN_CAPABILITY_KERNEL(additive_scores_backward)
  (grad_scores.reshape({N, Lq, Lk}).contiguous(), query.reshape({N, Lq, D}).contiguous(),
   key.reshape({N, Lk, D}).contiguous(), score_weight.contiguous(), gq, gk, gw);
  return {gq.view(query.sizes()), gk.view(key.sizes()), gw};
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, CPU, m) {
  m.impl("additive_attention_scores", TORCH_FN(torchattn::ops::additive_scores_cpu));
  m.impl(
      "_additive_attention_scores_backward",
      TORCH_FN(torchattn::ops::additive_scores_backward_cpu));
}

TORCHATTN_REGISTRATION_ANCHOR(additive_attention_scores_cpu_registered)
