#include "speedups/speedups.h"

#include <ATen/Parallel.h>

#include <atomic>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace translate {

Speedups speedups_without(const std::string& names) {
  Speedups s;
  std::istringstream list(names);
  for (std::string name; std::getline(list, name, ',');) {
    if (name == "all") {
      s = Speedups{false, false, false, false};
    } else if (name == "gru") {
      s.gru = false;
    } else if (name == "loss") {
      s.loss = false;
    } else if (name == "dropout") {
      s.dropout = false;
    } else if (name == "adam") {
      s.adam = false;
    } else if (!name.empty()) {
      throw std::invalid_argument(
          "TORCHATTN_TRANSLATE_PLAIN: unknown speed-up '" + name +
          "', expected a comma-separated list of gru, loss, dropout, adam, or all");
    }
  }
  return s;
}

Speedups& speedups() {
  static Speedups s = [] {
    const char* names = std::getenv("TORCHATTN_TRANSLATE_PLAIN");
    return speedups_without(names == nullptr ? "" : names);
  }();
  return s;
}

int speedup_threads(int64_t items) {
  std::atomic<uint64_t> seen{0};
  at::parallel_for(0, items, 1, [&](int64_t /*begin*/, int64_t /*end*/) {
    seen |= uint64_t{1} << (at::get_thread_num() % 64);
  });
  return __builtin_popcountll(seen.load());
}

} // namespace translate
