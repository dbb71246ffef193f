// The one TORCH_LIBRARY(torchattn, m): every schema of the library. Kernels are registered per
// dispatch key in ops/cpu/ and ops/autograd/.

#include <torchattn/ops/attention.h>

#include "ops/registration.h"

#include <torch/library.h>

TORCH_LIBRARY(torchattn, m) {
  m.def(
      "scaled_dot_product_attention(Tensor query, Tensor key, Tensor value, "
      "Tensor? attn_mask=None, float dropout_p=0.0, bool is_causal=False, "
      "float? scale=None) -> Tensor");
  // The fused kernel's halves; `scale` is already resolved. row_max and row_log_sum
  // [B, H, Lq] are the softmax statistics of each row of scaled, masked scores s: m = max s
  // and log Σ exp(s - m). Their sum is the logsumexp; they are kept apart because the sum
  // rounds away log Σ where |m| is large, and backward needs both. Both are -inf on a row
  // with no key to attend.
  m.def(
      "_scaled_dot_product_attention_forward(Tensor query, Tensor key, Tensor value, "
      "Tensor? attn_mask, bool is_causal, float scale) -> "
      "(Tensor output, Tensor row_max, Tensor row_log_sum)");
  m.def(
      "_scaled_dot_product_attention_backward(Tensor grad_output, Tensor query, Tensor key, "
      "Tensor value, Tensor? attn_mask, Tensor output, Tensor row_max, Tensor row_log_sum, "
      "bool is_causal, float scale) -> (Tensor grad_query, Tensor grad_key, Tensor grad_value)");
  m.def("additive_attention_scores(Tensor query, Tensor key, Tensor score_weight) -> Tensor");
  m.def(
      "_additive_attention_scores_backward(Tensor grad_scores, Tensor query, Tensor key, "
      "Tensor score_weight) -> (Tensor grad_query, Tensor grad_key, Tensor grad_score_weight)");
}

namespace torchattn::ops {

bool ops_registered() {
  // Referencing the kernel files' anchors keeps their static registrations in static builds.
  return detail::cpu_kernels_registered() && detail::autograd_kernels_registered();
}

torch::Tensor scaled_dot_product_attention(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask,
    double dropout_p,
    bool is_causal,
    c10::optional<double> scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::scaled_dot_product_attention", "")
                       .typed<torch::Tensor(
                           const torch::Tensor&, const torch::Tensor&, const torch::Tensor&,
                           const c10::optional<torch::Tensor>&, double, bool,
                           c10::optional<double>)>();
  return op.call(query, key, value, attn_mask, dropout_p, is_causal, scale);
}

torch::Tensor additive_attention_scores(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& score_weight) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::additive_attention_scores", "")
                       .typed<torch::Tensor(
                           const torch::Tensor&, const torch::Tensor&, const torch::Tensor&)>();
  return op.call(query, key, score_weight);
}

} // namespace torchattn::ops
