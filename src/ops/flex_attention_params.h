#pragma once

// The modifier parameters that every layer of flex_attention takes, in the schemas' order
// (include/torchattn/ops/flex_attention.h), written once: the parameter list, the arguments
// that forward it, and the FlexArgs made of it.

#include "detail/flex_args.h"

#include <c10/util/string_view.h>

#define TORCHATTN_FLEX_SCHEMA_MODIFIERS                                                  \
  "Tensor? attn_mask, Tensor? bias, str causal, int window_left, int window_right, "     \
  "Tensor? q_doc_ids, Tensor? kv_doc_ids, Tensor? prefix_lengths, Tensor? block_kinds, " \
  "Tensor? block_index, Tensor? block_masks, float softcap, Tensor? alibi_slopes, "      \
  "Tensor? position_bias, Tensor? position_buckets"

#define TORCHATTN_FLEX_SCHEMA_MODIFIER_DEFAULTS                                          \
  "Tensor? attn_mask=None, Tensor? bias=None, str causal=\"none\", int window_left=-1, " \
  "int window_right=-1, Tensor? q_doc_ids=None, Tensor? kv_doc_ids=None, "               \
  "Tensor? prefix_lengths=None, Tensor? block_kinds=None, Tensor? block_index=None, "    \
  "Tensor? block_masks=None, float softcap=0.0, Tensor? alibi_slopes=None, "             \
  "Tensor? position_bias=None, Tensor? position_buckets=None"

#define TORCHATTN_FLEX_PARAMS                                                                      \
  const c10::optional<torch::Tensor>&attn_mask, const c10::optional<torch::Tensor>&bias,           \
      c10::string_view causal, int64_t window_left, int64_t window_right,                          \
      const c10::optional<torch::Tensor>&q_doc_ids, const c10::optional<torch::Tensor>&kv_doc_ids, \
      const c10::optional<torch::Tensor>&prefix_lengths,                                           \
      const c10::optional<torch::Tensor>&block_kinds,                                              \
      const c10::optional<torch::Tensor>&block_index,                                              \
      const c10::optional<torch::Tensor>&block_masks, double softcap,                              \
      const c10::optional<torch::Tensor>&alibi_slopes,                                             \
      const c10::optional<torch::Tensor>&position_bias,                                            \
      const c10::optional<torch::Tensor>&position_buckets

#define TORCHATTN_FLEX_ARGS                                                                  \
  attn_mask, bias, causal, window_left, window_right, q_doc_ids, kv_doc_ids, prefix_lengths, \
      block_kinds, block_index, block_masks, softcap, alibi_slopes, position_bias,           \
      position_buckets

/// The modifiers of a function that takes TORCHATTN_FLEX_PARAMS, as one value.
#define TORCHATTN_FLEX_ARGS_VALUE                                                                  \
  ::torchattn::detail::FlexArgs::from(                                                             \
      attn_mask, bias, std::string(causal), window_left, window_right, q_doc_ids, kv_doc_ids,      \
      prefix_lengths, block_kinds, block_index, block_masks, softcap, alibi_slopes, position_bias, \
      position_buckets)
