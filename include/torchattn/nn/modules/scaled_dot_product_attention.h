#pragma once

#include <torchattn/nn/modules/common.h>
#include <torchattn/nn/options/attention.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <ostream>
#include <tuple>

namespace torchattn::nn {

/// Scaled dot-product attention softmax(Q Kᵀ · scale) V as a module (no parameters), mirroring
/// `torch.nn.functional.scaled_dot_product_attention`; see
/// `functional::scaled_dot_product_attention`.
///
/// `forward(query, key, value, attn_mask, key_padding_mask, need_weights, is_causal)` takes
/// the masks described at TORCHATTN_ATTENTION_FUNC_ARGS and returns `(output, weights)`;
/// weights are defined only when `need_weights` is true. Dropout applies in training mode only.
///
/// Example:
/// ```
/// torchattn::nn::ScaledDotProductAttention attn(
///     torchattn::nn::ScaledDotProductAttentionOptions().dropout(0.1));
/// auto [out, weights] = attn(q, k, v);
/// ```
class ScaledDotProductAttentionImpl : public torch::nn::Cloneable<ScaledDotProductAttentionImpl> {
 public:
  explicit ScaledDotProductAttentionImpl(const ScaledDotProductAttentionOptions& options_ = {});
  void reset() override;

  /// Prints `torchattn::nn::ScaledDotProductAttention(option=value, ...)`.
  void pretty_print(std::ostream& stream) const override;

  /// query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev]
  ///   -> output [..., Lq, Ev], weights [..., Lq, Lk] (when need_weights)
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
      const torch::Tensor& attn_mask = {}, const torch::Tensor& key_padding_mask = {},
      bool need_weights = false, bool is_causal = false);

  /// The options this module was constructed with.
  ScaledDotProductAttentionOptions options;

 protected:
  TORCHATTN_ATTENTION_FORWARD_DEFAULT_ARGS
};

/// A `ModuleHolder` for `ScaledDotProductAttentionImpl`.
TORCH_MODULE(ScaledDotProductAttention);

} // namespace torchattn::nn
