#include <torchattn/nn/functional/grouped_query_attention.h>

#include <torchattn/nn/functional/flex_attention.h>
#include <torchattn/ops/decode_attention.h>

#include "detail/checks.h"
#include "detail/optional_tensor.h"

#include <torch/torch.h>

namespace torchattn::nn::functional {

torch::Tensor grouped_query_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const GroupedQueryAttentionFuncOptions& options) {
  constexpr const char* fn = "grouped_query_attention";
  TORCH_CHECK(
      options.sliding_window() == -1 || options.sliding_window() > 0, fn, ": sliding_window is ",
      options.sliding_window(), ", expected -1 (none) or a count > 0");
  const int64_t window_left = options.sliding_window() > 0 ? options.sliding_window() - 1 : -1;
  const auto& padding = options.key_padding_mask();
  if (options.kv_lengths().defined() || options.q_start().defined()) {
    TORCH_CHECK(
        !padding.defined(), fn,
        ": key_padding_mask with kv_lengths or q_start, expected one of them (a cache's "
        "padding is its lengths)");
    return std::get<0>(torchattn::ops::decode_attention(
        query, key, value, detail::optional_tensor(options.kv_lengths()),
        detail::optional_tensor(options.q_start()), options.is_causal(), window_left,
        options.scale()));
  }
  auto flex = FlexAttentionFuncOptions()
                  .causal(options.is_causal() ? "bottom_right" : "none")
                  .window_left(window_left)
                  .scale(options.scale())
                  .enable_gqa(true);
  if (padding.defined()) {
    TORCH_CHECK(
        query.dim() == 4 && key.dim() == 4, fn, ": query and key have ", query.dim(), " and ",
        key.dim(), " dims, expected [B, H, Lq, E] and [B, H_kv, Lk, E]");
    const int64_t B = query.size(0), Lk = key.size(2);
    TORCH_CHECK(
        padding.dim() == 2 && padding.size(0) == B && padding.size(1) == Lk &&
            padding.scalar_type() == torch::kBool,
        fn, ": key_padding_mask has shape ", torchattn::detail::shape_str(padding.sizes()), " ",
        padding.scalar_type(), ", expected Bool [", B, ", ", Lk, "] (true = padding)");
    flex.attn_mask(padding.logical_not().view({B, 1, 1, Lk}).to(query.device()));
  }
  return flex_attention(query, key, value, flex).output;
}

} // namespace torchattn::nn::functional
