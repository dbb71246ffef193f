// The op table_bias: its schemas and C++ entry points. Kernels, one per dispatch key, each
// checking with detail::check_table_bias_args:
//   ops/cpu/table_bias_kernel.cpp        the lookup, and the per-head sums of its backward
//   ops/autograd/table_bias_kernel.cpp   saves the index; backward calls the backward op
//   ops/meta/table_bias_kernel.cpp       shapes only

#include <torchattn/ops/table_bias.h>

#include "ops/registration.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(torchattn, m) {
  m.def("table_bias(Tensor table, Tensor index) -> Tensor");
  m.def("_table_bias_backward(Tensor grad_bias, Tensor index, int num_entries) -> Tensor");
}

namespace torchattn::ops {

torch::Tensor table_bias(const torch::Tensor& table, const torch::Tensor& index) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::table_bias", "")
                       .typed<decltype(table_bias)>();
  return op.call(table, index);
}

torch::Tensor _table_bias_backward(
    const torch::Tensor& grad_bias, const torch::Tensor& index, int64_t num_entries) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("torchattn::_table_bias_backward", "")
                       .typed<decltype(_table_bias_backward)>();
  return op.call(grad_bias, index, num_entries);
}

} // namespace torchattn::ops

TORCHATTN_REGISTRATION_ANCHOR(table_bias_registered)
