// Autograd kernels of table_bias and its backward: the forward saves the index, and backward
// calls the backward op. Double backward fails with a message that names the op.

#include <torchattn/ops/table_bias.h>

#include "ops/registration.h"

#include <torch/autograd.h>
#include <torch/library.h>
#include <torch/torch.h>

namespace torchattn::ops {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

class TableBiasBackward : public torch::autograd::Function<TableBiasBackward> {
 public:
  static tensor_list forward(
      AutogradContext* /*ctx*/, const torch::Tensor& grad_bias, const torch::Tensor& index,
      int64_t num_entries) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return {_table_bias_backward(grad_bias, index, num_entries)};
  }

  static tensor_list backward(AutogradContext* /*ctx*/, const tensor_list& /*grads*/) {
    TORCH_CHECK(false, "torchattn::table_bias: double backward is not supported");
  }
};

class TableBias : public torch::autograd::Function<TableBias> {
 public:
  static tensor_list forward(
      AutogradContext* ctx, const torch::Tensor& table, const torch::Tensor& index) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto bias = table_bias(table, index); // checks the arguments first
    ctx->save_for_backward({index});
    ctx->saved_data["num_entries"] = table.size(1);
    return {bias};
  }

  static tensor_list backward(AutogradContext* ctx, const tensor_list& grads) {
    if (!grads[0].defined()) {
      return {torch::Tensor(), torch::Tensor()};
    }
    const auto saved = ctx->get_saved_variables();
    return {
        TableBiasBackward::apply(grads[0], saved[0], ctx->saved_data["num_entries"].toInt())[0],
        torch::Tensor()};
  }
};

torch::Tensor table_bias_autograd(const torch::Tensor& table, const torch::Tensor& index) {
  // table [H, T], index [B, Lq, Lk] -> bias [B, H, Lq, Lk]
  return TableBias::apply(table, index)[0];
}

torch::Tensor table_bias_backward_autograd(
    const torch::Tensor& grad_bias, const torch::Tensor& index, int64_t num_entries) {
  return TableBiasBackward::apply(grad_bias, index, num_entries)[0];
}

} // namespace

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, Autograd, m) {
  m.impl("table_bias", TORCH_FN(torchattn::ops::table_bias_autograd));
  m.impl("_table_bias_backward", TORCH_FN(torchattn::ops::table_bias_backward_autograd));
}

TORCHATTN_REGISTRATION_ANCHOR(table_bias_autograd_registered)
