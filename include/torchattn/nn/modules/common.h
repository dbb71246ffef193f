#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/common.h>
#include <torch/nn/modules/container/any_value.h>
#include <torch/types.h>

/// Default arguments of every attention module's
/// `forward(query, key, value, attn_mask = {}, key_padding_mask = {}, need_weights = false,
///          is_causal = false)`, so that the modules work inside `torch::nn::AnyModule` and
/// `torch::nn::Sequential` with only the first three arguments given.
#define TORCHATTN_ATTENTION_FORWARD_DEFAULT_ARGS                                            \
  FORWARD_HAS_DEFAULT_ARGS(                                                                 \
      {3, torch::nn::AnyValue(torch::Tensor())}, {4, torch::nn::AnyValue(torch::Tensor())}, \
      {5, torch::nn::AnyValue(false)}, {6, torch::nn::AnyValue(false)})
