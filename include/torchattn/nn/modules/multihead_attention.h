#pragma once

#include <torchattn/nn/functional/multihead_attention.h>
#include <torchattn/nn/kv_cache.h>
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

/// Keys and values that a `MultiheadAttention` has projected, for incremental decoding:
/// each decoder step appends its own (self-attention), or a memory is projected once and
/// reused (cross-attention, `is_static`). Shapes [B, H, S, head_dim].
///
/// A self-attention cache appends into `buffer` (a KVCache: preallocated, its capacity
/// doubling, so a step copies only its own keys and values), and `key` and `value` are views
/// of it. Setting `key` and `value` by hand still works: a step that finds them changed
/// starts the buffer again from them. For beam search use reorder(), which copies only the
/// rows that change.
///
/// Example:
/// ```
/// torchattn::nn::MultiheadAttentionCache self_cache;
/// auto memory = cross->project_memory(encoder_out, encoder_out);
/// for (int t = 0; t < steps; ++t) {
///   auto [h, w1] = self_attn->forward_step(x_t, self_cache);  // x_t [B, 1, E], causal
///   auto [c, w2] = cross->forward_step(h, memory, src_padding);
/// }
/// ```
struct MultiheadAttentionCache {
  torch::Tensor key;
  torch::Tensor value;
  /// A projected memory: forward_step attends to it and never appends.
  bool is_static = false;
  /// Where a self-attention cache's steps append; key and value view it.
  KVCache buffer{};
  /// The number of cached positions S.
  int64_t size() const { return key.defined() ? key.size(2) : 0; }
  /// Beam search: row b becomes what row rows[b] was (int64 [B']).
  void reorder(const torch::Tensor& rows);
  /// Whether key and value are the views of `buffer` (not set by hand since a step).
  bool views_buffer() const;
};

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

  /// batch_first: query [B, L, E], key [B, S, kdim], value [B, S, vdim] -> out [B, L, E]
  /// otherwise:   query [L, B, E], key [S, B, kdim], value [S, B, vdim] -> out [L, B, E]
  /// unbatched:   query [L, E],    key [S, kdim],    value [S, vdim]    -> out [L, E]
  /// weights: [B, L, S'] averaged over heads, or [B, H, L, S'] (S' counts added bias/zero
  /// keys). Runs functional::multi_head_attention_forward with this module's parameters.
  std::tuple<torch::Tensor, torch::Tensor> forward(
      const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
      const torch::Tensor& key_padding_mask = {}, bool need_weights = true,
      const torch::Tensor& attn_mask = {}, bool average_attn_weights = true,
      bool is_causal = false);

  /// Projects a fixed memory (keys [B, S, kdim], values [B, S, vdim] batch-first, or
  /// sequence-first when batch_first is false) once, for cross-attention decoding.
  MultiheadAttentionCache project_memory(const torch::Tensor& key, const torch::Tensor& value);

  /// One incremental decoding step for new queries `query` ([B, T, E] batch-first or [T, B, E]).
  /// With a static cache (from project_memory) it attends to the memory; otherwise it is
  /// causal self-attention: it projects the step's keys and values from `query`, appends them
  /// to `cache`, and query t of the step sees every earlier position and itself. The result
  /// equals `forward` over the whole prefix with `is_causal`, row for row.
  /// `key_padding_mask` is [B, cache.size() after appending]. Weights [B, T, S'] or per head.
  std::tuple<torch::Tensor, torch::Tensor> forward_step(
      const torch::Tensor& query, MultiheadAttentionCache& cache,
      const torch::Tensor& key_padding_mask = {}, bool need_weights = false,
      bool average_attn_weights = true);

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
      {3, torch::nn::AnyValue(torch::Tensor())}, {4, torch::nn::AnyValue(true)},
      {5, torch::nn::AnyValue(torch::Tensor())}, {6, torch::nn::AnyValue(true)},
      {7, torch::nn::AnyValue(false)})

 private:
  // Checks a forward_step cache against this module and the query: both tensors or neither,
  // [B, num_heads, S, head_dim], the query's batch, the parameters' dtype and device.
  void check_cache(
      const char* fn, const MultiheadAttentionCache& cache, const torch::Tensor& query) const;
  // [B, L, E] -> [B, H, L, head_dim] projections of query (i = 0), key (1) or value (2).
  torch::Tensor project(const torch::Tensor& x, int i) const;
  // The functional's options with this module's parameters and options.
  functional::MultiheadAttentionForwardFuncOptions func_options() const;

  bool same_embed_dim_ = true;
  int64_t head_dim_ = 0;
};

/// A `ModuleHolder` for `MultiheadAttentionImpl`.
TORCH_MODULE(MultiheadAttention);

} // namespace torchattn::nn
