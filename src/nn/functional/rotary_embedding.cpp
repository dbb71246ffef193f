#include <torchattn/nn/functional/rotary_embedding.h>

#include "detail/checks.h"

#include <torch/torch.h>

#include <cmath>

namespace torchattn::nn::functional {

namespace {

/// The rotary dim the options ask for, checked.
int64_t rotary_dim_of(const char* fn, const RotaryEmbeddingOptions& o) {
  TORCH_CHECK(o.head_dim() > 0, fn, ": head_dim is ", o.head_dim(), ", expected > 0");
  const int64_t d = o.rotary_dim() == 0 ? o.head_dim() : o.rotary_dim();
  TORCH_CHECK(
      d > 0 && d % 2 == 0 && d <= o.head_dim(), fn, ": rotary_dim is ", d,
      ", expected an even count in (0, head_dim = ", o.head_dim(), "]");
  return d;
}

} // namespace

torch::Tensor rotary_inv_freq(const RotaryEmbeddingOptions& o) {
  constexpr const char* fn = "rotary_inv_freq";
  const int64_t d = rotary_dim_of(fn, o);
  TORCH_CHECK(
      o.base() > 1.0 && std::isfinite(o.base()), fn, ": base is ", o.base(), ", expected > 1");
  TORCH_CHECK(
      o.factor() > 0.0 && std::isfinite(o.factor()), fn, ": factor is ", o.factor(),
      ", expected > 0");
  const auto& s = o.scaling();
  TORCH_CHECK(
      s == "none" || s == "linear" || s == "ntk" || s == "llama3", fn, ": scaling is \"", s,
      "\", expected \"none\", \"linear\", \"ntk\" or \"llama3\"");
  double base = o.base();
  if (s == "ntk") {
    TORCH_CHECK(d > 2, fn, ": \"ntk\" scaling needs rotary_dim > 2, got ", d);
    base *= std::pow(o.factor(), static_cast<double>(d) / static_cast<double>(d - 2));
  }
  auto exponent = torch::arange(0, d, 2, torch::kDouble) / static_cast<double>(d);
  auto inv = torch::pow(base, exponent).reciprocal();
  if (s == "linear") {
    inv = inv / o.factor();
  } else if (s == "llama3") {
    TORCH_CHECK(
        o.high_freq_factor() > o.low_freq_factor() && o.low_freq_factor() > 0 &&
            o.original_max_positions() > 0,
        fn, ": llama3 scaling has low_freq_factor ", o.low_freq_factor(), ", high_freq_factor ",
        o.high_freq_factor(), " and original_max_positions ", o.original_max_positions(),
        ", expected 0 < low_freq_factor < high_freq_factor and original_max_positions > 0");
    const double orig = static_cast<double>(o.original_max_positions());
    const double low_wavelen = orig / o.low_freq_factor();
    const double high_wavelen = orig / o.high_freq_factor();
    auto wavelen = 2 * M_PI / inv;
    auto scaled = torch::where(wavelen > low_wavelen, inv / o.factor(), inv);
    auto smooth =
        (orig / wavelen - o.low_freq_factor()) / (o.high_freq_factor() - o.low_freq_factor());
    auto smoothed = (1 - smooth) * scaled / o.factor() + smooth * scaled;
    auto medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen);
    inv = torch::where(medium, smoothed, scaled);
  }
  return inv;
}

std::pair<torch::Tensor, torch::Tensor> rotary_cos_sin(
    const torch::Tensor& positions, const torch::Tensor& inv_freq) {
  TORCH_CHECK(
      inv_freq.dim() == 1, "rotary_cos_sin: inv_freq has shape ",
      torchattn::detail::shape_str(inv_freq.sizes()), ", expected [rotary_dim / 2]");
  auto angles = positions.to(torch::kDouble).unsqueeze(-1) * inv_freq.to(torch::kDouble);
  return {angles.cos(), angles.sin()};
}

torch::Tensor apply_rotary_embedding(
    const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin, bool interleaved) {
  // x [..., L, D], cos and sin [..., L, d/2] -> [..., L, D]
  constexpr const char* fn = "apply_rotary_embedding";
  TORCH_CHECK(
      x.defined() && x.dim() >= 2 && x.is_floating_point(), fn, ": x has shape ",
      x.defined() ? torchattn::detail::shape_str(x.sizes()) : "undefined",
      ", expected a floating [..., L, D]");
  TORCH_CHECK(
      cos.defined() && sin.defined() && cos.sizes() == sin.sizes() && cos.dim() >= 1, fn,
      ": cos and sin have shapes ",
      cos.defined() ? torchattn::detail::shape_str(cos.sizes()) : "undefined", " and ",
      sin.defined() ? torchattn::detail::shape_str(sin.sizes()) : "undefined",
      ", expected one shape [..., L, rotary_dim / 2]");
  const int64_t half = cos.size(-1), D = x.size(-1);
  TORCH_CHECK(
      2 * half <= D, fn, ": cos has ", half, " frequencies, expected at most D / 2 = ", D / 2,
      " for x ", torchattn::detail::shape_str(x.sizes()));
  const auto c = cos.to(x.options()), s = sin.to(x.options());
  const auto rot = x.narrow(-1, 0, 2 * half);
  torch::Tensor out;
  if (interleaved) {
    auto pairs = rot.unflatten(-1, {half, 2});
    auto even = pairs.select(-1, 0), odd = pairs.select(-1, 1);
    out = torch::stack({even * c - odd * s, odd * c + even * s}, -1).flatten(-2);
  } else {
    auto first = rot.narrow(-1, 0, half), second = rot.narrow(-1, half, half);
    out = torch::cat({first * c - second * s, second * c + first * s}, -1);
  }
  return 2 * half == D ? out : torch::cat({out, x.narrow(-1, 2 * half, D - 2 * half)}, -1);
}

} // namespace torchattn::nn::functional
