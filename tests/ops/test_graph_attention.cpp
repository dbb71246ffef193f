// The fused graph attention (torchattn::graph_attention) against the unfused composite that
// PyTorch Geometric runs (index_select -> scores -> scatter max/sum softmax -> weighted
// index_add), written with ATen ops: outputs, weights and every gradient over graphs with
// isolated nodes, self-loops only, duplicate edges, one huge-degree node, no edges, and
// bipartite ones; heads and channels with vector tails; float32 and float64 on every vector
// build this CPU runs. Then finite differences, determinism across thread counts, the Meta
// kernel and the errors.

#include <torchattn/torchattn.h>

#include "support/capabilities.h"
#include "support/gradcheck.h"
#include "support/low_precision_rule.h"
#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <fmt/format.h>

#include <string>
#include <vector>

namespace {

namespace F = torchattn::nn::functional;
using Catch::Matchers::ContainsSubstring;
using torchattn::testing::AllClose;
using torchattn::testing::capabilities;
using torchattn::testing::CapabilityGuard;
using torchattn::testing::tolerance;

/// A graph as edge_index [2, E] over Nd destinations and Ns sources.
struct Graph {
  std::string name;
  torch::Tensor edge_index;
  int64_t Nd, Ns;
};

std::vector<Graph> graphs() {
  torch::manual_seed(11);
  std::vector<Graph> g;
  auto random = [](int64_t Nd, int64_t Ns, int64_t E) {
    return torch::stack(
        {torch::randint(Ns, {E}, torch::kLong), torch::randint(Nd, {E}, torch::kLong)});
  };
  g.push_back({"random", random(37, 37, 300), 37, 37});
  g.push_back({"bipartite", random(23, 41, 200), 23, 41});
  // Nodes 0..9 receive nothing.
  auto iso = random(30, 30, 150);
  iso[1] = iso[1] % 20 + 10;
  g.push_back({"isolated nodes", iso, 30, 30});
  auto loops = torch::arange(17, torch::kLong);
  g.push_back({"self-loops only", torch::stack({loops, loops}), 17, 17});
  auto dup = random(12, 12, 40);
  g.push_back({"duplicate edges", torch::cat({dup, dup, dup.narrow(1, 0, 7)}, 1), 12, 12});
  // Node 3 receives from every source, 3 times over; the others a few edges.
  auto hub_src = torch::arange(700, torch::kLong).repeat({3});
  auto hub = torch::stack({hub_src, torch::full_like(hub_src, 3)});
  g.push_back({"one huge-degree node", torch::cat({hub, random(700, 700, 500)}, 1), 700, 700});
  g.push_back({"no edges", torch::empty({2, 0}, torch::kLong), 9, 9});
  g.push_back({"no nodes", torch::empty({2, 0}, torch::kLong), 0, 0});
  return g;
}

struct Inputs {
  torch::Tensor q, k, v, w, edge_scale;
};

/// The unfused composite: out [Nd, H, C] and weights [E, H] in edge_index's order.
std::pair<torch::Tensor, torch::Tensor> composite(
    const Inputs& in, const Graph& g, bool additive, double slope, double scale) {
  const auto src = g.edge_index[0], dst = g.edge_index[1];
  const int64_t H = in.q.size(1), C = in.v.size(2);
  torch::Tensor s;
  if (additive) {
    auto u = in.q.index_select(0, dst) + in.k.index_select(0, src);
    // leaky_relu written out: LibTorch 1.13 has no float16 leaky_relu on CPU.
    s = scale * (torch::where(u > 0, u, u * slope) * in.w).sum(-1);
  } else {
    s = scale * (in.q.index_select(0, dst) * in.k.index_select(0, src)).sum(-1);
  }
  auto dst_h = dst.unsqueeze(1).expand({-1, H});
  auto m = torch::full({g.Nd, H}, -std::numeric_limits<double>::infinity(), s.options())
               .scatter_reduce(0, dst_h, s.detach(), "amax");
  // exp in the scores' dtype (LibTorch 1.13 has no float16 exp on CPU: float32, rounded back).
  auto p = torch::exp((s - m.index_select(0, dst))
                          .to(s.scalar_type() == torch::kHalf ? torch::kFloat : s.scalar_type()))
               .to(s.scalar_type());
  auto den = torch::zeros({g.Nd, H}, s.options()).index_add(0, dst, p);
  auto a = p / den.index_select(0, dst);
  if (in.edge_scale.defined()) {
    a = a * in.edge_scale;
  }
  auto out = torch::zeros({g.Nd, H, C}, s.options())
                 .index_add(0, dst, a.unsqueeze(-1) * in.v.index_select(0, src));
  return {out, a};
}

/// The fused op through the functional (which reorders weights to edge_index's order); the
/// edge_scale, given in edge_index's order, is permuted to the CSR's.
std::pair<torch::Tensor, torch::Tensor> fused(
    const Inputs& in, const Graph& g, bool additive, double slope, double scale) {
  const auto csr = F::csr_from_edge_index(g.edge_index, g.Nd, g.Ns);
  c10::optional<torch::Tensor> es;
  if (in.edge_scale.defined()) {
    es = in.edge_scale.index_select(0, csr.edge_order);
  }
  c10::optional<torch::Tensor> w;
  if (additive) {
    w = in.w;
  }
  auto [out, lse, weights] = torchattn::ops::graph_attention(
      in.q, in.k, in.v, csr.row_ptr, csr.col_index, additive ? "additive" : "dot", w, slope, scale,
      es, /*need_weights=*/true);
  return {out, torch::empty_like(weights).index_copy_(0, csr.edge_order, weights)};
}

Inputs make_inputs(
    const Graph& g, int64_t H, int64_t D, int64_t C, torch::ScalarType dtype, bool edge_scale) {
  auto opt = torch::dtype(dtype).requires_grad(true);
  Inputs in;
  in.q = torch::randn({g.Nd, H, D}, opt);
  in.k = torch::randn({g.Ns, H, D}, opt);
  in.v = torch::randn({g.Ns, H, C}, opt);
  in.w = torch::randn({H, D}, opt);
  if (edge_scale) {
    in.edge_scale =
        (torch::rand({g.edge_index.size(1), H}, torch::dtype(dtype)) * 2).requires_grad_(true);
  }
  return in;
}

std::vector<torch::Tensor> leaves(const Inputs& in, bool additive) {
  std::vector<torch::Tensor> l{in.q, in.k, in.v};
  if (additive) {
    l.push_back(in.w);
  }
  if (in.edge_scale.defined()) {
    l.push_back(in.edge_scale);
  }
  return l;
}

} // namespace

TEST_CASE("graph_attention equals the unfused composite on every graph", "[ops][graph]") {
  CapabilityGuard guard;
  const std::vector<std::array<int64_t, 3>> dims{{1, 1, 1}, {3, 5, 17}, {8, 8, 8}, {2, 16, 33}};
  for (const auto& cap : capabilities()) {
    torchattn::ops::set_kernel_capability(cap);
    for (const auto& g : graphs()) {
      for (const auto& [H, D, C] : dims) {
        for (auto dtype : {torch::kFloat, torch::kDouble}) {
          for (bool additive : {false, true}) {
            for (bool edge_scale : {false, true}) {
              const double slope = 0.2, scale = additive ? 0.7 : 1.0 / std::sqrt(double(D));
              const auto in = make_inputs(g, H, D, C, dtype, edge_scale);
              INFO(fmt::format(
                  "{} H={} D={} C={} {} {} edge_scale={} {}", g.name, H, D, C,
                  dtype == torch::kDouble ? "float64" : "float32", additive ? "additive" : "dot",
                  edge_scale, cap));
              const double tol = tolerance(dtype);
              auto [out_ref, w_ref] = composite(in, g, additive, slope, scale);
              auto [out, w] = fused(in, g, additive, slope, scale);
              CHECK_THAT(out, AllClose(out_ref, tol, tol));
              CHECK_THAT(w, AllClose(w_ref, tol, tol));
              const auto l = leaves(in, additive);
              const auto dout = torch::randn_like(out_ref);
              const auto g_ref = torch::autograd::grad({out_ref}, l, {dout});
              const auto g_fused = torch::autograd::grad({out}, l, {dout});
              for (size_t i = 0; i < l.size(); ++i) {
                INFO("gradient " << i);
                CHECK_THAT(g_fused[i], AllClose(g_ref[i], tol, tol));
              }
            }
          }
        }
      }
    }
  }
}

TEST_CASE("graph_attention's gradients match finite differences", "[ops][graph]") {
  torch::manual_seed(3);
  const Graph g{
      "small",
      torch::stack({torch::tensor({0, 1, 2, 2, 3, 0, 1}), torch::tensor({1, 1, 0, 3, 3, 3, 2})}), 4,
      4};
  for (bool additive : {false, true}) {
    auto in = make_inputs(g, 2, 3, 4, torch::kDouble, /*edge_scale=*/true);
    auto loss = [&] {
      auto [out, w] = fused(in, g, additive, 0.1, 0.8);
      return (out * torch::linspace(-1, 1, out.numel(), torch::kDouble).view(out.sizes())).sum();
    };
    std::vector<std::pair<std::string, torch::Tensor>> named{
        {"query", in.q}, {"key", in.k}, {"value", in.v}, {"edge_scale", in.edge_scale}};
    if (additive) {
      named.emplace_back("score_weight", in.w);
    }
    const auto r = torchattn::testing::gradcheck(loss, named);
    INFO((additive ? "additive: " : "dot: ") << r.worst_where);
    CHECK(r.worst_error < 1e-6);
  }
}

TEST_CASE("graph_attention is bit-identical across runs and thread counts", "[ops][graph]") {
  torch::manual_seed(5);
  const int64_t N = 3000;
  const Graph g{
      "random",
      torch::stack(
          {torch::randint(N, {40000}, torch::kLong), torch::randint(N, {40000}, torch::kLong)}),
      N, N};
  const int saved = at::get_num_threads();
  for (bool additive : {false, true}) {
    const auto in = make_inputs(g, 4, 8, 8, torch::kFloat, /*edge_scale=*/true);
    const auto dout = torch::randn({N, 4, 8});
    std::vector<std::vector<torch::Tensor>> runs;
    for (int threads : {1, 2, 2, 1}) {
      at::set_num_threads(threads);
      auto [out, w] = fused(in, g, additive, 0.2, 0.5);
      auto grads = torch::autograd::grad({out}, leaves(in, additive), {dout});
      grads.push_back(out);
      grads.push_back(w);
      runs.push_back(grads);
    }
    at::set_num_threads(saved);
    for (size_t r = 1; r < runs.size(); ++r) {
      for (size_t i = 0; i < runs[0].size(); ++i) {
        INFO("run " << r << " tensor " << i << (additive ? " additive" : " dot"));
        CHECK(torch::equal(runs[r][i], runs[0][i]));
      }
    }
  }
}

TEST_CASE("graph_attention's Meta kernel gives the shapes", "[ops][graph]") {
  auto m = torch::TensorOptions().device(torch::kMeta);
  auto [out, lse, w] = torchattn::ops::graph_attention(
      torch::empty({5, 2, 3}, m), torch::empty({7, 2, 3}, m), torch::empty({7, 2, 4}, m),
      torch::empty({6}, m.dtype(torch::kLong)), torch::empty({11}, m.dtype(torch::kLong)),
      "additive", torch::empty({2, 3}, m), 0.2, c10::nullopt, c10::nullopt, true);
  CHECK(out.sizes() == torch::IntArrayRef({5, 2, 4}));
  CHECK(lse.sizes() == torch::IntArrayRef({5, 2}));
  CHECK(w.sizes() == torch::IntArrayRef({11, 2}));
  CHECK(out.is_meta());
  auto [gq, gk, gv, gw, ges] = torchattn::ops::_graph_attention_backward(
      out, torch::empty({5, 2, 3}, m), torch::empty({7, 2, 3}, m), torch::empty({7, 2, 4}, m),
      torch::empty({6}, m.dtype(torch::kLong)), torch::empty({11}, m.dtype(torch::kLong)),
      "additive", torch::empty({2, 3}, m), 0.2, 1.0, torch::empty({11, 2}, m));
  CHECK(gq.sizes() == torch::IntArrayRef({5, 2, 3}));
  CHECK(gk.sizes() == torch::IntArrayRef({7, 2, 3}));
  CHECK(gv.sizes() == torch::IntArrayRef({7, 2, 4}));
  CHECK(gw.sizes() == torch::IntArrayRef({2, 3}));
  CHECK(ges.sizes() == torch::IntArrayRef({11, 2}));
  // The Meta kernel refuses what the CPU kernel refuses, in the same words.
  for (const auto& bad : {std::vector<int64_t>{7, 3, 3}, std::vector<int64_t>{7, 2}}) {
    std::string messages[2];
    int n = 0;
    for (auto device : {torch::kCPU, torch::kMeta}) {
      auto o = torch::TensorOptions().device(device);
      try {
        torchattn::ops::graph_attention(
            torch::zeros({5, 2, 3}, o), torch::zeros(bad, o), torch::zeros({7, 2, 4}, o),
            torch::zeros({6}, o.dtype(torch::kLong)), torch::zeros({11}, o.dtype(torch::kLong)));
      } catch (const c10::Error& e) {
        messages[n] = e.what_without_backtrace();
      }
      ++n;
    }
    CHECK_FALSE(messages[0].empty());
    CHECK(messages[0] == messages[1]);
  }
}

TEST_CASE("graph_attention refuses bad input with a clear message", "[ops][graph][errors]") {
  auto q = torch::randn({3, 2, 4}), k = torch::randn({4, 2, 4}), v = torch::randn({4, 2, 5});
  auto row_ptr = torch::tensor({0, 2, 2, 5}, torch::kLong);
  auto col = torch::tensor({0, 1, 3, 2, 0}, torch::kLong);
  auto call = [&](const torch::Tensor& rp, const torch::Tensor& c) {
    torchattn::ops::graph_attention(q, k, v, rp, c);
  };
  CHECK_NOTHROW(call(row_ptr, col));
  CHECK_THROWS_WITH(
      call(row_ptr, torch::tensor({0, 1, 4, 2, 0}, torch::kLong)),
      ContainsSubstring("col_index has source 4 at edge 2, expected a node in [0, 4)"));
  CHECK_THROWS_WITH(
      call(row_ptr, torch::tensor({0, -1, 3, 2, 0}, torch::kLong)),
      ContainsSubstring("col_index has source -1 at edge 1"));
  CHECK_THROWS_WITH(
      call(torch::tensor({0, 3, 2, 5}, torch::kLong), col),
      ContainsSubstring("row_ptr decreases at node 1 (row_ptr[1] = 3, row_ptr[2] = 2), a negative "
                        "degree; expected a CSR sorted by destination"));
  CHECK_THROWS_WITH(
      call(torch::tensor({1, 2, 2, 5}, torch::kLong), col),
      ContainsSubstring("row_ptr[0] is 1, expected 0"));
  CHECK_THROWS_WITH(
      call(torch::tensor({0, 2, 2, 4}, torch::kLong), col),
      ContainsSubstring("row_ptr[3] is 4, expected the number of edges 5"));
  CHECK_THROWS_WITH(
      call(row_ptr.to(torch::kInt), col),
      ContainsSubstring("row_ptr has dtype Int, expected Long (int64)"));
  CHECK_THROWS_WITH(
      torchattn::ops::graph_attention(q.to(torch::kInt), k, v, row_ptr, col),
      ContainsSubstring("torchattn::graph_attention: query has dtype Int"));
  CHECK_THROWS_WITH(
      torchattn::ops::graph_attention(q, k.to(torch::kDouble), v, row_ptr, col),
      ContainsSubstring("key has dtype Double"));
  CHECK_THROWS_WITH(
      torchattn::ops::graph_attention(q, torch::randn({4, 3, 4}), v, row_ptr, col),
      ContainsSubstring("key has shape [4, 3, 4], expected [Ns, 2, 4]"));
  CHECK_THROWS_WITH(
      torchattn::ops::graph_attention(q, k, v, row_ptr, col, "cosine"),
      ContainsSubstring("score is \"cosine\", expected \"dot\" or \"additive\""));
  CHECK_THROWS_WITH(
      torchattn::ops::graph_attention(q, k, v, row_ptr, col, "additive"),
      ContainsSubstring("score \"additive\" needs score_weight [H, D]"));
  CHECK_THROWS_WITH(
      torchattn::ops::graph_attention(
          q, k, v, row_ptr, col, "dot", c10::nullopt, 0.2, c10::nullopt, torch::ones({4, 2})),
      ContainsSubstring("edge_scale has shape [4, 2], expected [5, 2] [E, H]"));
  CHECK_THROWS_WITH(
      F::csr_from_edge_index(torch::tensor({{0, 1}, {2, 3}}, torch::kLong), 3),
      ContainsSubstring("edge_index has destination 3 at edge 1, expected a node in [0, 3)"));
  CHECK_THROWS_WITH(
      F::csr_from_edge_index(torch::tensor({{0, 1, 2}}, torch::kLong), 3),
      ContainsSubstring("edge_index has shape [1, 3], expected [2, E]"));
  // Double backward names the op.
  auto qg = q.clone().requires_grad_(true);
  auto out = std::get<0>(torchattn::ops::graph_attention(qg, k, v, row_ptr, col));
  auto gq = torch::autograd::grad(
      {out.sum()}, {qg}, {}, /*retain_graph=*/true,
      /*create_graph=*/true)[0];
  CHECK_THROWS_WITH(gq.sum().backward(), ContainsSubstring("double backward is not supported"));
}

TEST_CASE(
    "graph_attention in bfloat16 and float16: at most 2x the math path's error",
    "[ops][graph][low_precision]") {
  // FlashAttention's rule: against float64, the fused op's error is at most twice that of the
  // composite run in the same dtype.
  torch::manual_seed(21);
  const Graph g{
      "random",
      torch::stack(
          {torch::randint(200, {3000}, torch::kLong), torch::randint(200, {3000}, torch::kLong)}),
      200, 200};
  for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
    for (bool additive : {false, true}) {
      INFO((dtype == torch::kHalf ? "float16 " : "bfloat16 ") << (additive ? "additive" : "dot"));
      const auto in64 = make_inputs(g, 4, 16, 16, torch::kDouble, /*edge_scale=*/true);
      auto cast = [&](const torch::Tensor& t) { return t.detach().to(dtype).requires_grad_(); };
      const Inputs low{
          cast(in64.q), cast(in64.k), cast(in64.v), cast(in64.w), cast(in64.edge_scale)};
      // float64 truth from the rounded inputs.
      auto up = [](const torch::Tensor& t) {
        return t.detach().to(torch::kDouble).requires_grad_();
      };
      const Inputs truth_in{up(low.q), up(low.k), up(low.v), up(low.w), up(low.edge_scale)};
      auto [truth, tw] = composite(truth_in, g, additive, 0.2, 0.25);
      auto [math, mw] = composite(low, g, additive, 0.2, 0.25);
      auto [out, w] = fused(low, g, additive, 0.2, 0.25);
      using torchattn::testing::max_error;
      using torchattn::testing::require_rule;
      require_rule(out, math, truth, dtype);
      require_rule(w, mw, tw, dtype);
      const auto dout = torch::randn({200, 4, 16}, torch::kDouble);
      const auto gt = torch::autograd::grad({truth}, leaves(truth_in, additive), {dout});
      const auto gm = torch::autograd::grad({math}, leaves(low, additive), {dout.to(dtype)});
      const auto gf = torch::autograd::grad({out}, leaves(low, additive), {dout.to(dtype)});
      for (size_t i = 0; i < gt.size(); ++i) {
        INFO("gradient " << i);
        require_rule(gf[i], gm[i], gt[i], dtype);
      }
    }
  }
}
