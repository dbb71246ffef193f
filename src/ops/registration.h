#pragma once

// Anchors of the files that register ops and kernels. Each returns true; ops_registered() (which
// <torchattn/torchattn.h> references) calls them all, so that a static build keeps every
// file's TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL.

namespace torchattn::ops::detail {

bool scaled_dot_product_attention_registered();
bool scaled_dot_product_attention_cpu_registered();
bool scaled_dot_product_attention_autograd_registered();
bool scaled_dot_product_attention_meta_registered();
bool scaled_dot_product_attention_autocast_registered();
bool additive_attention_scores_registered();
bool additive_attention_scores_cpu_registered();
bool additive_attention_scores_autograd_registered();
bool additive_attention_scores_meta_registered();
bool additive_attention_scores_autocast_registered();
bool flex_attention_registered();
bool flex_attention_cpu_registered();
bool flex_attention_autograd_registered();
bool flex_attention_meta_registered();
bool flex_attention_autocast_registered();
bool decode_attention_registered();
bool decode_attention_cpu_registered();
bool decode_attention_autograd_registered();
bool decode_attention_meta_registered();
bool decode_attention_autocast_registered();
bool graph_attention_registered();
bool graph_attention_cpu_registered();
bool graph_attention_autograd_registered();
bool graph_attention_meta_registered();
bool graph_attention_autocast_registered();
bool table_bias_registered();
bool table_bias_cpu_registered();
bool table_bias_autograd_registered();
bool table_bias_meta_registered();
bool capability_registered();

} // namespace torchattn::ops::detail

/// Defines the anchor `name` (declared above) of the file that registers; use at file scope.
#define TORCHATTN_REGISTRATION_ANCHOR(name) \
  namespace torchattn::ops::detail {        \
  bool name() {                             \
    return true;                            \
  }                                         \
  }
