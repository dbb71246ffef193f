// Ring attention: memory per rank, communication hidden behind compute, and a model of time per
// step on P machines. Causal, zigzag, float32, B = 1, H = 8, E = 64, forward + backward.
//
//   torchattn-bench-ring single N        one process on the whole sequence (flex_attention)
//   scripts/launch.sh P torchattn-bench-ring ring N
//                                        P ranks, N / P positions each; every rank prints its
//                                        peak RSS, its compute and wait seconds, and the time the
//                                        same transfers take alone (no compute), from which the
//                                        fraction of transfer time hidden behind compute
//   torchattn-bench-ring model RATE      time per step for P machines from a measured kernel
//                                        rate (GFLOP/s per machine): from which block length a
//                                        network bandwidth keeps the ring compute-bound
//
// On a 2-core machine the P ranks share the two cores (one thread each), so the ring's wall
// time says nothing about P machines; the memory, the bytes and the hidden fraction do.

#include <torchattn/distributed/process_group.h>
#include <torchattn/distributed/ring_attention.h>
#include <torchattn/torchattn.h>

#include <fmt/format.h>

#include <sys/resource.h>

#include <chrono>
#include <cstdlib>
#include <string>

namespace {

namespace dist = torchattn::distributed;
constexpr int64_t kH = 8, kE = 64;

double peak_rss_mib() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0; // KiB
}

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

/// Causal attention FLOPs of forward + backward (2 + 5 products of n_q x n_k x E, half the
/// pairs visible): what the kernel rate is counted in.
double causal_flops(double n) {
  return 7.0 * 2.0 * n * n * kE * kH / 2.0;
}

int single(int64_t N) {
  const double base = peak_rss_mib();
  torch::manual_seed(0);
  auto q = torch::randn({1, kH, N, kE}).requires_grad_(), k = torch::randn_like(q).requires_grad_(),
       v = torch::randn_like(q).requires_grad_();
  const double t0 = now();
  auto [out, lse] = torchattn::ops::flex_attention(
      q, k, v, {}, {}, "top_left", -1, -1, {}, {}, {}, {}, {}, {}, 0.0, {}, {}, {}, {}, false);
  out.backward(torch::ones_like(out));
  const double s = now() - t0;
  fmt::print(
      "single N={}: peak RSS {:.0f} MiB ({:.0f} MiB before the tensors), fwd+bwd {:.2f} s, "
      "{:.1f} GFLOP/s\n",
      N, peak_rss_mib(), base, s, causal_flops(static_cast<double>(N)) / s / 1e9);
  return 0;
}

int ring(int64_t N) {
  const double base = peak_rss_mib();
  auto group = dist::init_process_group(dist::launch_env(), std::chrono::seconds(1800));
  const int rank = group->getRank(), P = group->getSize();
  // Each rank makes only its own shard: the whole sequence never exists in one process.
  torch::manual_seed(rank);
  const int64_t n = dist::zigzag_shard(torch::empty({N}), 0, rank, P).size(0);
  auto q = torch::randn({1, kH, n, kE}).requires_grad_(), k = torch::randn_like(q).requires_grad_(),
       v = torch::randn_like(q).requires_grad_();
  dist::RingTimings timings;
  group->barrier()->wait();
  const double t0 = now();
  auto [out, lse] = dist::ring_attention(
      q, k, v, group, dist::RingAttentionOptions().is_causal(true).layout("zigzag"), &timings);
  out.backward(torch::ones_like(out));
  const double wall = now() - t0;
  const double rss = peak_rss_mib();

  // The same transfers alone: forward's P - 1 block moves and backward's P - 1 block moves
  // and P moves of dK and dV, with nothing to compute meanwhile.
  group->barrier()->wait();
  auto block = torch::empty({1, kH, n, kE});
  auto into = torch::empty_like(block);
  const int next = (rank + 1) % P, prev = (rank + P - 1) % P;
  const double t1 = now();
  const int moves = 2 * 2 * (P - 1) + 2 * P;
  for (int i = 0; i < moves; ++i) {
    std::vector<torch::Tensor> out_t{block}, in_t{into};
    auto s = group->send(out_t, next, 1000 + i);
    auto r = group->recv(in_t, prev, 1000 + i);
    s->wait();
    r->wait();
  }
  const double transfer = now() - t1;
  const double hidden = transfer > 0 ? std::max(0.0, 1.0 - timings.wait_seconds / transfer) : 1.0;
  fmt::print(
      "rank {} of {}: N={} ({} positions here): peak RSS {:.0f} MiB ({:.0f} MiB before the "
      "tensors); fwd+bwd {:.1f} s: compute {:.1f} s, waiting {:.3f} s; {:.0f} MiB sent; the "
      "same transfers alone {:.3f} s; hidden {:.1f}%\n",
      rank, P, N, n, rss, base, wall, timings.compute_seconds, timings.wait_seconds,
      static_cast<double>(timings.bytes_sent) / (1 << 20), transfer, 100 * hidden);
  return 0;
}

int model(double gflops) {
  // One ring step: this rank's n queries against a block of n keys (half visible on average
  // under zigzag causal), forward + backward; the transfer: K and V forward, K, V, dK, dV
  // backward, float32.
  fmt::print(
      "Time per ring step at a kernel rate of {:.0f} GFLOP/s per machine (H={}, E={}, float32, "
      "causal, forward + backward):\n\n| block n = N/P | compute | transfer at 1 / 10 / 100 "
      "Gbit/s |\n|---|---|---|\n",
      gflops, kH, kE);
  for (int64_t n : {256, 1024, 4096, 16384, 65536}) {
    const double compute = causal_flops(2.0 * static_cast<double>(n)) / 4.0 / (gflops * 1e9);
    const double bytes = 6.0 * static_cast<double>(n) * kH * kE * 4.0;
    std::string t;
    for (double gbit : {1.0, 10.0, 100.0})
      t += fmt::format("{}{:.3g} ms", t.empty() ? "" : " / ", bytes / (gbit * 1e9 / 8) * 1e3);
    fmt::print("| {} | {:.3g} ms | {} |\n", n, compute * 1e3, t);
  }
  // compute(n) = 7 * 2 * n^2 * E * H / 2 / rate, transfer(n) = 6 * n * E * H * 4 / bw: equal at
  // n* = 6 * 4 * rate / (7 * bw).
  fmt::print("\nThe ring is compute-bound (transfers hidden) from n = N/P of about:\n");
  for (double gbit : {1.0, 10.0, 100.0}) {
    const double bw = gbit * 1e9 / 8;
    fmt::print("- {:.0f} Gbit/s: n >= {:.0f}\n", gbit, 24.0 * gflops * 1e9 / (7.0 * bw));
  }
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "single" && argc == 3)
      return single(std::atoll(argv[2]));
    if (mode == "ring" && argc == 3)
      return ring(std::atoll(argv[2]));
    if (mode == "model" && argc == 3)
      return model(std::atof(argv[2]));
  } catch (const std::exception& e) {
    fmt::print(stderr, "torchattn-bench-ring: {}\n", e.what());
    return 1;
  }
  fmt::print(stderr, "usage: {} single N | ring N (under a launcher) | model GFLOPS\n", argv[0]);
  return 2;
}
