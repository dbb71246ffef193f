#include <torchattn/nn/modules/graph_transformer_conv.h>

#include "detail/checks.h"
#include "nn/modules/graph_conv.h"

#include <torch/torch.h>

#include <cmath>

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

namespace {
constexpr const char* kName = "torchattn::nn::GraphTransformerConv";
}

GraphTransformerConvImpl::GraphTransformerConvImpl(const GraphTransformerConvOptions& options_)
    : options(options_) {
  reset();
}

void GraphTransformerConvImpl::reset() {
  TORCH_CHECK(
      options.in_channels() > 0 && options.out_channels() > 0 && options.heads() > 0, kName,
      ": in_channels, out_channels and heads are ", options.in_channels(), ", ",
      options.out_channels(), " and ", options.heads(), ", expected positive");
  torchattn::detail::check_dropout_option("GraphTransformerConv", options.dropout());
  const int64_t in = options.in_channels(), H = options.heads(), C = options.out_channels();
  lin_key = register_module("lin_key", torch::nn::Linear(in, H * C));
  lin_query = register_module("lin_query", torch::nn::Linear(in, H * C));
  lin_value = register_module("lin_value", torch::nn::Linear(in, H * C));
  if (options.root_weight()) {
    lin_skip = register_module(
        "lin_skip",
        torch::nn::Linear(
            torch::nn::LinearOptions(in, options.concat() ? H * C : C).bias(options.bias())));
  }
}

void GraphTransformerConvImpl::pretty_print(std::ostream& stream) const {
  stream << "torchattn::nn::GraphTransformerConv(" << options.in_channels() << ", "
         << options.out_channels() << ", heads=" << options.heads() << ")";
}

std::tuple<torch::Tensor, torch::Tensor> GraphTransformerConvImpl::forward_graph(
    const torch::Tensor& x, const F::CsrGraph& graph, bool need_weights) {
  // x [N, in] -> [N, H C] or [N, C]; weights [E, H]
  detail::check_node_features(kName, x, options.in_channels(), lin_query->weight);
  const int64_t N = x.size(0), H = options.heads(), C = options.out_channels();
  auto [out, weights] = F::graph_attention(
      lin_query(x).view({N, H, C}), lin_key(x).view({N, H, C}), lin_value(x).view({N, H, C}), graph,
      F::GraphAttentionFuncOptions()
          .score("dot")
          .scale(1.0 / std::sqrt(static_cast<double>(C)))
          .dropout(options.dropout())
          .training(is_training())
          .need_weights(need_weights));
  auto y = detail::combine_heads(out, options.concat());
  if (lin_skip) {
    y = y + lin_skip(x);
  }
  return {y, weights};
}

torch::Tensor GraphTransformerConvImpl::forward(
    const torch::Tensor& x, const torch::Tensor& edge_index) {
  // x [N, in], edge_index [2, E] -> [N, H C] or [N, C]
  detail::check_node_features(kName, x, options.in_channels(), lin_query->weight);
  return std::get<0>(forward_graph(x, detail::graph_of(kName, edge_index, x.size(0), false).first));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor>
GraphTransformerConvImpl::forward_with_attention(
    const torch::Tensor& x, const torch::Tensor& edge_index) {
  return detail::with_attention(*this, kName, x, edge_index, /*self_loops=*/false);
}

} // namespace torchattn::nn
