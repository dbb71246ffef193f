#pragma once

#include <torchattn/nn/functional/flex_attention.h>
#include <torchattn/nn/options/flex_attention.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/common.h>
#include <torch/nn/modules/container/any_value.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <ostream>
#include <tuple>

namespace torchattn::nn {

/// Flexible attention as a module: functional::flex_attention with the modifiers of its
/// options, its learnable ones (T5's relative-position table, ALiBi slopes) as parameters.
/// No projections: it attends the heads it is given, [B, H, L, E].
///
/// `forward(query, key, value, q_doc_ids, kv_doc_ids, attn_mask)` returns `(output, lse)`.
///
/// Example:
/// ```
/// torchattn::nn::FlexAttention attn(torchattn::nn::FlexAttentionOptions(8)
///     .causal("top_left").window_left(255).alibi(true));
/// auto [out, lse] = attn(q, k, v);
/// ```
class FlexAttentionImpl : public torch::nn::Cloneable<FlexAttentionImpl> {
 public:
  explicit FlexAttentionImpl(const FlexAttentionOptions& options_);
  void reset() override;

  /// Prints `torchattn::nn::FlexAttention(num_heads=..., ...)`.
  void pretty_print(std::ostream& stream) const override;

  /// query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev]
  ///   -> output [B, H, Lq, Ev], lse [B, H, Lq]
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
      const torch::Tensor& q_doc_ids = {}, const torch::Tensor& kv_doc_ids = {},
      const torch::Tensor& attn_mask = {});

  /// The options this module was constructed with.
  FlexAttentionOptions options;
  /// [H, position_buckets] when position_buckets > 0, else undefined.
  torch::Tensor position_bias;
  /// [H] when alibi or learnable_alibi, else undefined.
  torch::Tensor alibi_slopes;

 protected:
  FORWARD_HAS_DEFAULT_ARGS(
      {3, torch::nn::AnyValue(torch::Tensor())}, {4, torch::nn::AnyValue(torch::Tensor())},
      {5, torch::nn::AnyValue(torch::Tensor())})
};

/// A `ModuleHolder` for `FlexAttentionImpl`.
TORCH_MODULE(FlexAttention);

} // namespace torchattn::nn
