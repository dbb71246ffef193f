#pragma once

#include <torchattn/nn/modules/common.h>
#include <torchattn/nn/options/attention.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <ostream>
#include <tuple>

namespace torchattn::nn {

/// General (Luong) attention: score(q, k) = qᵀ W k with a parameter `weight` [query_dim,
/// key_dim], initialised uniform(-1/√key_dim, 1/√key_dim) like a `torch::nn::Linear` from
/// key_dim to query_dim; see `functional::general_attention`.
///
/// `forward(query, key, value, attn_mask, key_padding_mask, need_weights, is_causal)` takes
/// the masks described at TORCHATTN_ATTENTION_FUNC_ARGS and returns `(output, weights)`;
/// weights are defined only when `need_weights` is true. Dropout applies in training mode only.
///
/// Example:
/// ```
/// torchattn::nn::GeneralAttention attn(/*query_dim=*/256, /*key_dim=*/512);
/// auto [context, weights] = attn(decoder_state, encoder_outputs, encoder_outputs);
/// ```
class GeneralAttentionImpl : public torch::nn::Cloneable<GeneralAttentionImpl> {
 public:
  GeneralAttentionImpl(int64_t query_dim, int64_t key_dim)
      : GeneralAttentionImpl(GeneralAttentionOptions(query_dim, key_dim)) {}
  explicit GeneralAttentionImpl(const GeneralAttentionOptions& options_);
  void reset() override;

  /// Prints `torchattn::nn::GeneralAttention(option=value, ...)`.
  void pretty_print(std::ostream& stream) const override;

  /// query [..., Lq, Eq], key [..., Lk, Ek], value [..., Lk, Ev]
  ///   -> output [..., Lq, Ev], weights [..., Lq, Lk] (when need_weights)
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
      const torch::Tensor& attn_mask = {}, const torch::Tensor& key_padding_mask = {},
      bool need_weights = false, bool is_causal = false);

  /// The options this module was constructed with.
  GeneralAttentionOptions options;

  /// W, shape [query_dim, key_dim].
  torch::Tensor weight;

 protected:
  TORCHATTN_ATTENTION_FORWARD_DEFAULT_ARGS
};

/// A `ModuleHolder` for `GeneralAttentionImpl`.
TORCH_MODULE(GeneralAttention);

} // namespace torchattn::nn
