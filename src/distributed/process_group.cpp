// torchrun's launch convention and a Gloo process group over c10d::TCPStore, on LibTorch 1.13
// (ProcessGroupGloo is a ProcessGroup) and 2.x (it is a Backend inside a ProcessGroup).

#include <torchattn/distributed/process_group.h>

#include "detail/error_message.h"

#include <torch/version.h>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <c10/util/StringUtil.h>

#include <cstdlib>
#include <stdexcept>

namespace torchattn::distributed {

namespace {

const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : nullptr;
}

int int_env(const char* name, int fallback, int lo, int hi) {
  const char* v = env(name);
  if (v == nullptr)
    return fallback;
  char* end = nullptr;
  const long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < lo || x > hi) {
    throw std::runtime_error(c10::str(
        "torchattn::distributed: ", name, "='", v, "', expected an integer in [", lo, ", ", hi,
        "]"));
  }
  return static_cast<int>(x);
}

bool loopback(const std::string& addr) {
  return addr.rfind("127.", 0) == 0 || addr == "localhost" || addr == "::1";
}

} // namespace

LaunchEnv launch_env() {
  LaunchEnv e;
  const bool launched =
      env("RANK") || env("WORLD_SIZE") || env("MASTER_ADDR") || env("MASTER_PORT");
  if (!launched)
    return e;
  for (const char* name : {"RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}) {
    if (env(name) == nullptr) {
      throw std::runtime_error(c10::str(
          "torchattn::distributed: ", name,
          " is not set; a launcher (torchrun, scripts/launch.sh) sets RANK, WORLD_SIZE, "
          "MASTER_ADDR and MASTER_PORT together"));
    }
  }
  e.world_size = int_env("WORLD_SIZE", 1, 1, 1 << 20);
  e.rank = int_env("RANK", 0, 0, e.world_size - 1);
  e.local_rank = int_env("LOCAL_RANK", e.rank, 0, e.world_size - 1);
  e.master_addr = env("MASTER_ADDR");
  e.master_port = int_env("MASTER_PORT", 29500, 1, 65535);
  const char* agent = env("TORCHELASTIC_USE_AGENT_STORE");
  e.agent_store = agent != nullptr && std::string(agent) == "True";
  return e;
}

c10::intrusive_ptr<c10d::ProcessGroup> init_process_group(
    const LaunchEnv& e, std::chrono::milliseconds timeout) {
  c10d::TCPStoreOptions so;
  so.port = static_cast<std::uint16_t>(e.master_port);
  so.isServer = e.rank == 0 && !e.agent_store;
  so.numWorkers = static_cast<std::size_t>(e.world_size);
  so.waitWorkers = !e.agent_store;
  so.timeout = timeout;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 3)
  // LibTorch 2.3+ asks for the libuv store by default; Debian builds without libuv.
  so.useLibUV = false;
#endif
  c10::intrusive_ptr<c10d::Store> store;
  try {
    store = c10::make_intrusive<c10d::TCPStore>(e.master_addr, so);
  } catch (const std::exception& ex) {
    throw std::runtime_error(c10::str(
        "torchattn::distributed: rank ", e.rank, " of ", e.world_size,
        " could not meet the others at ", e.master_addr, ":", e.master_port, " within ",
        timeout.count() / 1000.0, " s: ", detail::error_message(ex)));
  }
  store = c10::make_intrusive<c10d::PrefixStore>("torchattn/default_pg", store);

  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  if (const char* ifname = env("GLOO_SOCKET_IFNAME")) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else if (loopback(e.master_addr)) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  try {
    auto gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(store, e.rank, e.world_size, options);
#if TORCH_VERSION_MAJOR >= 2
    auto group = c10::make_intrusive<c10d::ProcessGroup>(store, e.rank, e.world_size);
    group->setDefaultBackend(c10d::ProcessGroup::BackendType::GLOO);
    group->setBackend(c10::DeviceType::CPU, c10d::ProcessGroup::BackendType::GLOO, gloo);
    return group;
#else
    return gloo;
#endif
  } catch (const std::exception& ex) {
    throw std::runtime_error(c10::str(
        "torchattn::distributed: rank ", e.rank, " of ", e.world_size,
        " could not connect Gloo through ", e.master_addr, ":", e.master_port, ": ",
        detail::error_message(ex)));
  }
}

} // namespace torchattn::distributed
