#pragma once

/// Every dispatcher op of the `torchattn` library, one header per op.

#include <torchattn/ops/additive_attention_scores.h>
#include <torchattn/ops/capability.h>
#include <torchattn/ops/decode_attention.h>
#include <torchattn/ops/flex_attention.h>
#include <torchattn/ops/graph_attention.h>
#include <torchattn/ops/scaled_dot_product_attention.h>
#include <torchattn/ops/table_bias.h>

namespace torchattn::ops {

/// Whether the op library is registered. Referenced by <torchattn/torchattn.h>, so that linking
/// any torchattn code keeps the static registrations (which nothing else references).
bool ops_registered();

} // namespace torchattn::ops
