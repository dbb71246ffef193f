// The op flex_attention: its schemas, its C++ entry points, and the composite that checks the
// arguments and routes them, once for every dispatch key:
//   - the decoding kernel (decode_attention's forward op) for a few queries per head with only
//     causal and window masks and no gradient, on the CPU;
//   - the fused kernel's forward op (CPU, Meta);
//   - the math path (ATen ops) on devices the fused kernel does not run on.
// Being CompositeImplicitAutograd, the public op traces into these routes under torch.export
// and torch.compile; gradients come from the forward op's autograd kernel. The op
// flex_attention_weights recomputes the weights of chosen rows from the lse.
//
// Kernels of _flex_attention_forward / _backward:
//   ops/cpu/flex_attention_kernel.cpp        the fused kernel with its modifiers
//   ops/autograd/flex_attention_kernel.cpp   saves statistics, calls backward
//   ops/meta/flex_attention_kernel.cpp       shapes only

#include <torchattn/ops/decode_attention.h>
#include <torchattn/ops/flex_attention.h>

#include "detail/checks.h"
#include "detail/decode_args.h"
#include "detail/flex_args.h"
#include "ops/flex_attention_params.h"
#include "ops/registration.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/torch.h>

TORCH_LIBRARY_FRAGMENT(torchattn, m) {
  m.def(
      "flex_attention(Tensor query, Tensor key, Tensor value, "
      "*, " TORCHATTN_FLEX_SCHEMA_MODIFIER_DEFAULTS
      ", float? scale=None, bool enable_gqa=False) -> (Tensor output, Tensor lse)");
  m.def(
      "flex_attention_weights(Tensor query, Tensor key, Tensor lse, Tensor rows, "
      "*, " TORCHATTN_FLEX_SCHEMA_MODIFIER_DEFAULTS
      ", float? scale=None, bool enable_gqa=False) -> Tensor");
  // The fused kernel's halves; `scale` is already resolved. row_max and row_log_sum are the
  // softmax statistics of each row (as for _scaled_dot_product_attention_forward).
  m.def(
      "_flex_attention_forward(Tensor query, Tensor key, Tensor "
      "value, " TORCHATTN_FLEX_SCHEMA_MODIFIERS
      ", float scale) -> (Tensor output, Tensor row_max, Tensor row_log_sum)");
  m.def(
      "_flex_attention_backward(Tensor grad_output, Tensor query, Tensor key, Tensor "
      "value, " TORCHATTN_FLEX_SCHEMA_MODIFIERS
      ", Tensor output, Tensor row_max, Tensor row_log_sum, float scale, bool[3] modifier_grads) "
      "-> (Tensor grad_query, Tensor grad_key, Tensor grad_value, Tensor grad_bias, "
      "Tensor grad_position_bias, Tensor grad_alibi_slopes)");
}

namespace torchattn::ops {

std::tuple<torch::Tensor, torch::Tensor> flex_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    TORCHATTN_FLEX_PARAMS, c10::optional<double> scale, bool enable_gqa) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::flex_attention", "")
                       .typed<decltype(flex_attention)>();
  return op.call(query, key, value, TORCHATTN_FLEX_ARGS, scale, enable_gqa);
}

torch::Tensor flex_attention_weights(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& lse,
    const torch::Tensor& rows, TORCHATTN_FLEX_PARAMS, c10::optional<double> scale,
    bool enable_gqa) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::flex_attention_weights", "")
                       .typed<decltype(flex_attention_weights)>();
  return op.call(query, key, lse, rows, TORCHATTN_FLEX_ARGS, scale, enable_gqa);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> _flex_attention_forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    TORCHATTN_FLEX_PARAMS, double scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::_flex_attention_forward", "")
                       .typed<decltype(_flex_attention_forward)>();
  return op.call(query, key, value, TORCHATTN_FLEX_ARGS, scale);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor, torch::Tensor>
_flex_attention_backward(
    const torch::Tensor& grad_output, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, TORCHATTN_FLEX_PARAMS, const torch::Tensor& output,
    const torch::Tensor& row_max, const torch::Tensor& row_log_sum, double scale,
    std::array<bool, 3> modifier_grads) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::_flex_attention_backward", "")
                       .typed<decltype(_flex_attention_backward)>();
  return op.call(
      grad_output, query, key, value, TORCHATTN_FLEX_ARGS, output, row_max, row_log_sum, scale,
      modifier_grads);
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

/// Whether a forward goes to the decoding kernel: on the CPU, up to kDecodeMaxQueries queries
/// per head, no gradient (the decoding kernel is forward only), and no modifier but causal
/// and window_left.
bool decodes(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torchattn::detail::FlexArgs& a) {
  const bool plain = !a.attn_mask.defined() && !a.bias.defined() && a.window_right == -1 &&
                     !a.q_doc_ids.defined() && !a.prefix_lengths.defined() &&
                     !a.block_kinds.defined() && a.softcap == 0.0 && !a.alibi_slopes.defined() &&
                     !a.position_bias.defined();
  return query.device().is_cpu() && plain && torchattn::detail::decodable(query, key, value);
}

std::tuple<torch::Tensor, torch::Tensor> flex_attention_composite(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    TORCHATTN_FLEX_PARAMS, c10::optional<double> scale, bool enable_gqa) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev]
  //   -> output [B, H, Lq, Ev], lse [B, H, Lq]
  const auto args = TORCHATTN_FLEX_ARGS_VALUE;
  const auto checked = torchattn::detail::check_flex_args(
      "torchattn::flex_attention", query, key, value, args, scale, enable_gqa,
      /*read_values=*/!query.is_meta());
  if (!(query.device().is_cpu() || query.device().is_meta())) {
    auto [out, lse, weights] =
        torchattn::detail::math_flex_attention(query, key, value, args, checked);
    return {out, lse};
  }
  if (decodes(query, key, value, args)) {
    // A few queries per head (decoding) with causal and window masks only: the decoding
    // kernel, with the keys split across threads.
    const auto zeros = torch::zeros({query.size(0)}, query.options().dtype(torch::kLong));
    const auto start = checked.causal == 2 ? c10::nullopt : c10::optional<torch::Tensor>(zeros);
    return _decode_attention_forward(
        query, key, value, c10::nullopt, start, /*is_causal=*/checked.causal != 0, window_left,
        checked.scale);
  }
  // An additive attn_mask that requires grad is a bias: its gradient is fused.
  const bool mask_is_bias = attn_mask.has_value() && attn_mask->defined() &&
                            attn_mask->requires_grad() && attn_mask->is_floating_point();
  TORCH_CHECK(
      !(mask_is_bias && bias.has_value() && bias->defined()),
      "torchattn::flex_attention: attn_mask requires grad and bias is given, expected one "
      "differentiable additive term (add them, or pass the mask without grad)");
  const c10::optional<torch::Tensor> none;
  auto [out, row_max, row_log_sum] = _flex_attention_forward(
      query, key, value, mask_is_bias ? none : attn_mask, mask_is_bias ? attn_mask : bias, causal,
      window_left, window_right, q_doc_ids, kv_doc_ids, prefix_lengths, block_kinds, block_index,
      block_masks, softcap, alibi_slopes, position_bias, position_buckets, checked.scale);
  auto lse = (row_max + row_log_sum).masked_fill(row_max.eq(-kInf), -kInf);
  // bfloat16 and float16: the float32 output rounded once, here.
  return {out.to(query.scalar_type()), lse};
}

torch::Tensor flex_attention_weights_composite(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& lse,
    const torch::Tensor& rows, TORCHATTN_FLEX_PARAMS, c10::optional<double> scale,
    bool enable_gqa) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], lse [B, H, Lq], rows [R] -> [B, H, R, Lk]
  constexpr const char* fn = "torchattn::flex_attention_weights";
  const auto args = TORCHATTN_FLEX_ARGS_VALUE;
  // value only shapes the checks: key stands in for it.
  const auto checked =
      torchattn::detail::check_flex_args(fn, query, key, key, args, scale, enable_gqa);
  const int64_t Lq = query.size(2);
  TORCH_CHECK(
      lse.defined() && lse.sizes() == query.sizes().slice(0, 3) &&
          lse.scalar_type() == torchattn::detail::stats_dtype(query.scalar_type()),
      fn, ": lse has shape ",
      lse.defined() ? torchattn::detail::shape_str(lse.sizes()) : "undefined", ", expected ",
      torchattn::detail::shape_str(query.sizes().slice(0, 3)), " ",
      torchattn::detail::stats_dtype(query.scalar_type()), " from flex_attention");
  TORCH_CHECK(
      rows.defined() && rows.dim() == 1 && rows.scalar_type() == torch::kLong, fn,
      ": rows has shape ",
      rows.defined() ? torchattn::detail::shape_str(rows.sizes()) : "undefined",
      ", expected Long [R] (query rows)");
  TORCH_CHECK(
      rows.numel() == 0 || (rows.min().item<int64_t>() >= 0 && rows.max().item<int64_t>() < Lq), fn,
      ": rows has a row outside [0, ", Lq, ")");
  auto s =
      torchattn::detail::flex_scores(query.index_select(2, rows), rows, key, Lq, args, checked);
  auto l = lse.index_select(2, rows).unsqueeze(-1);
  // exp(s - lse) is the softmax where the row has a key; a row with none has weights 0.
  return (s - l.masked_fill(l.eq(-kInf), 0.0))
      .exp()
      .masked_fill(l.eq(-kInf), 0.0)
      .to(query.scalar_type());
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, CompositeImplicitAutograd, m) {
  m.impl("flex_attention", TORCH_FN(torchattn::ops::flex_attention_composite));
  m.impl("flex_attention_weights", TORCH_FN(torchattn::ops::flex_attention_weights_composite));
}

TORCHATTN_REGISTRATION_ANCHOR(flex_attention_registered)
