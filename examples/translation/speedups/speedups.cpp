#include "speedups/speedups.h"

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

} // namespace translate
