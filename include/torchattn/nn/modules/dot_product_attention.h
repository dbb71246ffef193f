#pragma once

#include <torchattn/nn/modules/common.h>
#include <torchattn/nn/options/attention.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <ostream>
#include <tuple>

namespace torchattn::nn {

/// Dot-product attention softmax(Q Kᵀ) V as a module (no parameters); see
/// `functional::dot_product_attention`.
///
/// `forward(query, key, value, attn_mask, key_padding_mask, need_weights, is_causal)` takes
/// the masks described at TORCHATTN_ATTENTION_FUNC_ARGS and returns `(output, weights)`;
/// weights are defined only when `need_weights` is true. Dropout applies in training mode only.
///
/// Example:
/// ```
/// torchattn::nn::DotProductAttention attn;
/// auto [out, weights] = attn->forward(q, k, v, /*attn_mask=*/{}, /*key_padding_mask=*/{},
///                            /*need_weights=*/true);
/// ```
class DotProductAttentionImpl : public torch::nn::Cloneable<DotProductAttentionImpl> {
 public:
  explicit DotProductAttentionImpl(const DotProductAttentionOptions& options_ = {});
  void reset() override;

  /// Prints `torchattn::nn::DotProductAttention(option=value, ...)`.
  void pretty_print(std::ostream& stream) const override;

  /// query [..., Lq, E], key [..., Lk, E], value [..., Lk, Ev]
  ///   -> output [..., Lq, Ev], weights [..., Lq, Lk] (when need_weights)
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
      const torch::Tensor& attn_mask = {}, const torch::Tensor& key_padding_mask = {},
      bool need_weights = false, bool is_causal = false);

  /// The options this module was constructed with.
  DotProductAttentionOptions options;

 protected:
  TORCHATTN_ATTENTION_FORWARD_DEFAULT_ARGS
};

/// A `ModuleHolder` for `DotProductAttentionImpl`.
TORCH_MODULE(DotProductAttention);

} // namespace torchattn::nn
