// The op graph_attention: its schemas and C++ entry points. Its kernels are the op's own, one
// per dispatch key, and each checks with detail::check_graph_attention_args:
//   ops/cpu/graph_attention_kernel.cpp        the fused kernel (ops/cpu/graph_attention/)
//   ops/autograd/graph_attention_kernel.cpp   saves the inputs, output and lse
//   ops/meta/graph_attention_kernel.cpp       shapes only
//   ops/autocast/graph_attention_kernel.cpp   a lower-precision op under CPU autocast

#include <torchattn/ops/graph_attention.h>

#include "ops/registration.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(torchattn, m) {
  m.def(
      "graph_attention(Tensor query, Tensor key, Tensor value, Tensor row_ptr, "
      "Tensor col_index, *, str score=\"dot\", Tensor? score_weight=None, "
      "float negative_slope=0.2, float? scale=None, Tensor? edge_scale=None, "
      "bool need_weights=False) -> (Tensor output, Tensor lse, Tensor weights)");
  m.def(
      "_graph_attention_backward(Tensor grad_output, Tensor query, Tensor key, Tensor value, "
      "Tensor row_ptr, Tensor col_index, str score, Tensor? score_weight, float negative_slope, "
      "float scale, Tensor? edge_scale) -> (Tensor grad_query, "
      "Tensor grad_key, Tensor grad_value, Tensor grad_score_weight, Tensor grad_edge_scale)");
}

namespace torchattn::ops {

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> graph_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& row_ptr, const torch::Tensor& col_index, c10::string_view score,
    const c10::optional<torch::Tensor>& score_weight, double negative_slope,
    c10::optional<double> scale, const c10::optional<torch::Tensor>& edge_scale,
    bool need_weights) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::graph_attention", "")
                       .typed<decltype(graph_attention)>();
  return op.call(
      query, key, value, row_ptr, col_index, score, score_weight, negative_slope, scale, edge_scale,
      need_weights);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
_graph_attention_backward(
    const torch::Tensor& grad_output, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const torch::Tensor& row_ptr, const torch::Tensor& col_index,
    c10::string_view score, const c10::optional<torch::Tensor>& score_weight, double negative_slope,
    double scale, const c10::optional<torch::Tensor>& edge_scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::_graph_attention_backward", "")
                       .typed<decltype(_graph_attention_backward)>();
  return op.call(
      grad_output, query, key, value, row_ptr, col_index, score, score_weight, negative_slope,
      scale, edge_scale);
}

} // namespace torchattn::ops

TORCHATTN_REGISTRATION_ANCHOR(graph_attention_registered)
