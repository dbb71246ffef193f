// CPU autocast kernel of graph_attention: a lower-precision op under LibTorch's CPU autocast,
// like scaled_dot_product_attention. query, key, value, score_weight and edge_scale are cast to
// the autocast dtype; the graph is not.

#include <torchattn/ops/graph_attention.h>

#include "detail/compat.h"
#include "ops/registration.h"

#include <torch/library.h>

namespace torchattn::ops {

namespace {

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> graph_attention_autocast(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& row_ptr, const torch::Tensor& col_index, c10::string_view score,
    const c10::optional<torch::Tensor>& score_weight, double negative_slope,
    c10::optional<double> scale, const c10::optional<torch::Tensor>& edge_scale,
    bool need_weights) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCPU);
  using torchattn::detail::autocast_cpu;
  auto cast = [](const c10::optional<torch::Tensor>& t) -> c10::optional<torch::Tensor> {
    if (t.has_value() && t->defined()) {
      return autocast_cpu(*t);
    }
    return t;
  };
  return graph_attention(
      autocast_cpu(query), autocast_cpu(key), autocast_cpu(value), row_ptr, col_index, score,
      cast(score_weight), negative_slope, scale, cast(edge_scale), need_weights);
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, AutocastCPU, m) {
  m.impl("graph_attention", TORCH_FN(torchattn::ops::graph_attention_autocast));
}

TORCHATTN_REGISTRATION_ANCHOR(graph_attention_autocast_registered)
