// Meta (shape-only) kernels of table_bias and its backward: the CPU kernels' checks without
// reading the index, outputs without data.

#include "detail/graph_args.h"
#include "ops/registration.h"

#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

torch::Tensor table_bias_meta(const torch::Tensor& table, const torch::Tensor& index) {
  // table [H, T], index [B, Lq, Lk] -> bias [B, H, Lq, Lk]
  return at::empty(
      torchattn::detail::check_table_bias_args(
          "torchattn::table_bias", table, index, /*read_values=*/false),
      table.options());
}

torch::Tensor table_bias_backward_meta(
    const torch::Tensor& grad_bias, const torch::Tensor& index, int64_t num_entries) {
  torchattn::detail::check_table_bias_backward_args(
      "torchattn::_table_bias_backward", grad_bias, index, num_entries);
  return at::empty({grad_bias.size(1), num_entries}, grad_bias.options());
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Meta, m) {
  m.impl("table_bias", TORCH_FN(torchattn::ops::table_bias_meta));
  m.impl("_table_bias_backward", TORCH_FN(torchattn::ops::table_bias_backward_meta));
}

TORCHATTN_REGISTRATION_ANCHOR(table_bias_meta_registered)
