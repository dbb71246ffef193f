#pragma once

// Peak memory of one test case run alone, in a child process: this test binary started again
// on that case. The child writes its own VmHWM (/proc/self/status: the high-water mark of its
// own address space) to a file; wait4's ru_maxrss is no measure of it, because Linux carries
// the parent's high-water mark into the child's across exec, so a parent that has grown (a
// run of many test cases in one process) would be counted instead.

#include <catch2/catch_test_macros.hpp>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

extern char** environ;

namespace torchattn::testing {

/// In the child: writes its VmHWM in KiB to the file that TORCHATTN_PEAK_FILE names (nothing
/// when it is unset).
inline void report_peak() {
  const char* path = std::getenv("TORCHATTN_PEAK_FILE");
  if (path == nullptr) {
    return;
  }
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::ofstream(path) << std::stol(line.substr(6)) << "\n";
    }
  }
}

/// Peak RSS in MiB of this test binary running only the test case `name` (which calls
/// report_peak), with `env` ("NAME=value") set on top of this process's environment.
inline double child_peak_mib(const std::string& name, const std::vector<std::string>& env = {}) {
  // One file per parent; each child's is read and removed before the next starts.
  const std::string file = "/tmp/torchattn-peak-" + std::to_string(getpid());
  std::vector<std::string> env_strings = env;
  env_strings.push_back("TORCHATTN_PEAK_FILE=" + file);
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string kv = *e;
    bool replaced = false;
    for (const auto& mine : env_strings) {
      replaced = replaced || kv.substr(0, kv.find('=') + 1) == mine.substr(0, mine.find('=') + 1);
    }
    if (!replaced) {
      env_strings.push_back(kv);
    }
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) {
    envp.push_back(e.data());
  }
  envp.push_back(nullptr);
  std::string self = "/proc/self/exe", case_name = name;
  std::vector<char*> argv{self.data(), case_name.data(), nullptr};
  pid_t pid = 0;
  REQUIRE(posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv.data(), envp.data()) == 0);
  int status = 0;
  REQUIRE(waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  long kib = -1;
  std::ifstream(file) >> kib;
  std::remove(file.c_str());
  REQUIRE(kib > 0);
  return static_cast<double>(kib) / 1024.0;
}

} // namespace torchattn::testing
