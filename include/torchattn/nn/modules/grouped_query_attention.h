#pragma once

#include <torchattn/nn/kv_cache.h>
#include <torchattn/nn/modules/rotary_embedding.h>
#include <torchattn/nn/options/grouped_query_attention.h>

#include <torch/nn/cloneable.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

namespace torchattn::nn {

/// Llama/Mistral grouped-query attention with rotary embeddings, a sliding window and a KV
/// cache. Parameters are named as in Hugging Face's LlamaAttention (q_proj.weight,
/// k_proj.weight, v_proj.weight, o_proj.weight, and .bias with `bias`), so its state dict
/// loads by name (torchattn::jit::load_state_dict, or named_parameters).
///
/// forward(x [B, L, embed_dim], key_padding_mask [B, L] bool, true = padding) -> [B, L,
/// embed_dim]: the whole sequence, positions 0 .. L-1 (training, or a prompt without cache);
/// fused forward and backward (flex_attention).
///
/// forward_cached(x [B, T, embed_dim], cache, counts int64 [B]) -> [B, T, embed_dim]: T new
/// tokens per row after what `cache` holds; row b's first counts[b] are real (default all T)
/// and are appended at their row's positions. Up to 16 new tokens per row without gradient go
/// to the decoding kernel; a longer prompt (prefill) to the tiled kernel. Outputs of padding
/// tokens (t >= counts[b]) are not meaningful.
///
/// Example:
/// ```
/// torchattn::nn::GroupedQueryAttention attn(
///     torchattn::nn::GroupedQueryAttentionOptions(512, 8).num_kv_heads(2));
/// torchattn::nn::KVCache cache;
/// auto y = attn->forward_cached(prompt, cache);     // [B, L, 512]
/// auto next = attn->forward_cached(token, cache);   // [B, 1, 512]
/// ```
class GroupedQueryAttentionImpl : public torch::nn::Cloneable<GroupedQueryAttentionImpl> {
 public:
  explicit GroupedQueryAttentionImpl(const GroupedQueryAttentionOptions& options_);

  void reset() override;
  void pretty_print(std::ostream& stream) const override;

  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& key_padding_mask = {});
  torch::Tensor forward_cached(
      const torch::Tensor& x, KVCache& cache, const torch::Tensor& counts = {});

  GroupedQueryAttentionOptions options;
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  RotaryEmbedding rotary_emb{nullptr};

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(torch::Tensor())})

 private:
  /// q [B, H, T, hd], k and v [B, H_kv, T, hd] of x [B, T, embed_dim], rotated at positions.
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> project(
      const torch::Tensor& x, const torch::Tensor& positions);
  torch::Tensor merge(const torch::Tensor& out); // [B, H, T, hd] -> o_proj -> [B, T, embed_dim]
  void check_input(const char* fn, const torch::Tensor& x) const;
  functional::GroupedQueryAttentionFuncOptions attention_options() const;

  int64_t head_dim_ = 0, kv_heads_ = 0;
  double scale_ = 1.0;
};

TORCH_MODULE(GroupedQueryAttention);

} // namespace torchattn::nn
