#include <torchattn/nn/modules/gat_conv.h>

#include "detail/checks.h"
#include "nn/modules/graph_conv.h"

#include <torch/torch.h>

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

GATConvImpl::GATConvImpl(const GATConvOptions& options_) : options(options_) {
  reset();
}

void GATConvImpl::reset() {
  constexpr const char* fn = "torchattn::nn::GATConv";
  TORCH_CHECK(
      options.in_channels() > 0 && options.out_channels() > 0 && options.heads() > 0, fn,
      ": in_channels, out_channels and heads are ", options.in_channels(), ", ",
      options.out_channels(), " and ", options.heads(), ", expected positive");
  torchattn::detail::check_dropout_option("GATConv", options.dropout());
  const int64_t H = options.heads(), C = options.out_channels();
  lin = register_module(
      "lin", torch::nn::Linear(torch::nn::LinearOptions(options.in_channels(), H * C).bias(false)));
  att_src = register_parameter("att_src", torch::empty({1, H, C}));
  att_dst = register_parameter("att_dst", torch::empty({1, H, C}));
  bias = torch::Tensor();
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty({options.concat() ? H * C : C}));
  }
  reset_parameters();
}

void GATConvImpl::reset_parameters() {
  detail::glorot_(lin->weight);
  detail::glorot_(att_src);
  detail::glorot_(att_dst);
  if (bias.defined()) {
    torch::NoGradGuard no_grad;
    bias.zero_();
  }
}

void GATConvImpl::pretty_print(std::ostream& stream) const {
  stream << "torchattn::nn::GATConv(" << options.in_channels() << ", " << options.out_channels()
         << ", heads=" << options.heads() << ")";
}

F::CsrGraph GATConvImpl::graph(const torch::Tensor& edge_index, int64_t num_nodes) const {
  return detail::graph_of("torchattn::nn::GATConv", edge_index, num_nodes, options.add_self_loops())
      .first;
}

std::tuple<torch::Tensor, torch::Tensor> GATConvImpl::forward_graph(
    const torch::Tensor& x, const F::CsrGraph& graph, bool need_weights) {
  // x [N, in] -> [N, H C] or [N, C]; weights [E, H]
  detail::check_node_features("torchattn::nn::GATConv", x, options.in_channels(), lin->weight);
  const int64_t N = x.size(0), H = options.heads(), C = options.out_channels();
  const auto h = lin(x).view({N, H, C});
  const auto alpha_src = (h * att_src).sum(-1, /*keepdim=*/true); // [N, H, 1]
  const auto alpha_dst = (h * att_dst).sum(-1, /*keepdim=*/true);
  auto [out, weights] = F::graph_attention(
      alpha_dst, alpha_src, h, graph,
      F::GraphAttentionFuncOptions()
          .score("additive")
          .score_weight(torch::ones({H, 1}, h.options()))
          .negative_slope(options.negative_slope())
          .dropout(options.dropout())
          .training(is_training())
          .need_weights(need_weights));
  auto y = detail::combine_heads(out, options.concat());
  if (bias.defined()) {
    y = y + bias;
  }
  return {y, weights};
}

torch::Tensor GATConvImpl::forward(const torch::Tensor& x, const torch::Tensor& edge_index) {
  // x [N, in], edge_index [2, E] -> [N, H C] or [N, C]
  detail::check_node_features("torchattn::nn::GATConv", x, options.in_channels(), lin->weight);
  return std::get<0>(forward_graph(x, graph(edge_index, x.size(0))));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> GATConvImpl::forward_with_attention(
    const torch::Tensor& x, const torch::Tensor& edge_index) {
  return detail::with_attention(
      *this, "torchattn::nn::GATConv", x, edge_index, /*self_loops=*/options.add_self_loops());
}

} // namespace torchattn::nn
