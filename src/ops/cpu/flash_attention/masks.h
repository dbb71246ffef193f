#pragma once

// Masks applied to score tiles: the 4-D mask view, backward's rows (queries x keys) and the
// forward's transposed tiles (keys x queries), with causal masking and padding columns.
//
// Part of the fused attention kernel, compiled per vector build: include only after
// ops/cpu/vectorized.h, from a file that torchattn_add_cpu_capabilities compiles.

#include "ops/cpu/flash_attention/common.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

/// The 4-D mask view [B, H, Lq, Lk] with its strides, or none.
struct MaskView {
  const void* data = nullptr;
  bool is_bool = false;
  int64_t stride[4] = {0, 0, 0, 0};

  explicit MaskView(const at::Tensor& mask) {
    if (!mask.defined()) {
      return;
    }
    data = mask.data_ptr();
    is_bool = mask.scalar_type() == at::kBool;
    for (int d = 0; d < 4; ++d) {
      stride[d] = mask.stride(d);
    }
  }
};

/// Masks one row of scores s[0, width): adds the additive mask as the forward adds it, and
/// sets -inf where the bool mask forbids, where causal forbids (keys after `last_key`) and on
/// the padding columns [valid, width).
template <typename T>
void prepare_row(
    T* s, int64_t valid, int64_t width, const MaskView& mask, int64_t b, int64_t h, int64_t i,
    int64_t j0, int64_t last_key) {
  using Vec = Vectorized<T>;
  constexpr int W = Vec::size();
  int64_t end = std::min(valid, last_key - j0 + 1);
  end = std::max<int64_t>(end, 0);
  if (mask.data != nullptr) {
    const int64_t off =
        b * mask.stride[0] + h * mask.stride[1] + i * mask.stride[2] + j0 * mask.stride[3];
    const int64_t sk = mask.stride[3];
    if (mask.is_bool) {
      const bool* row = static_cast<const bool*>(mask.data) + off;
      for (int64_t j = 0; j < end; ++j) {
        if (!row[j * sk]) {
          s[j] = neg_inf<T>();
        }
      }
    } else {
      const T* row = static_cast<const T*>(mask.data) + off;
      if (sk == 1) {
        int64_t j = 0;
        for (; j + W <= end; j += W) {
          (Vec::loadu(s + j) + Vec::loadu(row + j)).store(s + j);
        }
        for (; j < end; ++j) {
          s[j] += row[j];
        }
      } else {
        for (int64_t j = 0; j < end; ++j) {
          s[j] += row[j * sk];
        }
      }
    }
  }
  std::fill(s + end, s + width, neg_inf<T>());
}

/// S^T[j, i] for keys j0 + j and queries i0 + i: the bool mask's false and the causal mask's
/// forbidden entries become -inf, the additive mask is added.
template <typename T>
void mask_transposed(
    T* st, int64_t ld, int64_t nk, int64_t nq, const MaskView& mask, int64_t b, int64_t h,
    int64_t i0, int64_t j0, bool causal) {
  for (int64_t j = 0; j < nk; ++j) {
    T* row = st + j * ld;
    if (mask.data != nullptr) {
      const int64_t off =
          b * mask.stride[0] + h * mask.stride[1] + i0 * mask.stride[2] + (j0 + j) * mask.stride[3];
      const int64_t si = mask.stride[2];
      if (mask.is_bool) {
        const bool* m = static_cast<const bool*>(mask.data) + off;
        for (int64_t i = 0; i < nq; ++i) {
          if (!m[i * si]) {
            row[i] = neg_inf<T>();
          }
        }
      } else {
        const T* m = static_cast<const T*>(mask.data) + off;
        for (int64_t i = 0; i < nq; ++i) {
          row[i] += m[i * si];
        }
      }
    }
    if (causal) {
      // Query i0 + i sees key j0 + j only when j0 + j <= i0 + i.
      const int64_t first_allowed = std::min(std::max<int64_t>(j0 + j - i0, 0), nq);
      std::fill(row, row + first_allowed, neg_inf<T>());
    }
  }
}

} // namespace
} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu
