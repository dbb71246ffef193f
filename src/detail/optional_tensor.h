#pragma once

// An options struct's Tensor (undefined: not given) as the optional an op's schema takes.

#include <c10/util/Optional.h>
#include <torch/types.h>

namespace torchattn::detail {

/// `t`, or nullopt when it is undefined.
inline c10::optional<torch::Tensor> optional_tensor(const torch::Tensor& t) {
  return t.defined() ? c10::optional<torch::Tensor>(t) : c10::nullopt;
}

} // namespace torchattn::detail
