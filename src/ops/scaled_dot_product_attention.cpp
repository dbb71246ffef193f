// The op scaled_dot_product_attention: its schemas, its C++ entry points, and the composite
// that checks the arguments and routes them, once for every dispatch key:
//   - the decoding kernel (decode_attention's forward op) for a few queries per head without
//     mask or gradient, on the CPU;
//   - the fused kernel's forward op (CPU, Meta) when nothing needs the math path;
//   - the math path (ATen ops) for dropout, for masks that require grad, and on devices the
//     fused kernel does not run on.
// Being CompositeImplicitAutograd, the public op traces into these two routes under
// torch.export and torch.compile; gradients come from the forward op's autograd kernel.
//
// Kernels of _scaled_dot_product_attention_forward / _backward:
//   ops/cpu/scaled_dot_product_attention_kernel.cpp        the fused kernel
//   ops/autograd/scaled_dot_product_attention_kernel.cpp   saves statistics, calls backward
//   ops/meta/scaled_dot_product_attention_kernel.cpp       shapes only

#include <torchattn/ops/decode_attention.h>
#include <torchattn/ops/scaled_dot_product_attention.h>

#include "detail/checks.h"
#include "detail/decode_args.h"
#include "detail/math_attention.h"
#include "ops/registration.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/torch.h>

TORCH_LIBRARY_FRAGMENT(torchattn, m) {
  m.def(
      "scaled_dot_product_attention(Tensor query, Tensor key, Tensor value, "
      "Tensor? attn_mask=None, float dropout_p=0.0, bool is_causal=False, "
      "float? scale=None) -> Tensor");
  // The fused kernel's halves; `scale` is already resolved. row_max and row_log_sum
  // [B, H, Lq] are the softmax statistics of each row of scaled, masked scores s: m = max s
  // and log Σ exp(s - m) (see include/torchattn/ops/scaled_dot_product_attention.h).
  m.def(
      "_scaled_dot_product_attention_forward(Tensor query, Tensor key, Tensor value, "
      "Tensor? attn_mask, bool is_causal, float scale) -> "
      "(Tensor output, Tensor row_max, Tensor row_log_sum)");
  m.def(
      "_scaled_dot_product_attention_backward(Tensor grad_output, Tensor query, Tensor key, "
      "Tensor value, Tensor? attn_mask, Tensor output, Tensor row_max, Tensor row_log_sum, "
      "bool is_causal, float scale) -> (Tensor grad_query, Tensor grad_key, Tensor grad_value)");
}

namespace torchattn::ops {

torch::Tensor scaled_dot_product_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask, double dropout_p, bool is_causal,
    c10::optional<double> scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::scaled_dot_product_attention", "")
                       .typed<decltype(scaled_dot_product_attention)>();
  return op.call(query, key, value, attn_mask, dropout_p, is_causal, scale);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> _scaled_dot_product_attention_forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask, bool is_causal, double scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::_scaled_dot_product_attention_forward", "")
                       .typed<decltype(_scaled_dot_product_attention_forward)>();
  return op.call(query, key, value, attn_mask, is_causal, scale);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> _scaled_dot_product_attention_backward(
    const torch::Tensor& grad_output, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const c10::optional<torch::Tensor>& attn_mask,
    const torch::Tensor& output, const torch::Tensor& row_max, const torch::Tensor& row_log_sum,
    bool is_causal, double scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::_scaled_dot_product_attention_backward", "")
                       .typed<decltype(_scaled_dot_product_attention_backward)>();
  return op.call(
      grad_output, query, key, value, attn_mask, output, row_max, row_log_sum, is_causal, scale);
}

namespace {

/// Whether the fused kernel's forward op has a kernel for tensors on `device` (Meta: shapes
/// only, for torch.export, torch.compile and fake tensors).
bool fused_device(const c10::Device& device) {
  return device.is_cpu() || device.is_meta();
}

/// Whether a forward goes to the decoding kernel: on the CPU, up to kDecodeMaxQueries queries
/// per head, no mask and no gradient (the decoding kernel is forward only).
bool decodes(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& mask) {
  return query.device().is_cpu() && !mask.defined() &&
         torchattn::detail::decodable(query, key, value);
}

torch::Tensor scaled_dot_product_attention_composite(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask, double dropout_p, bool is_causal,
    c10::optional<double> scale) {
  // query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev] -> out [B, H, Lq, Ev]
  auto [mask, resolved] = torchattn::detail::check_sdpa_args(
      "torchattn::scaled_dot_product_attention", query, key, value, attn_mask, dropout_p, scale);
  // Dropout and gradients into the mask are not fused: the math path handles both.
  if (dropout_p > 0.0 || (mask.defined() && mask.requires_grad()) ||
      !fused_device(query.device())) {
    return torchattn::detail::math_scaled_dot_product_attention(
        query, key, value, mask, dropout_p, is_causal, resolved);
  }
  if (decodes(query, key, value, mask)) {
    // A few queries per head (decoding): the decoding kernel, with the keys split across
    // threads. top-left causal: query i stands at position i.
    const auto start = is_causal ? c10::optional<torch::Tensor>(torch::zeros(
                                       {query.size(0)}, query.options().dtype(torch::kLong)))
                                 : c10::nullopt;
    return std::get<0>(_decode_attention_forward(
        query, key, value, c10::nullopt, start, is_causal, /*window_left=*/-1, resolved));
  }
  // bfloat16 and float16: the float32 output rounded once, here.
  return std::get<0>(_scaled_dot_product_attention_forward(
                         query, key, value, attn_mask, is_causal, resolved))
      .to(query.scalar_type());
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, CompositeImplicitAutograd, m) {
  m.impl(
      "scaled_dot_product_attention",
      TORCH_FN(torchattn::ops::scaled_dot_product_attention_composite));
}

TORCHATTN_REGISTRATION_ANCHOR(scaled_dot_product_attention_registered)
