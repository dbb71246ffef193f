#pragma once

#include <torchattn/nn/options/multihead_attention.h>

#include <torch/arg.h>
#include <torch/types.h>

#include <cstdint>
#include <tuple>

namespace torchattn::nn::functional {

/// Options for `multi_head_attention_forward`: the parameters of a `MultiheadAttention` and the
/// arguments of its forward. The constructor takes what LibTorch's
/// `torch::nn::functional::MultiheadAttentionForwardFuncOptions` takes, in its order.
///
/// Example:
/// ```
/// namespace F = torchattn::nn::functional;
/// auto [out, weights] = F::multi_head_attention_forward(x, x, x,
///     F::MultiheadAttentionForwardFuncOptions(512, 8, w_in, b_in, {}, {}, false, 0.0, w_out,
///     b_out)
///         .batch_first(true).is_causal(true).need_weights(false));
/// ```
struct MultiheadAttentionForwardFuncOptions {
  MultiheadAttentionForwardFuncOptions(
      int64_t embed_dim_to_check, int64_t num_heads, torch::Tensor in_proj_weight,
      torch::Tensor in_proj_bias, torch::Tensor bias_k, torch::Tensor bias_v, bool add_zero_attn,
      double dropout_p, torch::Tensor out_proj_weight, torch::Tensor out_proj_bias)
      : embed_dim_to_check_(embed_dim_to_check),
        num_heads_(num_heads),
        in_proj_weight_(std::move(in_proj_weight)),
        in_proj_bias_(std::move(in_proj_bias)),
        bias_k_(std::move(bias_k)),
        bias_v_(std::move(bias_v)),
        add_zero_attn_(add_zero_attn),
        dropout_p_(dropout_p),
        out_proj_weight_(std::move(out_proj_weight)),
        out_proj_bias_(std::move(out_proj_bias)) {}

  /// The embedding size E that query must have (no default).
  TORCH_ARG(int64_t, embed_dim_to_check);
  /// Number of heads H; E must be divisible by it (no default).
  TORCH_ARG(int64_t, num_heads);
  /// The packed projection [3E, E] of query, key and value; undefined when
  /// use_separate_proj_weight.
  TORCH_ARG(torch::Tensor, in_proj_weight);
  /// [3E] or undefined.
  TORCH_ARG(torch::Tensor, in_proj_bias);
  /// [1, 1, E] keys and values appended after projection (add_bias_kv), or undefined.
  TORCH_ARG(torch::Tensor, bias_k);
  TORCH_ARG(torch::Tensor, bias_v);
  /// Appends a zero key and value after projection.
  TORCH_ARG(bool, add_zero_attn);
  /// Dropout on the attention weights, applied only when `training`.
  TORCH_ARG(double, dropout_p);
  /// The output projection [E, E] and its bias [E] (or undefined).
  TORCH_ARG(torch::Tensor, out_proj_weight);
  TORCH_ARG(torch::Tensor, out_proj_bias);
  /// Whether dropout applies. Default: true.
  TORCH_ARG(bool, training) = true;
  /// [B, S] (or [S] unbatched); bool true = the key is padding, or additive. Default: undefined.
  TORCH_ARG(torch::Tensor, key_padding_mask) = {};
  /// Returns the attention weights (the math path). Default: true.
  TORCH_ARG(bool, need_weights) = true;
  /// [L, S] or [B * H, L, S]; bool true = may not attend, or additive. Default: undefined.
  TORCH_ARG(torch::Tensor, attn_mask) = {};
  /// Separate projections q_proj_weight [E, E], k_proj_weight [E, kdim] and v_proj_weight
  /// [E, vdim] instead of in_proj_weight. Default: false.
  TORCH_ARG(bool, use_separate_proj_weight) = false;
  TORCH_ARG(torch::Tensor, q_proj_weight) = {};
  TORCH_ARG(torch::Tensor, k_proj_weight) = {};
  TORCH_ARG(torch::Tensor, v_proj_weight) = {};
  /// Keys and values already projected, [B, H, S, E / H] (a decoding cache); key and value are
  /// then not projected. PyTorch takes [B * H, S, E / H] here. Default: undefined.
  TORCH_ARG(torch::Tensor, static_k) = {};
  TORCH_ARG(torch::Tensor, static_v) = {};
  /// Weights averaged over heads [B, L, S], or per head [B, H, L, S]. Default: true.
  TORCH_ARG(bool, average_attn_weights) = true;
  /// Query i attends keys j <= i, added to attn_mask. Default: false.
  TORCH_ARG(bool, is_causal) = false;
  /// Inputs and output [B, L, E] instead of [L, B, E]. Default: false.
  TORCH_ARG(bool, batch_first) = false;
  /// The score of every head. Default: AttentionScore::ScaledDotProduct.
  TORCH_ARG(AttentionScore, score) = AttentionScore::ScaledDotProduct;
  /// [H, 1, 1] log temperatures for AttentionScore::Cosine, clamped at log 100. Default:
  /// undefined.
  TORCH_ARG(torch::Tensor, logit_scale) = {};
  /// flex_attention's modifiers for every head (see MultiheadAttentionOptions::flex). Default:
  /// none.
  TORCH_ARG(c10::optional<FlexAttentionFuncOptions>, flex) = c10::nullopt;
};

/// Multi-head attention: projections, masks, the score's attention per head and the output
/// projection; what `torchattn::nn::MultiheadAttention` runs. Mirrors
/// `torch.nn.functional.multi_head_attention_forward`, with `batch_first`, `is_causal` and a
/// score other than scaled dot product added, and boolean masks that mask (LibTorch's C++
/// version adds them). Without weights (`need_weights(false)`) the heads take the fused kernel.
///
/// batch_first: query [B, L, E], key [B, S, kdim], value [B, S, vdim] -> out [B, L, E]
/// otherwise:   query [L, B, E], key [S, B, kdim], value [S, B, vdim] -> out [L, B, E]
/// unbatched:   query [L, E],    key [S, kdim],    value [S, vdim]    -> out [L, E]
/// weights: [B, L, S'] averaged over heads, or [B, H, L, S'] (S' counts added bias/zero keys);
/// undefined unless need_weights.
std::tuple<torch::Tensor, torch::Tensor> multi_head_attention_forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const MultiheadAttentionForwardFuncOptions& options);

/// One projection split into heads: x [B, L, E_in], weight [E, E_in], bias [E] or undefined
/// -> [B, H, L, E / H]. What multi_head_attention_forward does to query, key and value, for
/// callers that project a cache themselves.
torch::Tensor project_heads(
    const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
    int64_t num_heads);

} // namespace torchattn::nn::functional
