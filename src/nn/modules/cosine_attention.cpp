#include <torchattn/nn/modules/cosine_attention.h>

#include <torchattn/nn/functional/attention.h>

#include "detail/checks.h"
#include "detail/math_attention.h"
#include "detail/printing.h"

#include <torch/torch.h>

#include <cmath>

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

CosineAttentionImpl::CosineAttentionImpl(const CosineAttentionOptions& options_)
    : options(options_) {
  reset();
}

void CosineAttentionImpl::reset() {
  constexpr const char* name = "torchattn::nn::CosineAttention";
  detail::check_dropout_option("CosineAttention", options.dropout());
  TORCH_CHECK(
      options.temperature() > 0.0 && std::isfinite(options.temperature()), name,
      ": temperature is ", options.temperature(), ", expected a positive finite number");
  TORCH_CHECK(
      options.num_heads() >= 1, name, ": num_heads is ", options.num_heads(),
      ", expected at least 1");
  TORCH_CHECK(
      options.eps() > 0.0, name, ": eps is ", options.eps(), ", expected a positive number");
  if (options.max_temperature().has_value()) {
    const double max = *options.max_temperature();
    TORCH_CHECK(
        max >= options.temperature(), name, ": max_temperature is ", max,
        ", expected at least temperature (", options.temperature(), ")");
  }
  auto init = torch::full({options.num_heads(), 1, 1}, std::log(options.temperature()));
  if (options.learnable()) {
    logit_scale = register_parameter("logit_scale", init);
  } else {
    logit_scale = register_buffer("logit_scale", init);
  }
}

void CosineAttentionImpl::pretty_print(std::ostream& stream) const {
  stream << std::boolalpha << "torchattn::nn::CosineAttention(temperature=" << options.temperature()
         << ", learnable=" << options.learnable() << ", num_heads=" << options.num_heads()
         << ", max_temperature=";
  detail::print_optional(stream, options.max_temperature());
  stream << ", eps=" << options.eps() << ", dropout=" << options.dropout() << ")";
}

torch::Tensor CosineAttentionImpl::temperature() const {
  auto tau = detail::temperature_from_log(logit_scale, options.max_temperature());
  return options.num_heads() == 1 ? tau.reshape({}) : tau;
}

std::tuple<torch::Tensor, torch::Tensor> CosineAttentionImpl::forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& attn_mask, const torch::Tensor& key_padding_mask, bool need_weights,
    bool is_causal) {
  // query [..., H, Lq, E], key [..., H, Lk, E], value [..., H, Lk, Ev] -> out [..., H, Lq, Ev]
  return F::cosine_attention(
      query, key, value,
      detail::with_masks(
          F::CosineAttentionFuncOptions().temperature(temperature()).eps(options.eps()), attn_mask,
          key_padding_mask, is_causal, is_training() ? options.dropout() : 0.0, need_weights));
}

} // namespace torchattn::nn
