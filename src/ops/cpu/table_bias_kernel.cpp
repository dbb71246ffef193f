// CPU kernels of table_bias and _table_bias_backward: the lookup bias[b, h, i, j] =
// table[h, index[b, i, j]], and its backward, which sums grad_bias into each head's row of
// the table over (b, i, j) in order, in float64: one task per head, no atomics, so the result
// is the same for every thread count.

#include <torchattn/ops/table_bias.h>

#include "detail/graph_args.h"
#include "ops/registration.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <vector>

namespace torchattn::ops {

namespace {

torch::Tensor table_bias_cpu(const torch::Tensor& table, const torch::Tensor& index) {
  // table [H, T], index [B, Lq, Lk] or [Lq, Lk] -> bias [B, H, Lq, Lk]
  const auto shape = torchattn::detail::check_table_bias_args(
      "torchattn::table_bias", table, index, /*read_values=*/true);
  const int64_t B = shape[0], H = shape[1], pairs = shape[2] * shape[3];
  auto flat = index.reshape({B, pairs});
  // [H, B * pairs] -> [B, H, Lq, Lk]
  return table.index_select(1, flat.reshape({-1}))
      .view({H, B, shape[2], shape[3]})
      .transpose(0, 1)
      .contiguous();
}

torch::Tensor table_bias_backward_cpu(
    const torch::Tensor& grad_bias, const torch::Tensor& index, int64_t num_entries) {
  // grad_bias [B, H, Lq, Lk] -> grad_table [H, num_entries]
  torchattn::detail::check_table_bias_backward_args(
      "torchattn::_table_bias_backward", grad_bias, index, num_entries);
  const int64_t B = grad_bias.size(0), H = grad_bias.size(1);
  const int64_t pairs = grad_bias.size(2) * grad_bias.size(3);
  const auto g = grad_bias.contiguous();
  const auto idx = index.reshape({-1, pairs}).contiguous();
  const int64_t idx_b = idx.size(0) == 1 ? 0 : pairs;
  auto out = torch::empty({H, num_entries}, grad_bias.options());
  const int64_t* ix = idx.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, g.scalar_type(), "table_bias_backward", [&] {
        const scalar_t* gp = g.data_ptr<scalar_t>();
        scalar_t* op = out.data_ptr<scalar_t>();
        at::parallel_for(0, H, 1, [&](int64_t h0, int64_t h1) {
          std::vector<double> acc(num_entries);
          for (int64_t h = h0; h < h1; ++h) {
            std::fill(acc.begin(), acc.end(), 0.0);
            for (int64_t b = 0; b < B; ++b) {
              const scalar_t* row = gp + (b * H + h) * pairs;
              const int64_t* irow = ix + b * idx_b;
              for (int64_t p = 0; p < pairs; ++p) {
                acc[irow[p]] += static_cast<double>(row[p]);
              }
            }
            for (int64_t t = 0; t < num_entries; ++t) {
              op[h * num_entries + t] = static_cast<scalar_t>(acc[t]);
            }
          }
        });
      });
  return out;
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, CPU, m) {
  m.impl("table_bias", TORCH_FN(torchattn::ops::table_bias_cpu));
  m.impl("_table_bias_backward", TORCH_FN(torchattn::ops::table_bias_backward_cpu));
}

TORCHATTN_REGISTRATION_ANCHOR(table_bias_cpu_registered)
