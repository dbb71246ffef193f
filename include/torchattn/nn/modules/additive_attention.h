#pragma once

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <torchattn/nn/modules/common.h>
#include <torchattn/nn/options/attention.h>

#include <ostream>
#include <tuple>

namespace torchattn::nn {

/// Additive (Bahdanau) attention: score(q, k) = vᵀ tanh(W_q q + W_k k). Submodules
/// `query_proj` (W_q), `key_proj` (W_k) and `score_proj` (v) are `torch::nn::Linear`s, named
/// and initialised like the `Wa`, `Ua`, `Va` of PyTorch's seq2seq tutorial; see
/// `functional::additive_attention`.
///
/// `forward(query, key, value, attn_mask, key_padding_mask, need_weights, is_causal)` takes
/// the masks described at TORCHATTN_ATTENTION_FUNC_ARGS and returns `(output, weights)`;
/// weights are defined only when `need_weights` is true. Dropout applies in training mode only.
///
/// Example:
/// ```
/// torchattn::nn::AdditiveAttention attn(/*query_dim=*/256, /*key_dim=*/512, /*hidden_dim=*/128);
/// auto [context, weights] = attn->forward(decoder_state, encoder_outputs, encoder_outputs,
///     /*attn_mask=*/{}, /*key_padding_mask=*/src_padding, /*need_weights=*/true);
/// ```
class AdditiveAttentionImpl : public torch::nn::Cloneable<AdditiveAttentionImpl> {
 public:
  AdditiveAttentionImpl(int64_t query_dim, int64_t key_dim, int64_t hidden_dim)
      : AdditiveAttentionImpl(AdditiveAttentionOptions(query_dim, key_dim, hidden_dim)) {}
  explicit AdditiveAttentionImpl(const AdditiveAttentionOptions& options_);
  void reset() override;

  /// Prints `torchattn::nn::AdditiveAttention(option=value, ...)`.
  void pretty_print(std::ostream& stream) const override;

  /// query [..., Lq, Eq], key [..., Lk, Ek], value [..., Lk, Ev]
  ///   -> output [..., Lq, Ev], weights [..., Lq, Lk] (when need_weights)
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
      const torch::Tensor& attn_mask = {}, const torch::Tensor& key_padding_mask = {},
      bool need_weights = false, bool is_causal = false);

  /// The options this module was constructed with.
  AdditiveAttentionOptions options;

  /// W_q: query_dim -> hidden_dim.
  torch::nn::Linear query_proj = nullptr;
  /// W_k: key_dim -> hidden_dim.
  torch::nn::Linear key_proj = nullptr;
  /// v: hidden_dim -> 1.
  torch::nn::Linear score_proj = nullptr;

 protected:
  TORCHATTN_ATTENTION_FORWARD_DEFAULT_ARGS
};

/// A `ModuleHolder` for `AdditiveAttentionImpl`.
TORCH_MODULE(AdditiveAttention);

} // namespace torchattn::nn
