#pragma once

// The modifiers of flex_attention as one value: gathered once from the op's flat arguments,
// checked by one validator (check_flex_args), read by the math path (math_flex_attention)
// and turned into the fused kernel's FlexMods by its CPU kernel.

#include <torch/types.h>

#include <c10/util/Optional.h>

#include <array>
#include <string>
#include <tuple>

namespace torchattn::detail {

using OptTensor = c10::optional<torch::Tensor>;

/// flex_attention's modifiers (see include/torchattn/ops/flex_attention.h for each one).
struct FlexArgs {
  torch::Tensor attn_mask, bias;
  std::string causal = "none";
  int64_t window_left = -1, window_right = -1;
  torch::Tensor q_doc_ids, kv_doc_ids, prefix_lengths;
  torch::Tensor block_kinds, block_index, block_masks;
  double softcap = 0.0;
  torch::Tensor alibi_slopes, position_bias, position_buckets;

  /// The op's flat arguments as one value (absent optionals become undefined tensors).
  static FlexArgs from(
      const OptTensor& attn_mask, const OptTensor& bias, const std::string& causal,
      int64_t window_left, int64_t window_right, const OptTensor& q_doc_ids,
      const OptTensor& kv_doc_ids, const OptTensor& prefix_lengths, const OptTensor& block_kinds,
      const OptTensor& block_index, const OptTensor& block_masks, double softcap,
      const OptTensor& alibi_slopes, const OptTensor& position_bias,
      const OptTensor& position_buckets);
};

/// What check_flex_args derives: the attn_mask and bias as 4-D [B, H, Lq, Lk] views (broadcast
/// dims stride 0; undefined when absent), the causal alignment (0 none, 1 top-left,
/// 2 bottom-right), document ids as int64 [B' , L], prefix lengths as int64 [B'] and the
/// resolved scale.
struct CheckedFlex {
  torch::Tensor mask4d, bias4d, q_doc, kv_doc, prefix;
  int causal = 0;
  double scale = 1.0;
};

/// Checks query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev] (H_kv = H, or
/// dividing H with enable_gqa), float32 or float64, and every modifier. `read_values`: also
/// check the values of block indices and buckets (false for tensors without data, on Meta).
CheckedFlex check_flex_args(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const FlexArgs& args, c10::optional<double> scale, bool enable_gqa,
    bool read_values = true);

/// check_flex_args for the backward op, and what the forward op gave: grad_output and output
/// [B, H, Lq, Ev], row_max and row_log_sum contiguous [B, H, Lq].
CheckedFlex check_flex_backward_args(
    const char* fn, const torch::Tensor& grad_output, const torch::Tensor& query,
    const torch::Tensor& key, const torch::Tensor& value, const FlexArgs& args,
    const torch::Tensor& output, const torch::Tensor& row_max, const torch::Tensor& row_log_sum,
    double scale);

/// The modified, masked scores of query rows `rows` (int64 [R], positions in [0, Lq)) of
/// query_rows [B, H, R, E] against key [B, H_kv, Lk, E]: [B, H, R, Lk], -inf where masked.
torch::Tensor flex_scores(
    const torch::Tensor& query_rows, const torch::Tensor& rows, const torch::Tensor& key,
    int64_t Lq, const FlexArgs& args, const CheckedFlex& checked);

/// flex_attention by ATen ops (differentiable in everything, to any order; O(Lq·Lk) memory):
/// (out [B, H, Lq, Ev], lse [B, H, Lq], weights [B, H, Lq, Lk]); a row with no key to attend
/// has zero output and weights, and lse -inf.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> math_flex_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const FlexArgs& args, const CheckedFlex& checked);

} // namespace torchattn::detail
