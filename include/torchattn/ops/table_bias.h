#pragma once

/// The op `torchattn::table_bias` and its backward, through the dispatcher:
///
/// ```
/// torchattn::table_bias(Tensor table, Tensor index) -> Tensor
/// torchattn::_table_bias_backward(Tensor grad_bias, Tensor index, int num_entries) -> Tensor
/// ```
///
/// Kernels: src/ops/{cpu,autograd,meta}/table_bias_kernel.cpp.

#include <torch/types.h>

namespace torchattn::ops {

/// A learnable bias looked up per query-key pair: bias[b, h, i, j] = table[h, index[b, i, j]],
/// such as Graphormer's spatial encoding (index: shortest-path distances, clamped to the
/// table) or its edge encodings. Pass the result as flex_attention's `bias`, whose fused kernel
/// gives its gradient; this op's backward sums that gradient into the table per head in a
/// fixed order (float64 sums, no atomics), so the table's gradient is bit-identical for every
/// thread count.
///
/// table [H, T], index int64 [B, Lq, Lk] or [Lq, Lk] (values in [0, T)) -> bias [B, H, Lq, Lk]
/// (B = 1 for a 2-D index). float32, float64, bfloat16 and float16; differentiable in table.
///
/// Example:
/// ```
/// auto table = torch::zeros({8, 16}, torch::requires_grad());   // 8 heads, distances 0..15
/// auto bias = torchattn::ops::table_bias(table, spd.clamp_max(15));  // spd [B, L, L]
/// ```
torch::Tensor table_bias(const torch::Tensor& table, const torch::Tensor& index);

/// The backward of table_bias: grad_table [H, num_entries] from grad_bias [B, H, Lq, Lk].
torch::Tensor _table_bias_backward(
    const torch::Tensor& grad_bias, const torch::Tensor& index, int64_t num_entries);

} // namespace torchattn::ops
