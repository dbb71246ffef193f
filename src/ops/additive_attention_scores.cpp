// The op additive_attention_scores: its schemas and C++ entry points. It routes nowhere (the
// fused score has no math-path twin inside the op; the functional chooses), so its kernels are
// the op's own, one per dispatch key, and each checks with detail::check_additive_args:
//   ops/cpu/additive_attention_scores_kernel.cpp        the fused score
//   ops/autograd/additive_attention_scores_kernel.cpp   saves q, k, w; backward recomputes
//   ops/meta/additive_attention_scores_kernel.cpp       shapes only

#include <torchattn/ops/additive_attention_scores.h>

#include "ops/registration.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(torchattn, m) {
  m.def("additive_attention_scores(Tensor query, Tensor key, Tensor score_weight) -> Tensor");
  m.def(
      "_additive_attention_scores_backward(Tensor grad_scores, Tensor query, Tensor key, "
      "Tensor score_weight) -> (Tensor grad_query, Tensor grad_key, Tensor grad_score_weight)");
}

namespace torchattn::ops {

torch::Tensor additive_attention_scores(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& score_weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::additive_attention_scores", "")
                       .typed<decltype(additive_attention_scores)>();
  return op.call(query, key, score_weight);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> _additive_attention_scores_backward(
    const torch::Tensor& grad_scores, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& score_weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::_additive_attention_scores_backward", "")
                       .typed<decltype(_additive_attention_scores_backward)>();
  return op.call(grad_scores, query, key, score_weight);
}

} // namespace torchattn::ops

TORCHATTN_REGISTRATION_ANCHOR(additive_attention_scores_registered)
