#include "fused_adam.h"

#include "speedups.h"

#include <ATen/Parallel.h>
#include <torch/optim/adam.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <cstdint>
#include <sstream>
#include <string>
#include <type_traits>

namespace translate {
namespace {

// The key of a parameter's state: LibTorch 1.13 keys by the TensorImpl's address printed as a
// string (c10::guts::to_string), 2.x by the address itself.
template <typename Map>
typename Map::key_type state_key(const Map& /*states*/, const torch::Tensor& p) {
  void* impl = p.unsafeGetTensorImpl();
  if constexpr (std::is_same_v<typename Map::key_type, std::string>) {
    std::ostringstream s;
    s << impl;
    return s.str();
  } else {
    return impl;
  }
}

struct Constants {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, weight_decay, sqrt_bias_correction2, eps,
      step_size;
};

// The arithmetic of Adam::step, element by element, in its order: moments, then
// p -= step_size * m / (sqrt(v) / sqrt(bias_correction2) + eps). This file is compiled with
// -fno-math-errno (CMakeLists.txt): errno for a negative argument (v never is) keeps GCC from
// vectorising sqrt, and the scalar loop is slower than Adam::step's eight vectorised passes.
__attribute__((target_clones("avx512f", "avx2", "default"))) void adam_update(
    float* p, const float* g, float* m, float* v, int64_t n, const Constants& c) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float grad = c.weight_decay != 0.0f ? g[i] + c.weight_decay * p[i] : g[i];
    const float mi = m[i] * c.beta1 + c.one_minus_beta1 * grad;
    const float vi = v[i] * c.beta2 + c.one_minus_beta2 * grad * grad;
    m[i] = mi;
    v[i] = vi;
    p[i] -= c.step_size * mi / (std::sqrt(vi) / c.sqrt_bias_correction2 + c.eps);
  }
}

bool fusable(const torch::Tensor& p, const torch::optim::AdamOptions& o) {
  const torch::Tensor& g = p.grad();
  return !o.amsgrad() && p.scalar_type() == torch::kFloat && p.device().is_cpu() &&
         p.is_contiguous() && !g.is_sparse() && g.scalar_type() == torch::kFloat &&
         g.is_contiguous();
}

} // namespace

torch::Tensor FusedAdam::step(LossClosure closure) {
  for (auto& group : param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    for (const auto& p : group.params()) {
      if (p.grad().defined() && !fusable(p, o)) {
        return Adam::step(std::move(closure));
      }
    }
  }
  torch::Tensor loss;
  if (closure != nullptr) {
    at::AutoGradMode enable_grad(true);
    loss = closure();
  }
  torch::NoGradGuard no_grad;
  auto& states = state();
  for (auto& group : param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) {
        continue;
      }
      const auto key = state_key(states, p);
      auto it = states.find(key);
      if (it == states.end()) {
        auto fresh = std::make_unique<torch::optim::AdamParamState>();
        fresh->step(0);
        fresh->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        fresh->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Contiguous));
        it = states.emplace(key, std::move(fresh)).first;
      }
      auto& s = static_cast<torch::optim::AdamParamState&>(*it->second);
      s.step(s.step() + 1);
      TORCH_CHECK(
          s.exp_avg().is_contiguous() && s.exp_avg_sq().is_contiguous() &&
              s.exp_avg().sizes() == p.sizes() && s.exp_avg_sq().sizes() == p.sizes(),
          "FusedAdam: the moments of a parameter of shape ", p.sizes(), " have shapes ",
          s.exp_avg().sizes(), " and ", s.exp_avg_sq().sizes());
      const double bias_correction1 = 1 - std::pow(beta1, static_cast<double>(s.step()));
      const double bias_correction2 = 1 - std::pow(beta2, static_cast<double>(s.step()));
      const Constants c{
          static_cast<float>(beta1),
          static_cast<float>(beta2),
          static_cast<float>(1 - beta1),
          static_cast<float>(1 - beta2),
          static_cast<float>(o.weight_decay()),
          static_cast<float>(std::sqrt(bias_correction2)),
          static_cast<float>(o.eps()),
          static_cast<float>(o.lr() / bias_correction1)};
      float* pp = p.data_ptr<float>();
      const float* gp = p.grad().data_ptr<float>();
      float* mp = s.exp_avg().data_ptr<float>();
      float* vp = s.exp_avg_sq().data_ptr<float>();
      at::parallel_for(0, p.numel(), 1 << 15, [&](int64_t begin, int64_t end) {
        adam_update(pp + begin, gp + begin, mp + begin, vp + begin, end - begin, c);
      });
    }
  }
  return loss;
}

std::unique_ptr<torch::optim::Adam> make_adam(
    const std::vector<torch::Tensor>& parameters, const torch::optim::AdamOptions& options) {
  if (speedups().adam) {
    return std::make_unique<FusedAdam>(parameters, options);
  }
  return std::make_unique<torch::optim::Adam>(parameters, options);
}

} // namespace translate
