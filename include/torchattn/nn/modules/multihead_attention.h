#pragma once

#include <torchattn/nn/options/multihead_attention.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/common.h>
#include <torch/nn/modules/container/any_value.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <ostream>
#include <tuple>

namespace torchattn::nn {

/// Multi-head attention with the parameters, state-dict names, initialisation and forward
/// semantics of PyTorch 2.x's `torch.nn.MultiheadAttention`, so weights move between Python
/// and C++ by name and give the same numbers.
///
/// Differences from PyTorch, all deliberate:
/// - A query whose keys are all masked gets zero output, weights and gradients (PyTorch: NaN).
/// - `is_causal` works on its own: it applies a causal mask (PyTorch 2.x requires
///   `attn_mask` to hold that mask and treats `is_causal` as a hint). With an `attn_mask`
///   both apply. Keys added by `add_bias_kv`/`add_zero_attn` stay visible to every query.
/// - Unlike LibTorch's C++ `torch::nn::MultiheadAttention` (1.x), boolean masks mask (they
///   are not added as 0/1), `batch_first` exists, and `score` picks the score function.
///
/// Masks, as in `torch.nn.MultiheadAttention`:
/// - `key_padding_mask` [B, S] (or [S] unbatched): boolean true = padding, ignored; a float
///   mask is added to the scores.
/// - `attn_mask` [L, S] or [B·num_heads, L, S] ([num_heads, L, S] unbatched): boolean
///   **true = not allowed to attend** (the opposite of `scaled_dot_product_attention`); a float
///   mask is added.
///
/// Example:
/// ```
/// torchattn::nn::MultiheadAttention mha(
///     torchattn::nn::MultiheadAttentionOptions(512, 8).batch_first(true));
/// auto x = torch::randn({4, 10, 512});
/// auto [out, weights] = mha(x, x, x);  // out [4, 10, 512], weights [4, 10, 10]
/// ```
class MultiheadAttentionImpl : public torch::nn::Cloneable<MultiheadAttentionImpl> {
 public:
  MultiheadAttentionImpl(int64_t embed_dim, int64_t num_heads)
      : MultiheadAttentionImpl(MultiheadAttentionOptions(embed_dim, num_heads)) {}
  explicit MultiheadAttentionImpl(const MultiheadAttentionOptions& options_);

  void reset() override;

  /// PyTorch's `_reset_parameters`: Xavier-uniform projections, zero biases, Xavier-normal
  /// bias_k/bias_v, log(10) cosine temperatures.
  void reset_parameters();

  /// Prints `torchattn::nn::MultiheadAttention(embed_dim=..., num_heads=..., ...)`.
  void pretty_print(std::ostream& stream) const override;

  // batch_first: query [B, L, E], key [B, S, kdim], value [B, S, vdim] -> out [B, L, E]
  // otherwise:   query [L, B, E], key [S, B, kdim], value [S, B, vdim] -> out [L, B, E]
  // unbatched:   query [L, E],    key [S, kdim],    value [S, vdim]    -> out [L, E]
  // weights: [B, L, S'] averaged over heads, or [B, H, L, S'] (S' counts added bias/zero keys)
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& query,
      const torch::Tensor& key,
      const torch::Tensor& value,
      const torch::Tensor& key_padding_mask = {},
      bool need_weights = true,
      const torch::Tensor& attn_mask = {},
      bool average_attn_weights = true,
      bool is_causal = false);

  /// The options this module was constructed with.
  MultiheadAttentionOptions options;

  /// [3E, E] when kdim == vdim == embed_dim, otherwise undefined.
  torch::Tensor in_proj_weight;
  /// [E, E], [E, kdim], [E, vdim] when kdim or vdim differ from embed_dim.
  torch::Tensor q_proj_weight, k_proj_weight, v_proj_weight;
  /// [3E] when bias.
  torch::Tensor in_proj_bias;
  /// [1, 1, E] when add_bias_kv.
  torch::Tensor bias_k, bias_v;
  /// [H, 1, 1] log temperatures when score is Cosine.
  torch::Tensor logit_scale;
  torch::nn::Linear out_proj = nullptr;

 protected:
  FORWARD_HAS_DEFAULT_ARGS(
      {3, torch::nn::AnyValue(torch::Tensor())},
      {4, torch::nn::AnyValue(true)},
      {5, torch::nn::AnyValue(torch::Tensor())},
      {6, torch::nn::AnyValue(true)},
      {7, torch::nn::AnyValue(false)})

 private:
  bool same_embed_dim_ = true;
  int64_t head_dim_ = 0;
};

/// A `ModuleHolder` for `MultiheadAttentionImpl`.
TORCH_MODULE(MultiheadAttention);

} // namespace torchattn::nn
