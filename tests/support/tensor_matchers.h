#pragma once

// AllClose(expected, rtol, atol): a Catch2 matcher for tensors with torch.allclose's rule
// |actual - expected| <= atol + rtol * |expected|, whose failure message names the worst
// element, both values and both shapes. NaN never matches.

#include <torch/torch.h>
#include <catch2/matchers/catch_matchers_templated.hpp>

#include <algorithm>
#include <map>
#include <sstream>
#include <string>

namespace torchattn::testing {

class AllCloseMatcher : public Catch::Matchers::MatcherGenericBase {
 public:
  AllCloseMatcher(torch::Tensor expected, double rtol, double atol)
      : expected_(std::move(expected)), rtol_(rtol), atol_(atol) {}

  bool match(const torch::Tensor& actual) const {
    std::ostringstream why;
    if (!actual.defined() || !expected_.defined()) {
      why << "an undefined tensor (actual " << (actual.defined() ? "defined" : "undefined")
          << ", expected " << (expected_.defined() ? "defined" : "undefined") << ")";
      return fail(why);
    }
    if (actual.sizes() != expected_.sizes()) {
      why << "shape " << actual.sizes() << " vs expected " << expected_.sizes();
      return fail(why);
    }
    if (actual.scalar_type() != expected_.scalar_type()) {
      why << "dtype " << actual.scalar_type() << " vs expected " << expected_.scalar_type();
      return fail(why);
    }
    if (actual.numel() == 0) {
      return true;
    }
    auto a = actual.detach().to(torch::kCPU, torch::kDouble);
    auto e = expected_.detach().to(torch::kCPU, torch::kDouble);
    auto excess = (a - e).abs() - (atol_ + rtol_ * e.abs());
    excess = excess.masked_fill(a.isnan() | e.isnan(), std::numeric_limits<double>::infinity());
    const int64_t worst = excess.flatten().argmax().item<int64_t>();
    if (excess.flatten()[worst].item<double>() <= 0.0) {
      return true;
    }
    why << "worst element " << unravel(worst, actual.sizes()) << ": actual "
        << a.flatten()[worst].item<double>() << ", expected " << e.flatten()[worst].item<double>()
        << " (|diff| " << (a.flatten()[worst] - e.flatten()[worst]).abs().item<double>()
        << "), shape " << actual.sizes() << ", " << (excess > 0).sum().item<int64_t>() << " of "
        << actual.numel() << " elements off";
    return fail(why);
  }

  std::string describe() const override {
    std::ostringstream s;
    s << "is close to the expected tensor (rtol " << rtol_ << ", atol " << atol_
      << "): " << failure_;
    return s.str();
  }

 private:
  static std::string unravel(int64_t flat, torch::IntArrayRef sizes) {
    std::vector<int64_t> idx(sizes.size());
    for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
      idx[d] = flat % sizes[d];
      flat /= sizes[d];
    }
    std::ostringstream s;
    s << torch::IntArrayRef(idx);
    return s.str();
  }

  bool fail(const std::ostringstream& why) const {
    failure_ = why.str();
    return false;
  }

  torch::Tensor expected_;
  double rtol_;
  double atol_;
  mutable std::string failure_;
};

inline AllCloseMatcher AllClose(torch::Tensor expected, double rtol, double atol) {
  return AllCloseMatcher(std::move(expected), rtol, atol);
}

/// The worst |actual - expected| seen per dtype, for reporting how close results are.
class WorstError {
 public:
  void note(const torch::Tensor& actual, const torch::Tensor& expected) {
    if (actual.defined() && expected.defined() && actual.sizes() == expected.sizes() &&
        actual.numel() > 0) {
      auto& w = worst_[expected.scalar_type()];
      w = std::max(
          w, (actual.detach().to(torch::kDouble) - expected.to(torch::kDouble))
                 .abs()
                 .max()
                 .item<double>());
    }
  }
  double operator[](torch::ScalarType dtype) const {
    auto it = worst_.find(dtype);
    return it == worst_.end() ? 0.0 : it->second;
  }

 private:
  std::map<torch::ScalarType, double> worst_;
};

/// The project's tolerance per dtype against a reference: float64 1e-10, float32 1e-5.
inline double tolerance(torch::ScalarType dtype) {
  return dtype == torch::kDouble ? 1e-10 : 1e-5;
}

} // namespace torchattn::testing

namespace Catch {
template <>
struct StringMaker<torch::Tensor> {
  static std::string convert(const torch::Tensor& t) {
    std::ostringstream s;
    if (!t.defined()) {
      return "undefined tensor";
    }
    s << "tensor " << t.scalar_type() << " " << t.sizes();
    return s.str();
  }
};
} // namespace Catch
