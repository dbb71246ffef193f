#pragma once

// Finite-difference gradient check in float64: compares the autograd gradient of a scalar
// function with central differences, element by element, for every leaf tensor.

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

namespace torchattn::testing {

struct GradcheckResult {
  double worst_error = 0.0; // max |analytic - numeric| / (1 + |numeric|)
  std::string worst_where;
};

inline GradcheckResult gradcheck(
    const std::function<torch::Tensor()>& loss,
    std::vector<std::pair<std::string, torch::Tensor>> leaves, double eps = 1e-6) {
  for (auto& [name, t] : leaves) {
    TORCH_CHECK(t.scalar_type() == torch::kDouble, "gradcheck: ", name, " must be float64");
    if (t.grad().defined()) {
      t.mutable_grad().zero_();
    }
  }
  loss().backward();
  GradcheckResult result;
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : leaves) {
    auto analytic = t.grad().defined() ? t.grad().clone() : torch::zeros_like(t);
    auto flat = t.view(-1);
    auto analytic_flat = analytic.view(-1);
    for (int64_t i = 0; i < flat.numel(); ++i) {
      const double orig = flat[i].item<double>();
      flat[i] = orig + eps;
      const double plus = loss().item<double>();
      flat[i] = orig - eps;
      const double minus = loss().item<double>();
      flat[i] = orig;
      const double numeric = (plus - minus) / (2 * eps);
      const double err =
          std::abs(analytic_flat[i].item<double>() - numeric) / (1.0 + std::abs(numeric));
      if (err > result.worst_error || !std::isfinite(err)) {
        result.worst_error = std::isfinite(err) ? err : std::numeric_limits<double>::infinity();
        result.worst_where = name + "[" + std::to_string(i) + "]";
      }
    }
  }
  return result;
}

} // namespace torchattn::testing
