// MultiheadAttention against LibTorch's torch::nn::MultiheadAttention in the same process,
// and incremental decoding with the key/value cache against recomputing the whole prefix.
//
// The two contenders run alternately inside each repeat, so machine noise hits both alike;
// the table gives medians and the ratio LibTorch time / torchattn time (> 1: we are faster).
//
// Usage: torchattn-bench-mha [--repeats N]

#include <torchattn/torchattn.h>

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

namespace {

namespace tnn = torchattn::nn;

double seconds(const std::function<void()>& f) {
  const auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Runs a and b alternately `repeats` times after one warm-up each; returns the medians.
std::pair<double, double> race(
    const std::function<void()>& a, const std::function<void()>& b, int repeats) {
  a();
  b();
  std::vector<double> ta, tb;
  for (int i = 0; i < repeats; ++i) {
    ta.push_back(seconds(a));
    tb.push_back(seconds(b));
  }
  return {median(ta), median(tb)};
}

} // namespace

int main(int argc, char** argv) {
  int repeats = 7;
  for (int i = 1; i + 1 < argc; ++i) {
    if (std::string(argv[i]) == "--repeats")
      repeats = std::stoi(argv[++i]);
  }
  const int64_t B = 8, E = 512, H = 8;
  fmt::print(
      "MultiheadAttention, B={} E={} H={}, float32, median of {} alternating runs\n", B, E, H,
      repeats);
  fmt::print(
      "{:<8} {:>7} {:>5} {:>14} {:>14} {:>8}\n", "pass", "threads", "L", "LibTorch ms",
      "torchattn ms", "ratio");
  for (int threads : {1, 2}) {
    torch::set_num_threads(threads);
    for (int64_t L : {128, 512}) {
      torch::manual_seed(0);
      tnn::MultiheadAttention ours(E, H);
      torch::nn::MultiheadAttention theirs(E, H);
      {
        torch::NoGradGuard no_grad;
        auto dst = theirs->named_parameters();
        for (const auto& p : ours->named_parameters())
          dst[p.key()].copy_(p.value());
      }
      auto x = torch::randn({L, B, E});
      for (bool backward : {false, true}) {
        auto xg = x.clone().requires_grad_(backward);
        auto run_theirs = [&] {
          torch::AutoGradMode grad(backward);
          auto [out, w] = theirs(xg, xg, xg);
          if (backward)
            out.sum().backward();
        };
        auto run_ours = [&] {
          torch::AutoGradMode grad(backward);
          auto [out, w] = ours(xg, xg, xg);
          if (backward)
            out.sum().backward();
        };
        auto [t_theirs, t_ours] = race(run_theirs, run_ours, repeats);
        fmt::print(
            "{:<8} {:>7} {:>5} {:>14.2f} {:>14.2f} {:>7.2f}x\n", backward ? "fwd+bwd" : "forward",
            threads, L, 1e3 * t_theirs, 1e3 * t_ours, t_theirs / t_ours);
      }
    }
  }

  // Decoding 256 steps: the cache against recomputing causal self-attention over the prefix.
  torch::set_num_threads(2);
  torch::NoGradGuard no_grad;
  const int64_t steps = 256;
  tnn::MultiheadAttention mha(tnn::MultiheadAttentionOptions(E, H).batch_first(true));
  mha->eval();
  auto x = torch::randn({B, steps, E});
  auto recompute = [&] {
    for (int64_t t = 1; t <= steps; ++t) {
      auto prefix = x.slice(1, 0, t);
      mha->forward(
          prefix, prefix, prefix, {}, /*need_weights=*/false, {}, true, /*is_causal=*/true);
    }
  };
  auto cached = [&] {
    tnn::MultiheadAttentionCache cache;
    for (int64_t t = 0; t < steps; ++t)
      mha->forward_step(x.slice(1, t, t + 1), cache);
  };
  auto [t_re, t_cache] = race(recompute, cached, std::max(1, repeats / 2));
  fmt::print(
      "\ndecoding {} steps, B={} E={} H={}, 2 threads: recompute {:.1f} ms, cache {:.1f} ms, ratio "
      "{:.1f}x\n",
      steps, B, E, H, 1e3 * t_re, 1e3 * t_cache, t_re / t_cache);
  return 0;
}
