#pragma once

/// The umbrella header of torchattn: attention mechanisms for LibTorch.
///
/// Example:
/// ```
/// #include <torchattn/torchattn.h>
///
/// torchattn::nn::ScaledDotProductAttention attn;
/// auto [out, weights] = attn(q, k, v);
/// ```

#include <torchattn/autocast.h>
#include <torchattn/nn/functional/attention.h>
#include <torchattn/nn/functional/flex_attention.h>
#include <torchattn/nn/functional/graph_attention.h>
#include <torchattn/nn/functional/grouped_query_attention.h>
#include <torchattn/nn/functional/multihead_attention.h>
#include <torchattn/nn/functional/rotary_embedding.h>
#include <torchattn/nn/kv_cache.h>
#include <torchattn/nn/modules/additive_attention.h>
#include <torchattn/nn/modules/cosine_attention.h>
#include <torchattn/nn/modules/dot_product_attention.h>
#include <torchattn/nn/modules/flex_attention.h>
#include <torchattn/nn/modules/gat_conv.h>
#include <torchattn/nn/modules/gatv2_conv.h>
#include <torchattn/nn/modules/general_attention.h>
#include <torchattn/nn/modules/graph_transformer_conv.h>
#include <torchattn/nn/modules/grouped_query_attention.h>
#include <torchattn/nn/modules/multihead_attention.h>
#include <torchattn/nn/modules/rotary_embedding.h>
#include <torchattn/nn/modules/scaled_dot_product_attention.h>
#include <torchattn/nn/options/attention.h>
#include <torchattn/nn/options/flex_attention.h>
#include <torchattn/nn/options/graph_attention.h>
#include <torchattn/nn/options/grouped_query_attention.h>
#include <torchattn/nn/options/multihead_attention.h>
#include <torchattn/nn/options/rotary_embedding.h>
#include <torchattn/ops/attention.h>
#include <torchattn/version.h>

namespace torchattn::detail {
/// Referencing the op library keeps its static registrations (TORCH_LIBRARY), which nothing
/// else calls, when torchattn is linked statically.
inline const bool ops_anchor = torchattn::ops::ops_registered();
} // namespace torchattn::detail
