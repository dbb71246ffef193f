#pragma once

#include <torch/arg.h>
#include <torch/types.h>

#include <c10/util/Optional.h>

#include <cstdint>
#include <string>

namespace torchattn::nn {

namespace functional {

/// Options for `functional::graph_attention`.
///
/// Example:
/// ```
/// namespace F = torchattn::nn::functional;
/// auto [out, w] = F::graph_attention(q, k, v, graph,
///     F::GraphAttentionFuncOptions().dropout(0.6).training(true).need_weights(true));
/// ```
struct GraphAttentionFuncOptions {
  /// "dot" (scale q·k) or "additive" (scale Σ_d score_weight[h, d] leaky_relu(q_d + k_d)).
  /// Default: "dot".
  TORCH_ARG(std::string, score) = "dot";
  /// [H, D], for "additive". Default: undefined.
  TORCH_ARG(torch::Tensor, score_weight) = {};
  /// Of "additive"'s leaky_relu. Default: 0.2.
  TORCH_ARG(double, negative_slope) = 0.2;
  /// Default: 1/√D for "dot", 1 for "additive".
  TORCH_ARG(c10::optional<double>, scale) = c10::nullopt;
  /// Dropout on the attention weights (E × H), as PyTorch Geometric applies it. Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
  /// Whether dropout is applied. Default: false.
  TORCH_ARG(bool, training) = false;
  /// Whether the attention weights [E, H] are returned (in edge_index's order). Default: false.
  TORCH_ARG(bool, need_weights) = false;
};

} // namespace functional

/// Options of `GATConv` (Veličković et al. 2018), named as PyTorch Geometric's
/// `torch_geometric.nn.GATConv`.
///
/// Example:
/// ```
/// torchattn::nn::GATConv conv(torchattn::nn::GATConvOptions(1433, 8).heads(8).dropout(0.6));
/// ```
struct GATConvOptions {
  GATConvOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}

  /// Input features per node.
  TORCH_ARG(int64_t, in_channels);
  /// Output features per head.
  TORCH_ARG(int64_t, out_channels);
  /// Attention heads. Default: 1.
  TORCH_ARG(int64_t, heads) = 1;
  /// Concatenate the heads ([N, heads * out_channels]); false: average them. Default: true.
  TORCH_ARG(bool, concat) = true;
  /// Of the scores' leaky_relu. Default: 0.2.
  TORCH_ARG(double, negative_slope) = 0.2;
  /// Dropout on the attention weights in training. Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
  /// Remove self-loops from edge_index and add one to every node. Default: true.
  TORCH_ARG(bool, add_self_loops) = true;
  /// A learnable bias on the output. Default: true.
  TORCH_ARG(bool, bias) = true;
};

/// Options of `GATv2Conv` (Brody et al. 2022), named as PyTorch Geometric's
/// `torch_geometric.nn.GATv2Conv`.
///
/// Example:
/// ```
/// torchattn::nn::GATv2Conv conv(torchattn::nn::GATv2ConvOptions(64, 16).heads(4));
/// ```
struct GATv2ConvOptions {
  GATv2ConvOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}

  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  /// Default: 1.
  TORCH_ARG(int64_t, heads) = 1;
  /// Default: true.
  TORCH_ARG(bool, concat) = true;
  /// Default: 0.2.
  TORCH_ARG(double, negative_slope) = 0.2;
  /// Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
  /// Default: true.
  TORCH_ARG(bool, add_self_loops) = true;
  /// Biases on lin_l, lin_r and the output. Default: true.
  TORCH_ARG(bool, bias) = true;
  /// One linear map for sources and destinations (lin_r is lin_l). Default: false.
  TORCH_ARG(bool, share_weights) = false;
};

/// Options of `GraphTransformerConv` (Shi et al. 2021), named as PyTorch Geometric's
/// `torch_geometric.nn.TransformerConv`.
///
/// Example:
/// ```
/// torchattn::nn::GraphTransformerConv conv(
///     torchattn::nn::GraphTransformerConvOptions(64, 16).heads(4));
/// ```
struct GraphTransformerConvOptions {
  GraphTransformerConvOptions(int64_t in_channels, int64_t out_channels)
      : in_channels_(in_channels), out_channels_(out_channels) {}

  TORCH_ARG(int64_t, in_channels);
  TORCH_ARG(int64_t, out_channels);
  /// Default: 1.
  TORCH_ARG(int64_t, heads) = 1;
  /// Default: true.
  TORCH_ARG(bool, concat) = true;
  /// Default: 0.
  TORCH_ARG(double, dropout) = 0.0;
  /// Add lin_skip(x) to the output (PyG's root_weight). Default: true.
  TORCH_ARG(bool, root_weight) = true;
  /// A bias in lin_skip. Default: true.
  TORCH_ARG(bool, bias) = true;
};

} // namespace torchattn::nn
