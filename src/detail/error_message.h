#pragma once

// An exception's message for a message of our own: c10::Error's without its backtrace (which
// would bury the cause under a page of frames), any other's what().

#include <c10/util/Exception.h>

#include <exception>
#include <string>

namespace torchattn::detail {

inline std::string error_message(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) {
    return c->what_without_backtrace();
  }
  return e.what();
}

} // namespace torchattn::detail
