#include <torchattn/nn/modules/flex_attention.h>

#include "detail/printing.h"

#include <torch/torch.h>

#include <cmath>

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

FlexAttentionImpl::FlexAttentionImpl(const FlexAttentionOptions& options_) : options(options_) {
  reset();
}

void FlexAttentionImpl::reset() {
  constexpr const char* fn = "torchattn::nn::FlexAttention";
  const auto& o = options;
  TORCH_CHECK(o.num_heads() >= 1, fn, ": num_heads is ", o.num_heads(), ", expected >= 1");
  TORCH_CHECK(
      o.causal() == "none" || o.causal() == "top_left" || o.causal() == "bottom_right", fn,
      ": causal is \"", o.causal(), "\", expected \"none\", \"top_left\" or \"bottom_right\"");
  TORCH_CHECK(
      std::isfinite(o.softcap()) && o.softcap() >= 0, fn, ": softcap is ", o.softcap(),
      ", expected 0 (none) or a finite cap > 0");
  TORCH_CHECK(
      o.position_buckets() >= 0, fn, ": position_buckets is ", o.position_buckets(),
      ", expected 0 (none) or a count of buckets");
  if (o.position_buckets() > 0) {
    // Checked here, once, rather than on the first forward.
    F::t5_position_buckets(1, 1, o.position_buckets(), o.max_distance(), o.bidirectional());
    position_bias = register_parameter(
        "position_bias", torch::randn({o.num_heads(), o.position_buckets()}) * 0.02);
  }
  if (o.alibi() || o.learnable_alibi()) {
    auto slopes = F::alibi_slopes(o.num_heads());
    alibi_slopes = o.learnable_alibi() ? register_parameter("alibi_slopes", slopes)
                                       : register_buffer("alibi_slopes", slopes);
  }
}

void FlexAttentionImpl::pretty_print(std::ostream& stream) const {
  const auto& o = options;
  stream << "torchattn::nn::FlexAttention(num_heads=" << o.num_heads() << ", causal=" << o.causal()
         << ", window_left=" << o.window_left() << ", window_right=" << o.window_right()
         << ", softcap=" << o.softcap() << ", alibi=" << (o.alibi() || o.learnable_alibi())
         << ", position_buckets=" << o.position_buckets() << ", scale=";
  detail::print_optional(stream, o.scale());
  stream << ", enable_gqa=" << o.enable_gqa() << ")";
}

std::tuple<torch::Tensor, torch::Tensor> FlexAttentionImpl::forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& q_doc_ids, const torch::Tensor& kv_doc_ids,
    const torch::Tensor& attn_mask) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev] -> out [B, H, Lq, Ev]
  const auto& o = options;
  auto f = F::FlexAttentionFuncOptions()
               .causal(o.causal())
               .window_left(o.window_left())
               .window_right(o.window_right())
               .softcap(o.softcap())
               .scale(o.scale())
               .enable_gqa(o.enable_gqa())
               .q_doc_ids(q_doc_ids)
               .kv_doc_ids(kv_doc_ids)
               .attn_mask(attn_mask)
               .alibi_slopes(alibi_slopes);
  if (position_bias.defined()) {
    const int64_t Lq = query.dim() == 4 ? query.size(2) : 0, Lk = key.dim() == 4 ? key.size(2) : 0;
    f.position_bias(position_bias)
        .position_buckets(F::t5_position_buckets(
                              Lq, Lk, o.position_buckets(), o.max_distance(), o.bidirectional())
                              .to(query.device()));
  }
  auto r = F::flex_attention(query, key, value, f);
  return {r.output, r.lse};
}

} // namespace torchattn::nn
