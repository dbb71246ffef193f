// flex_attention's modifiers against plain attention, in one run on the same threads: the
// issue's targets as ratios (float32, B=1, E=64, 2 threads unless OMP_NUM_THREADS says):
//   - sliding window of 256 keys (causal) vs dense causal, N=16384, H=8, forward+backward;
//   - 8 documents of 2048 packed into N=16384 vs dense, H=8, forward+backward;
//   - ALiBi, soft-cap, the T5 position table (with its gradient) and all three vs plain,
//     N=4096, H=8, forward+backward;
//   - GQA H=32 with H_kv=8 vs H_kv=32, N=4096: time per query head and memory.
// Peak memory is measured per case in a child process (this program with --peak CASE): the
// growth of VmHWM over the inputs, so it counts what the op allocates.
//
//   torchattn-bench-flex [--quick]     (--quick: N=4096 for the long cases, 1 repetition)
//
// Cases alternate (A B A B ...) and each figure is the median of its repetitions, so that a
// ratio compares runs seconds apart on a shared machine. Not a Google Benchmark program:
// its cases take seconds each and only their ratios mean anything here.

#include <torchattn/torchattn.h>

#include "proc_status.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <string>
#include <vector>

namespace {

namespace F = torchattn::nn::functional;

using torchattn::bench::status_kib;

/// One case: its inputs, made once, and one forward+backward.
struct Case {
  std::string name;
  int64_t H, Hkv, N;
  std::function<F::FlexAttentionFuncOptions(int64_t N, int64_t H)> options;
  bool table_grad = false;
};

struct Inputs {
  torch::Tensor q, k, v, grad, table;
  F::FlexAttentionFuncOptions options;
};

Inputs make_inputs(const Case& c) {
  torch::manual_seed(0);
  Inputs in;
  in.q = torch::randn({1, c.H, c.N, 64}).requires_grad_(true);
  in.k = torch::randn({1, c.Hkv, c.N, 64}).requires_grad_(true);
  in.v = torch::randn({1, c.Hkv, c.N, 64}).requires_grad_(true);
  in.grad = torch::randn({1, c.H, c.N, 64});
  in.options = c.options(c.N, c.H).enable_gqa(c.H != c.Hkv);
  if (c.table_grad) {
    in.table = in.options.position_bias().clone().requires_grad_(true);
    in.options.position_bias(in.table);
  }
  return in;
}

void run_once(const Inputs& in) {
  auto r = F::flex_attention(in.q, in.k, in.v, in.options);
  r.output.backward(in.grad);
}

double seconds(const Inputs& in) {
  const auto t0 = std::chrono::steady_clock::now();
  run_once(in);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::vector<Case> cases(bool quick) {
  const int64_t long_n = quick ? 4096 : 16384;
  auto plain = [](int64_t, int64_t) { return F::FlexAttentionFuncOptions(); };
  auto causal = [](int64_t, int64_t) { return F::FlexAttentionFuncOptions().causal("top_left"); };
  auto window = [](int64_t, int64_t) {
    return F::FlexAttentionFuncOptions().causal("top_left").window_left(255);
  };
  auto documents = [](int64_t n, int64_t) {
    return F::FlexAttentionFuncOptions()
        .q_doc_ids(torch::arange(n, torch::kLong).div(n / 8, "floor"))
        .kv_doc_ids(torch::arange(n, torch::kLong).div(n / 8, "floor"));
  };
  auto alibi = [](int64_t, int64_t h) {
    return F::FlexAttentionFuncOptions().alibi_slopes(F::alibi_slopes(h));
  };
  auto softcap = [](int64_t, int64_t) { return F::FlexAttentionFuncOptions().softcap(30.0); };
  auto table = [](int64_t n, int64_t h) {
    return F::FlexAttentionFuncOptions()
        .position_bias(torch::randn({h, 32}))
        .position_buckets(F::t5_position_buckets(n, n));
  };
  auto all3 = [](int64_t n, int64_t h) {
    return F::FlexAttentionFuncOptions()
        .alibi_slopes(F::alibi_slopes(h))
        .softcap(30.0)
        .position_bias(torch::randn({h, 32}))
        .position_buckets(F::t5_position_buckets(n, n));
  };
  return {
      {"dense causal", 8, 8, long_n, causal},
      {"window 256 causal", 8, 8, long_n, window},
      {"dense", 8, 8, long_n, plain},
      {"8 documents", 8, 8, long_n, documents},
      {"plain", 8, 8, 4096, plain},
      {"alibi", 8, 8, 4096, alibi},
      {"softcap", 8, 8, 4096, softcap},
      {"t5 table (grad)", 8, 8, 4096, table, true},
      {"alibi+softcap+table", 8, 8, 4096, all3, true},
      {"H=32 H_kv=32", 32, 32, 4096, plain},
      {"H=32 H_kv=8", 32, 8, 4096, plain},
  };
}

/// Pairs compared: (case, baseline, target ratio description).
struct Pair {
  const char* name;
  const char* base;
  const char* target;
};

const Pair kPairs[] = {
    {"window 256 causal", "dense causal", ">= 10x faster"},
    {"8 documents", "dense", ">= 5x faster"},
    {"alibi", "plain", "<= 1.25x the time"},
    {"softcap", "plain", "<= 1.25x the time"},
    {"t5 table (grad)", "plain", "<= 1.25x the time"},
    {"alibi+softcap+table", "plain", "<= 1.25x the time"},
    {"H=32 H_kv=8", "H=32 H_kv=32", "same time per query head"},
};

/// The child process of --peak: one case's forward+backward, its memory growth in MiB.
int peak_child(const std::string& name, bool quick) {
  for (const auto& c : cases(quick)) {
    if (c.name == name) {
      const Inputs in = make_inputs(c);
      const long base = status_kib("VmRSS");
      run_once(in);
      std::printf("%.1f\n", (status_kib("VmHWM") - base) / 1024.0);
      return 0;
    }
  }
  return 1;
}

double peak_mib(const char* self, const std::string& name, bool quick) {
  const std::string cmd = fmt::format("'{}' --peak '{}'{}", self, name, quick ? " --quick" : "");
  double mib = -1;
  if (std::FILE* p = popen(cmd.c_str(), "r")) {
    if (std::fscanf(p, "%lf", &mib) != 1) {
      mib = -1;
    }
    pclose(p);
  }
  return mib;
}

} // namespace

int main(int argc, char** argv) {
  bool quick = false;
  std::string peak;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--peak") == 0 && i + 1 < argc) {
      peak = argv[++i];
    }
  }
  if (!peak.empty()) {
    return peak_child(peak, quick);
  }
  fmt::print(
      "flex_attention, float32, B=1, E=64, {} threads, kernel {}\n", at::get_num_threads(),
      torchattn::ops::kernel_capability());
  const auto all = cases(quick);
  std::map<std::string, Case> by_name;
  for (const auto& c : all) {
    by_name.emplace(c.name, c);
  }
  std::map<std::string, double> median, memory;
  const int reps = quick ? 1 : 3;
  for (const auto& pair : kPairs) {
    for (const char* name : {pair.base, pair.name}) {
      if (median.count(name) == 0) {
        memory[name] = peak_mib(argv[0], name, quick);
      }
    }
    const Inputs a = make_inputs(by_name.at(pair.base)), b = make_inputs(by_name.at(pair.name));
    run_once(a); // warm-up: thread pools, first-touch of buffers
    run_once(b);
    std::vector<double> ta, tb;
    for (int r = 0; r < reps; ++r) {
      ta.push_back(seconds(a));
      tb.push_back(seconds(b));
    }
    auto med = [](std::vector<double> v) {
      std::sort(v.begin(), v.end());
      return v[v.size() / 2];
    };
    median[pair.base] = med(ta);
    median[pair.name] = med(tb);
    const auto& c = by_name.at(pair.name);
    const auto& base = by_name.at(pair.base);
    const bool per_head = c.H != c.Hkv;
    const double ratio = median[pair.name] / median[pair.base];
    fmt::print(
        "{:<22} N={:<6} {:8.3f} s  {:8.1f} MiB | {:<14} {:8.3f} s  {:8.1f} MiB | {} {:6.3f} "
        "(target: {})\n",
        pair.name, c.N, median[pair.name], memory[pair.name], pair.base, median[pair.base],
        memory[pair.base], per_head ? "time ratio" : (ratio < 1 ? "speed-up" : "time ratio"),
        ratio < 1 && !per_head ? 1 / ratio : ratio, pair.target);
    (void)base;
  }
  return 0;
}
