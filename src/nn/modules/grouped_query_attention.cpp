#include <torchattn/nn/modules/grouped_query_attention.h>

#include <torchattn/nn/functional/grouped_query_attention.h>

#include "detail/checks.h"

#include <torch/torch.h>

#include <cmath>

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

GroupedQueryAttentionImpl::GroupedQueryAttentionImpl(const GroupedQueryAttentionOptions& options_)
    : options(options_) {
  reset();
}

void GroupedQueryAttentionImpl::reset() {
  constexpr const char* fn = "GroupedQueryAttention";
  const auto& o = options;
  TORCH_CHECK(
      o.embed_dim() > 0 && o.num_heads() > 0, fn, ": embed_dim ", o.embed_dim(), " and num_heads ",
      o.num_heads(), ", expected both > 0");
  head_dim_ = o.head_dim() > 0 ? o.head_dim() : o.embed_dim() / o.num_heads();
  TORCH_CHECK(
      o.head_dim() > 0 || o.embed_dim() % o.num_heads() == 0, fn, ": embed_dim ", o.embed_dim(),
      " is not divisible by num_heads ", o.num_heads(), ", expected a multiple (or set head_dim)");
  kv_heads_ = o.num_kv_heads() > 0 ? o.num_kv_heads() : o.num_heads();
  TORCH_CHECK(
      o.num_heads() % kv_heads_ == 0, fn, ": num_kv_heads is ", kv_heads_,
      ", expected a divisor of num_heads = ", o.num_heads());
  TORCH_CHECK(
      o.sliding_window() == -1 || o.sliding_window() > 0, fn, ": sliding_window is ",
      o.sliding_window(), ", expected -1 (none) or a count > 0");
  scale_ = o.scale().has_value() ? *o.scale() : 1.0 / std::sqrt(static_cast<double>(head_dim_));
  const auto linear = [&](int64_t in, int64_t out) {
    return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(o.bias()));
  };
  q_proj = register_module("q_proj", linear(o.embed_dim(), o.num_heads() * head_dim_));
  k_proj = register_module("k_proj", linear(o.embed_dim(), kv_heads_ * head_dim_));
  v_proj = register_module("v_proj", linear(o.embed_dim(), kv_heads_ * head_dim_));
  o_proj = register_module("o_proj", linear(o.num_heads() * head_dim_, o.embed_dim()));
  if (o.rope()) {
    auto rotary = o.rotary();
    if (rotary.head_dim() == 0) {
      rotary.head_dim(head_dim_);
    }
    TORCH_CHECK(
        rotary.head_dim() == head_dim_, fn, ": rotary.head_dim is ", rotary.head_dim(),
        ", expected the block's head_dim ", head_dim_);
    rotary_emb = register_module("rotary_emb", RotaryEmbedding(rotary));
  }
}

void GroupedQueryAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << "torchattn::nn::GroupedQueryAttention(embed_dim=" << options.embed_dim()
         << ", num_heads=" << options.num_heads() << ", num_kv_heads=" << kv_heads_
         << ", head_dim=" << head_dim_ << ", bias=" << (options.bias() ? "true" : "false")
         << ", rope=" << (options.rope() ? "true" : "false")
         << ", sliding_window=" << options.sliding_window()
         << ", is_causal=" << (options.is_causal() ? "true" : "false") << ")";
}

void GroupedQueryAttentionImpl::check_input(const char* fn, const torch::Tensor& x) const {
  TORCH_CHECK(
      x.defined() && x.dim() == 3 && x.size(2) == options.embed_dim(), fn, ": x has shape ",
      x.defined() ? torchattn::detail::shape_str(x.sizes()) : "undefined", ", expected [B, L, ",
      options.embed_dim(), "] (embed_dim)");
  torchattn::detail::check_like_parameters(fn, "x", x, q_proj->weight);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> GroupedQueryAttentionImpl::project(
    const torch::Tensor& x, const torch::Tensor& positions) {
  const int64_t B = x.size(0), T = x.size(1);
  auto q = q_proj(x).view({B, T, options.num_heads(), head_dim_}).transpose(1, 2);
  auto k = k_proj(x).view({B, T, kv_heads_, head_dim_}).transpose(1, 2);
  auto v = v_proj(x).view({B, T, kv_heads_, head_dim_}).transpose(1, 2);
  if (rotary_emb) {
    q = rotary_emb(q, positions);
    k = rotary_emb(k, positions);
  }
  return {q, k, v};
}

torch::Tensor GroupedQueryAttentionImpl::merge(const torch::Tensor& out) {
  const int64_t B = out.size(0), T = out.size(2);
  return o_proj(out.transpose(1, 2).reshape({B, T, options.num_heads() * head_dim_}));
}

F::GroupedQueryAttentionFuncOptions GroupedQueryAttentionImpl::attention_options() const {
  return F::GroupedQueryAttentionFuncOptions()
      .is_causal(options.is_causal())
      .sliding_window(options.sliding_window())
      .scale(scale_);
}

torch::Tensor GroupedQueryAttentionImpl::forward(
    const torch::Tensor& x, const torch::Tensor& key_padding_mask) {
  // x [B, L, D], key_padding_mask [B, L] -> [B, L, D]
  check_input("GroupedQueryAttention", x);
  auto [q, k, v] = project(x, torch::arange(x.size(1), torch::kLong));
  return merge(
      F::grouped_query_attention(q, k, v, attention_options().key_padding_mask(key_padding_mask)));
}

torch::Tensor GroupedQueryAttentionImpl::forward_cached(
    const torch::Tensor& x, KVCache& cache, const torch::Tensor& counts) {
  // x [B, T, D], counts [B] -> [B, T, D]
  constexpr const char* fn = "GroupedQueryAttention::forward_cached";
  check_input(fn, x);
  const int64_t B = x.size(0), T = x.size(1);
  TORCH_CHECK(
      cache.empty() || cache.batch_size() == B, fn, ": x has batch ", B,
      ", expected the cache's batch ", cache.batch_size());
  auto start = cache.empty() ? torch::zeros({B}, torch::kLong) : cache.lengths();
  auto positions = start.view({B, 1}) + torch::arange(T, torch::kLong);
  auto [q, k, v] = project(x, positions);
  cache.append(k, v, counts);
  return merge(F::grouped_query_attention(
      q, cache.key(), cache.value(),
      attention_options()
          .kv_lengths(cache.lengths().to(x.device()))
          .q_start(start.to(x.device()))));
}

} // namespace torchattn::nn
