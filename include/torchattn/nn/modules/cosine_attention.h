#pragma once

#include <torchattn/nn/modules/common.h>
#include <torchattn/nn/options/attention.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <ostream>
#include <tuple>

namespace torchattn::nn {

/// Cosine-similarity attention softmax(τ · cos(Q, K)) V, with τ fixed or learnable, one per
/// head or shared, optionally clamped (Swin Transformer V2); see `functional::cosine_attention`.
///
/// `forward(query, key, value, attn_mask, key_padding_mask, need_weights, is_causal)` takes
/// the masks described at TORCHATTN_ATTENTION_FUNC_ARGS and returns `(output, weights)`;
/// weights are defined only when `need_weights` is true. Dropout applies in training mode only.
///
/// Example:
/// ```
/// torchattn::nn::CosineAttention attn(
///     torchattn::nn::CosineAttentionOptions().num_heads(8).learnable(true).max_temperature(100));
/// auto [out, weights] = attn(q, k, v); // q, k, v [B, 8, L, E]
/// ```
class CosineAttentionImpl : public torch::nn::Cloneable<CosineAttentionImpl> {
 public:
  explicit CosineAttentionImpl(const CosineAttentionOptions& options_ = {});
  void reset() override;

  /// Prints `torchattn::nn::CosineAttention(option=value, ...)`.
  void pretty_print(std::ostream& stream) const override;

  /// query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev]
  ///   -> output [..., Lq, Ev], weights [..., Lq, Lk] (when need_weights)
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
      const torch::Tensor& attn_mask = {}, const torch::Tensor& key_padding_mask = {},
      bool need_weights = false, bool is_causal = false);

  /// The options this module was constructed with.
  CosineAttentionOptions options;

  /// τ = exp(min(logit_scale, log(max_temperature))), shaped [num_heads, 1, 1] (a 0-dim
  /// tensor when num_heads is 1, so it broadcasts over inputs of any rank).
  torch::Tensor temperature() const;

  /// log τ, shape [num_heads, 1, 1]: a parameter when learnable, otherwise a buffer.
  torch::Tensor logit_scale;

 protected:
  TORCHATTN_ATTENTION_FORWARD_DEFAULT_ARGS
};

/// A `ModuleHolder` for `CosineAttentionImpl`.
TORCH_MODULE(CosineAttention);

} // namespace torchattn::nn
