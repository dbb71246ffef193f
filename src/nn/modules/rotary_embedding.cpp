#include <torchattn/nn/modules/rotary_embedding.h>

#include "detail/checks.h"

#include <torch/torch.h>

namespace torchattn::nn {

namespace F = torchattn::nn::functional;

RotaryEmbeddingImpl::RotaryEmbeddingImpl(const RotaryEmbeddingOptions& options_)
    : options(options_) {
  reset();
}

void RotaryEmbeddingImpl::reset() {
  inv_freq_ = F::rotary_inv_freq(options);
  TORCH_CHECK(
      options.max_positions() > 0, "RotaryEmbedding: max_positions is ", options.max_positions(),
      ", expected > 0");
  cos_ = sin_ = torch::Tensor();
  grow(options.max_positions());
}

void RotaryEmbeddingImpl::grow(int64_t positions) {
  auto [c, s] = F::rotary_cos_sin(torch::arange(positions, torch::kLong), inv_freq_);
  cos_ = c;
  sin_ = s;
}

void RotaryEmbeddingImpl::pretty_print(std::ostream& stream) const {
  stream << "torchattn::nn::RotaryEmbedding(head_dim=" << options.head_dim()
         << ", rotary_dim=" << inv_freq_.size(0) * 2 << ", base=" << options.base()
         << ", interleaved=" << (options.interleaved() ? "true" : "false")
         << ", scaling=" << options.scaling() << ")";
}

std::pair<torch::Tensor, torch::Tensor> RotaryEmbeddingImpl::cos_sin(
    const torch::Tensor& positions) {
  TORCH_CHECK(
      positions.defined() && positions.scalar_type() == torch::kLong, "RotaryEmbedding: positions ",
      positions.defined() ? torchattn::detail::shape_str(positions.sizes()) : "undefined",
      ", expected int64");
  auto shape = positions.sizes().vec();
  shape.push_back(inv_freq_.size(0));
  if (positions.numel() == 0) {
    auto none = torch::empty(shape, torch::kDouble);
    return {none, none};
  }
  const int64_t lo = positions.min().item<int64_t>(), hi = positions.max().item<int64_t>();
  TORCH_CHECK(lo >= 0, "RotaryEmbedding: positions has ", lo, ", expected positions >= 0");
  if (hi >= cos_.size(0)) {
    int64_t n = cos_.size(0);
    while (n <= hi) {
      n *= 2;
    }
    grow(n);
  }
  auto flat = positions.to(torch::kCPU).reshape({-1});
  return {cos_.index_select(0, flat).view(shape), sin_.index_select(0, flat).view(shape)};
}

torch::Tensor RotaryEmbeddingImpl::forward(const torch::Tensor& x, const torch::Tensor& positions) {
  // x [B, H, L, D], positions [L] or [B, L] -> [B, H, L, D]
  TORCH_CHECK(
      x.defined() && x.dim() == 4 && x.size(-1) == options.head_dim(),
      "RotaryEmbedding: x has shape ",
      x.defined() ? torchattn::detail::shape_str(x.sizes()) : "undefined", ", expected [B, H, L, ",
      options.head_dim(), "]");
  const int64_t L = x.size(2);
  auto pos = positions.defined() ? positions : torch::arange(L, torch::kLong);
  TORCH_CHECK(
      (pos.dim() == 1 && pos.size(0) == L) ||
          (pos.dim() == 2 && pos.size(0) == x.size(0) && pos.size(1) == L),
      "RotaryEmbedding: positions has shape ", torchattn::detail::shape_str(pos.sizes()),
      ", expected [", L, "] or [", x.size(0), ", ", L, "]");
  auto [c, s] = cos_sin(pos);
  if (pos.dim() == 2) { // [B, L, d/2] -> [B, 1, L, d/2]
    c = c.unsqueeze(1);
    s = s.unsqueeze(1);
  }
  return F::apply_rotary_embedding(x, c.to(x.device()), s.to(x.device()), options.interleaved());
}

} // namespace torchattn::nn
