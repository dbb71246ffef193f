#pragma once

// What the modules' pretty_print shares.

#include <c10/util/Optional.h>

#include <ostream>

namespace torchattn::detail {

/// Writes "None" or the value, as PyTorch prints optional options.
inline void print_optional(std::ostream& stream, const c10::optional<double>& value) {
  if (value.has_value()) {
    stream << *value;
  } else {
    stream << "None";
  }
}

} // namespace torchattn::detail
