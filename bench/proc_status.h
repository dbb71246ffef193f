#pragma once

// Memory figures of this process from /proc/self/status, for the benchmarks' peak-memory
// columns (each case runs in a child process, this program started again).

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace torchattn::bench {

/// A field of /proc/self/status in KiB ("VmRSS", "VmHWM"), or -1.
inline long status_kib(const char* field) {
  long kib = -1;
  if (std::FILE* f = std::fopen("/proc/self/status", "r")) {
    char line[256];
    const size_t len = std::strlen(field);
    while (std::fgets(line, sizeof line, f) != nullptr) {
      if (std::strncmp(line, field, len) == 0 && line[len] == ':') {
        kib = std::strtol(line + len + 1, nullptr, 10);
        break;
      }
    }
    std::fclose(f);
  }
  return kib;
}

} // namespace torchattn::bench
