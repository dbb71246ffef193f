#pragma once

/// torchattn::AutocastCpu: LibTorch's CPU autocast for one scope, as Python's
/// `with torch.autocast("cpu", dtype=...)`: lower-precision ops (Linear, matmul, and
/// torchattn's attention ops) run in `dtype` on float32 inputs, the rest in float32. LibTorch's
/// C++ API has the switches but no scope guard, and renamed them in 2.4; this is the same guard
/// on every LibTorch torchattn builds with.
///
/// Example (mixed precision training with float32 master weights):
/// ```
/// torch::Tensor loss;
/// {
///   torchattn::AutocastCpu autocast(torch::kBFloat16);
///   loss = criterion(model->forward(x), y);
/// }
/// loss.backward(); // gradients of the float32 parameters are float32
/// optimizer.step();
/// ```

#include <ATen/autocast_mode.h>
#include <torch/version.h>

namespace torchattn {

class AutocastCpu {
 public:
  /// Turns CPU autocast on (or off, with `enabled` false) in `dtype` until the end of the scope,
  /// then restores what was there; the outermost guard clears the autocast cache of weights
  /// cast to `dtype`.
  explicit AutocastCpu(at::ScalarType dtype = at::kBFloat16, bool enabled = true)
      : prev_enabled_(is_enabled()), prev_dtype_(get_dtype()) {
    set(enabled, dtype);
    at::autocast::increment_nesting();
  }
  ~AutocastCpu() {
    if (at::autocast::decrement_nesting() == 0)
      at::autocast::clear_cache();
    set(prev_enabled_, prev_dtype_);
  }
  AutocastCpu(const AutocastCpu&) = delete;
  AutocastCpu& operator=(const AutocastCpu&) = delete;

  /// Whether CPU autocast is on in this thread.
  static bool is_enabled() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    return at::autocast::is_autocast_enabled(at::kCPU);
#else
    return at::autocast::is_cpu_enabled();
#endif
  }

  /// The dtype CPU autocast computes lower-precision ops in (bfloat16 unless set).
  static at::ScalarType get_dtype() {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    return at::autocast::get_autocast_dtype(at::kCPU);
#else
    return at::autocast::get_autocast_cpu_dtype();
#endif
  }

 private:
  static void set(bool enabled, at::ScalarType dtype) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCPU, enabled);
    at::autocast::set_autocast_dtype(at::kCPU, dtype);
#else
    at::autocast::set_cpu_enabled(enabled);
    at::autocast::set_autocast_cpu_dtype(dtype);
#endif
  }

  bool prev_enabled_;
  at::ScalarType prev_dtype_;
};

} // namespace torchattn
