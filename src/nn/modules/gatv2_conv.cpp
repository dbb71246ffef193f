#include <torchattn/nn/modules/gatv2_conv.h>

#include "detail/checks.h"
#include "nn/modules/graph_conv.h"

#include <torch/torch.h>

#include <cmath>

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

namespace {
constexpr const char* kName = "torchattn::nn::GATv2Conv";
}

GATv2ConvImpl::GATv2ConvImpl(const GATv2ConvOptions& options_) : options(options_) {
  reset();
}

void GATv2ConvImpl::reset() {
  TORCH_CHECK(
      options.in_channels() > 0 && options.out_channels() > 0 && options.heads() > 0, kName,
      ": in_channels, out_channels and heads are ", options.in_channels(), ", ",
      options.out_channels(), " and ", options.heads(), ", expected positive");
  torchattn::detail::check_dropout_option("GATv2Conv", options.dropout());
  const int64_t H = options.heads(), C = options.out_channels();
  const auto lin_options =
      torch::nn::LinearOptions(options.in_channels(), H * C).bias(options.bias());
  lin_l = register_module("lin_l", torch::nn::Linear(lin_options));
  lin_r =
      options.share_weights() ? lin_l : register_module("lin_r", torch::nn::Linear(lin_options));
  att = register_parameter("att", torch::empty({1, H, C}));
  bias = torch::Tensor();
  if (options.bias()) {
    bias = register_parameter("bias", torch::empty({options.concat() ? H * C : C}));
  }
  reset_parameters();
}

void GATv2ConvImpl::reset_parameters() {
  torch::NoGradGuard no_grad;
  const double bound = 1.0 / std::sqrt(static_cast<double>(options.in_channels()));
  for (auto* lin : {&lin_l, &lin_r}) {
    detail::glorot_((*lin)->weight);
    if ((*lin)->bias.defined()) {
      (*lin)->bias.uniform_(-bound, bound);
    }
  }
  detail::glorot_(att);
  if (bias.defined()) {
    bias.zero_();
  }
}

void GATv2ConvImpl::pretty_print(std::ostream& stream) const {
  stream << "torchattn::nn::GATv2Conv(" << options.in_channels() << ", " << options.out_channels()
         << ", heads=" << options.heads() << ")";
}

F::CsrGraph GATv2ConvImpl::graph(const torch::Tensor& edge_index, int64_t num_nodes) const {
  return detail::graph_of(kName, edge_index, num_nodes, options.add_self_loops()).first;
}

std::tuple<torch::Tensor, torch::Tensor> GATv2ConvImpl::forward_graph(
    const torch::Tensor& x, const F::CsrGraph& graph, bool need_weights) {
  // x [N, in] -> [N, H C] or [N, C]; weights [E, H]
  detail::check_node_features(kName, x, options.in_channels(), lin_l->weight);
  const int64_t N = x.size(0), H = options.heads(), C = options.out_channels();
  const auto x_l = lin_l(x).view({N, H, C});
  const auto x_r = options.share_weights() ? x_l : lin_r(x).view({N, H, C});
  auto [out, weights] = F::graph_attention(
      x_r, x_l, x_l, graph,
      F::GraphAttentionFuncOptions()
          .score("additive")
          .score_weight(att.view({H, C}))
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

torch::Tensor GATv2ConvImpl::forward(const torch::Tensor& x, const torch::Tensor& edge_index) {
  // x [N, in], edge_index [2, E] -> [N, H C] or [N, C]
  detail::check_node_features(kName, x, options.in_channels(), lin_l->weight);
  return std::get<0>(forward_graph(x, graph(edge_index, x.size(0))));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> GATv2ConvImpl::forward_with_attention(
    const torch::Tensor& x, const torch::Tensor& edge_index) {
  return detail::with_attention(
      *this, kName, x, edge_index, /*self_loops=*/options.add_self_loops());
}

} // namespace torchattn::nn
