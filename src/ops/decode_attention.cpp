// The op decode_attention: its schemas, its C++ entry points, and the composite that checks
// the arguments and routes them, once for every dispatch key:
//   - the decoding kernel's op (CPU, Meta) for up to kDecodeMaxQueries queries per head when no
//     gradient is needed;
//   - flex_attention with the same masks as a dense boolean mask otherwise (prefill, training),
//     whose tiled kernel is differentiable.
//
// Kernels of _decode_attention_forward:
//   ops/cpu/decode_attention_kernel.cpp        the decoding kernel (ops/cpu/flash_decoding/)
//   ops/autograd/decode_attention_kernel.cpp   refuses gradients (the composite routes them)
//   ops/meta/decode_attention_kernel.cpp       shapes only

#include <torchattn/ops/decode_attention.h>
#include <torchattn/ops/flex_attention.h>

#include "detail/decode_args.h"
#include "ops/registration.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>
#include <torch/torch.h>

TORCH_LIBRARY_FRAGMENT(torchattn, m) {
  m.def(
      "decode_attention(Tensor query, Tensor key, Tensor value, *, Tensor? kv_lengths=None, "
      "Tensor? q_start=None, bool is_causal=True, int window_left=-1, float? scale=None) -> "
      "(Tensor output, Tensor lse)");
  m.def(
      "_decode_attention_forward(Tensor query, Tensor key, Tensor value, Tensor? kv_lengths, "
      "Tensor? q_start, bool is_causal, int window_left, float scale) -> "
      "(Tensor output, Tensor lse)");
}

namespace torchattn::ops {

std::tuple<torch::Tensor, torch::Tensor> decode_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& kv_lengths, const c10::optional<torch::Tensor>& q_start,
    bool is_causal, int64_t window_left, c10::optional<double> scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::decode_attention", "")
                       .typed<decltype(decode_attention)>();
  return op.call(query, key, value, kv_lengths, q_start, is_causal, window_left, scale);
}

std::tuple<torch::Tensor, torch::Tensor> _decode_attention_forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& kv_lengths, const c10::optional<torch::Tensor>& q_start,
    bool is_causal, int64_t window_left, double scale) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::_decode_attention_forward", "")
                       .typed<decltype(_decode_attention_forward)>();
  return op.call(query, key, value, kv_lengths, q_start, is_causal, window_left, scale);
}

namespace {

std::tuple<torch::Tensor, torch::Tensor> decode_attention_composite(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& kv_lengths, const c10::optional<torch::Tensor>& q_start,
    bool is_causal, int64_t window_left, c10::optional<double> scale) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev]
  //   -> output [B, H, Lq, Ev], lse [B, H, Lq]
  constexpr const char* fn = "torchattn::decode_attention";
  const double resolved = torchattn::detail::check_decode_args(
      fn, query, key, value, kv_lengths, q_start, window_left, scale,
      /*read_values=*/!query.is_meta());
  if ((query.device().is_cpu() || query.device().is_meta()) &&
      torchattn::detail::decodable(query, key, value)) {
    return _decode_attention_forward(
        query, key, value, kv_lengths, q_start, is_causal, window_left, resolved);
  }
  const c10::optional<torch::Tensor> none;
  const auto mask =
      torchattn::detail::decode_mask(query, key, kv_lengths, q_start, is_causal, window_left);
  return flex_attention(
      query, key, value, mask, none, "none", -1, -1, none, none, none, none, none, none, 0.0, none,
      none, none, resolved, /*enable_gqa=*/true);
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, CompositeImplicitAutograd, m) {
  m.impl("decode_attention", TORCH_FN(torchattn::ops::decode_attention_composite));
}

TORCHATTN_REGISTRATION_ANCHOR(decode_attention_registered)
