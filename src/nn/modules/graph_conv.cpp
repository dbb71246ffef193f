#include "nn/modules/graph_conv.h"

#include "detail/checks.h"

#include <torch/torch.h>

#include <cmath>

namespace torchattn::nn::detail {

void check_node_features(
    const char* fn, const torch::Tensor& x, int64_t in_channels, const torch::Tensor& like) {
  TORCH_CHECK(
      x.defined() && x.dim() == 2 && x.size(1) == in_channels, fn, ": x has shape ",
      x.defined() ? torchattn::detail::shape_str(x.sizes()) : "undefined", ", expected [N, ",
      in_channels, "] [N, in_channels]");
  torchattn::detail::check_like_parameters(fn, "x", x, like);
}

std::pair<functional::CsrGraph, torch::Tensor> graph_of(
    const char* fn, const torch::Tensor& edge_index, int64_t num_nodes, bool self_loops) {
  TORCH_CHECK(
      edge_index.defined() && edge_index.dim() == 2 && edge_index.size(0) == 2, fn,
      ": edge_index has shape ",
      edge_index.defined() ? torchattn::detail::shape_str(edge_index.sizes()) : "undefined",
      ", expected [2, E]");
  const auto edges = self_loops ? functional::add_self_loops(edge_index, num_nodes) : edge_index;
  return {functional::csr_from_edge_index(edges, num_nodes), edges};
}

torch::Tensor combine_heads(const torch::Tensor& out, bool concat) {
  return concat ? out.reshape({out.size(0), out.size(1) * out.size(2)}) : out.mean(1);
}

void glorot_(torch::Tensor& t) {
  torch::NoGradGuard no_grad;
  const double a = std::sqrt(6.0 / static_cast<double>(t.size(-2) + t.size(-1)));
  t.uniform_(-a, a);
}

} // namespace torchattn::nn::detail
