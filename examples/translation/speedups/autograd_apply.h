#pragma once

// Applies a torch::autograd::Function. GCC 14 warns (-Warray-bounds, -Wstringop-overflow)
// inside LibTorch 2.6's Function::apply, where std::vector<bool>::reserve is inlined: false
// positives in system headers. The example's autograd functions are applied here, the one
// place that silences them.

#include <torch/autograd.h>

#include <utility>

namespace translate {

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Warray-bounds"
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wstringop-overflow"
#endif
template <typename F, typename... Args>
auto apply_function(Args&&... args) {
  return F::apply(std::forward<Args>(args)...);
}
#pragma GCC diagnostic pop

} // namespace translate
