// GAT's attention, fused (torchattn::graph_attention) against the unfused composite that
// PyTorch Geometric's GATConv runs, in LibTorch on the same threads: index_select of the
// per-node scores, leaky_relu, a scatter softmax (scatter_reduce amax, exp, index_add sum,
// divide), the [E, H, C] messages h[src] * α and their index_add; backward by autograd.
// Forward + backward, on Cora's graph (--cora DIR, else a stochastic block model of its size)
// and an Erdős–Rényi graph of 100,000 nodes with average degree 16, each with a self-loop per
// node, at heads × channels of 8 × 8 and 4 × 64.
//
// Prints per case the median time of each, their ratio, the peak extra memory (the growth of
// VmHWM over the inputs, in a child process: this program with --peak CASE), and whether the
// fused outputs and gradients are bit-identical over two runs at 2 threads and one at 1.
//
//   torchattn-bench-graph [--cora ../shared/data/cora] [--quick]

#include <torchattn/torchattn.h>

#include "proc_status.h"

#include <torch/torch.h>

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

namespace {

namespace F = torchattn::nn::functional;

using torchattn::bench::status_kib;

/// Cora's edges from edges.tsv, or an empty tensor.
torch::Tensor cora_edges(const std::string& dir) {
  std::ifstream in(dir + "/edges.tsv");
  std::vector<int64_t> s, t;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') {
      continue;
    }
    long a = 0, b = 0;
    if (std::sscanf(line.c_str(), "%ld %ld", &a, &b) == 2) {
      s.push_back(a);
      t.push_back(b);
    }
  }
  if (s.empty()) {
    return {};
  }
  return torch::stack({torch::tensor(s), torch::tensor(t)});
}

struct Graph {
  std::string name;
  torch::Tensor edge_index; // with self-loops
  int64_t N;
};

Graph make_graph(const std::string& which, const std::string& cora_dir) {
  torch::manual_seed(0);
  if (which == "cora") {
    auto e = cora_edges(cora_dir);
    std::string name = "Cora";
    if (!e.defined()) { // a stand-in of Cora's size: 2708 nodes, 10556 directed edges
      e = torch::randint(2708, {2, 10556}, torch::kLong);
      name = "Cora-sized random";
    }
    return {name, F::add_self_loops(e, 2708), 2708};
  }
  const int64_t N = 100000;
  return {"ER 100k, deg 16", F::add_self_loops(torch::randint(N, {2, N * 16}, torch::kLong), N), N};
}

struct Inputs {
  torch::Tensor h, a_src, a_dst, grad_out, src, dst;
  F::CsrGraph csr;
  int64_t N;
};

Inputs make_inputs(const Graph& g, int64_t H, int64_t C) {
  torch::manual_seed(1);
  Inputs in;
  in.N = g.N;
  in.h = torch::randn({g.N, H, C}).requires_grad_();
  in.a_src = torch::randn({g.N, H, 1}).requires_grad_();
  in.a_dst = torch::randn({g.N, H, 1}).requires_grad_();
  in.grad_out = torch::randn({g.N, H, C});
  in.src = g.edge_index[0].contiguous();
  in.dst = g.edge_index[1].contiguous();
  in.csr = F::csr_from_edge_index(g.edge_index, g.N);
  return in;
}

/// PyG's GATConv attention, op by op.
torch::Tensor composite(const Inputs& in) {
  const int64_t H = in.h.size(1);
  auto a_src = in.a_src.squeeze(-1), a_dst = in.a_dst.squeeze(-1);
  auto s = torch::leaky_relu(a_src.index_select(0, in.src) + a_dst.index_select(0, in.dst), 0.2);
  auto idx = in.dst.unsqueeze(1).expand({-1, H});
  auto m = torch::full({in.N, H}, -INFINITY).scatter_reduce(0, idx, s.detach(), "amax");
  auto p = torch::exp(s - m.index_select(0, in.dst));
  auto den = torch::zeros({in.N, H}).index_add(0, in.dst, p);
  auto alpha = p / den.index_select(0, in.dst);
  auto msg = in.h.index_select(0, in.src) * alpha.unsqueeze(-1);
  return torch::zeros_like(in.h).index_add(0, in.dst, msg);
}

torch::Tensor fused(const Inputs& in) {
  const int64_t H = in.h.size(1);
  return std::get<0>(F::graph_attention(
      in.a_dst, in.a_src, in.h, in.csr,
      F::GraphAttentionFuncOptions().score("additive").score_weight(torch::ones({H, 1}))));
}

/// One forward + backward; the output and gradients.
std::vector<torch::Tensor> run(const Inputs& in, bool use_fused) {
  auto out = use_fused ? fused(in) : composite(in);
  auto g = torch::autograd::grad({out}, {in.h, in.a_src, in.a_dst}, {in.grad_out});
  g.push_back(out);
  return g;
}

double seconds(const Inputs& in, bool use_fused) {
  const auto t0 = std::chrono::steady_clock::now();
  run(in, use_fused);
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

struct Case {
  std::string graph;
  int64_t H, C;
  std::string name() const { return fmt::format("{}/{}x{}", graph, H, C); }
};

std::vector<Case> cases() {
  return {{"cora", 8, 8}, {"cora", 4, 64}, {"er", 8, 8}, {"er", 4, 64}};
}

int peak_child(const std::string& name, bool use_fused, const std::string& cora) {
  for (const auto& c : cases()) {
    if (c.name() == name) {
      const Inputs in = make_inputs(make_graph(c.graph, cora), c.H, c.C);
      const long base = status_kib("VmRSS");
      run(in, use_fused);
      std::printf("%.1f\n", (status_kib("VmHWM") - base) / 1024.0);
      return 0;
    }
  }
  return 1;
}

double peak_mib(const char* self, const Case& c, bool use_fused, const std::string& cora) {
  const std::string cmd = fmt::format(
      "'{}' --peak '{}' --{} --cora '{}'", self, c.name(), use_fused ? "fused" : "composite", cora);
  double mib = -1;
  if (std::FILE* p = popen(cmd.c_str(), "r")) {
    if (std::fscanf(p, "%lf", &mib) != 1) {
      mib = -1;
    }
    pclose(p);
  }
  return mib;
}

bool bit_identical(const Inputs& in) {
  const int threads = at::get_num_threads();
  auto a = run(in, true), b = run(in, true);
  at::set_num_threads(1);
  auto c = run(in, true);
  at::set_num_threads(threads);
  for (size_t i = 0; i < a.size(); ++i) {
    if (!torch::equal(a[i], b[i]) || !torch::equal(a[i], c[i])) {
      return false;
    }
  }
  return true;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

} // namespace

int main(int argc, char** argv) {
  bool quick = false, child_fused = false;
  std::string peak, cora = "../shared/data/cora";
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (std::strcmp(argv[i], "--peak") == 0 && i + 1 < argc) {
      peak = argv[++i];
    } else if (std::strcmp(argv[i], "--fused") == 0) {
      child_fused = true;
    } else if (std::strcmp(argv[i], "--cora") == 0 && i + 1 < argc) {
      cora = argv[++i];
    }
  }
  if (!peak.empty()) {
    return peak_child(peak, child_fused, cora);
  }
  fmt::print(
      "GAT attention forward + backward, float32, {} threads, kernel {}; composite = PyG's op "
      "sequence in LibTorch\n",
      at::get_num_threads(), torchattn::ops::kernel_capability());
  fmt::print(
      "{:<22} {:>6} {:>9} {:>9} {:>8} {:>10} {:>10} {:>8} {:>6} {:>13}\n", "graph", "HxC", "E",
      "comp. ms", "fused ms", "speed-up", "comp. MiB", "fused MiB", "memory", "bit-identical");
  const int reps = quick ? 1 : 5;
  for (const auto& c : cases()) {
    const Graph g = make_graph(c.graph, cora);
    const Inputs in = make_inputs(g, c.H, c.C);
    const double mem_c = peak_mib(argv[0], c, false, cora),
                 mem_f = peak_mib(argv[0], c, true, cora);
    run(in, false); // warm-up
    run(in, true);
    std::vector<double> tc, tf;
    // Small graphs take milliseconds, where the shared cores' noise is of the same order: more
    // repetitions there, each pair side by side.
    const int n = quick ? reps : (seconds(in, false) < 0.05 ? 41 : reps);
    for (int r = 0; r < n; ++r) {
      tc.push_back(seconds(in, false));
      tf.push_back(seconds(in, true));
    }
    const double mc = median(tc), mf = median(tf);
    fmt::print(
        "{:<22} {:>6} {:>9} {:>9.1f} {:>8.1f} {:>9.2f}x {:>10.1f} {:>10.1f} {:>7.1f}x {:>13}\n",
        g.name, fmt::format("{}x{}", c.H, c.C), g.edge_index.size(1), mc * 1e3, mf * 1e3, mc / mf,
        mem_c, mem_f, mem_c / std::max(mem_f, 0.1), bit_identical(in) ? "yes" : "NO");
    std::fflush(stdout);
  }
  return 0;
}
