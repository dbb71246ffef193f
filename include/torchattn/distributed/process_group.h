#pragma once

/// A Gloo process group from torchrun's environment, for C++ programs:
///
///   torchrun --no-python --nproc-per-node 2 ./my_program       # Python's launcher, or
///   scripts/launch.sh 2 ./my_program                             # a plain shell loop
///
/// Both set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for every process, and
/// the processes meet through a c10d::TCPStore at MASTER_ADDR:MASTER_PORT: hosted by rank 0,
/// or by torchrun's agent when it says so (TORCHELASTIC_USE_AGENT_STORE=True), as Python's
/// torch.distributed.init_process_group("gloo") does.

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <chrono>
#include <string>

namespace torchattn::distributed {

/// What torchrun (or scripts/launch.sh) tells a process.
struct LaunchEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  /// TORCHELASTIC_USE_AGENT_STORE=True: torchrun's agent hosts the store; no rank does.
  bool agent_store = false;
};

/// The launcher's variables; throws std::runtime_error naming a missing or malformed one.
/// Without any of them (a plain run), a world of one at 127.0.0.1.
LaunchEnv launch_env();

/// A Gloo process group over `env`'s store. Every collective and transfer of the group fails
/// after `timeout` instead of hanging (a dead rank). Gloo binds to the interface named by
/// GLOO_SOCKET_IFNAME when it is set, to 127.0.0.1 when MASTER_ADDR is a loopback address,
/// and otherwise to the address of this host's name. Throws std::runtime_error when the
/// rendezvous fails (with the address, port and rank).
c10::intrusive_ptr<c10d::ProcessGroup> init_process_group(
    const LaunchEnv& env = launch_env(),
    std::chrono::milliseconds timeout = std::chrono::seconds(300));

} // namespace torchattn::distributed
