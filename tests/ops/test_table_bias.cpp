// A graph transformer's attention bias through flex_attention: a learnable table indexed by an
// integer matrix (Graphormer's shortest-path distances, table[h, spd[b, i, j]]) from
// torchattn::table_bias, and block-diagonal masks for a batch of graphs packed into one
// sequence (flex_attention's document ids). Against the composite of ATen ops (gather, masked
// softmax) in float32 and float64, with the table's gradient; bit-identical across thread
// counts; Meta shapes; errors.

#include <torchattn/torchattn.h>

#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

namespace {

using Catch::Matchers::ContainsSubstring;
using torchattn::testing::AllClose;
using torchattn::testing::tolerance;

struct Packed {
  torch::Tensor doc; // [L] graph of each node
  torch::Tensor spd; // [B, L, L] table entries
};

/// Graphs of `sizes` packed into one sequence, B copies with different distances.
Packed packed_graphs(const std::vector<int64_t>& sizes, int64_t B, int64_t T) {
  std::vector<torch::Tensor> docs;
  for (size_t g = 0; g < sizes.size(); ++g) {
    docs.push_back(torch::full({sizes[g]}, static_cast<int64_t>(g), torch::kLong));
  }
  const auto doc = torch::cat(docs);
  const int64_t L = doc.size(0);
  return {doc, torch::randint(T, {B, L, L}, torch::kLong)};
}

/// Flex attention with the table bias and the graphs' block-diagonal mask.
torch::Tensor fused(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& table, const Packed& p) {
  const c10::optional<torch::Tensor> none;
  return std::get<0>(torchattn::ops::flex_attention(
      q, k, v, none, torchattn::ops::table_bias(table, p.spd), "none", -1, -1, p.doc, p.doc, none,
      none, none, none, 0.0, none, none, none, c10::nullopt, false));
}

/// The composite: scores + table gathered by ATen indexing, -inf across graphs, softmax.
torch::Tensor composite(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& table, const Packed& p) {
  const int64_t B = p.spd.size(0), L = p.spd.size(1), H = table.size(0);
  auto bias = table.index({torch::indexing::Slice(), p.spd.reshape({-1})})
                  .view({H, B, L, L})
                  .permute({1, 0, 2, 3});
  auto s = q.matmul(k.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(-1))) + bias;
  auto same = p.doc.unsqueeze(0) == p.doc.unsqueeze(1);
  return torch::softmax(s.masked_fill(~same, -INFINITY), -1).matmul(v);
}

} // namespace

TEST_CASE("table_bias through flex_attention: a packed batch of graphs", "[ops][graph][flex]") {
  torch::manual_seed(7);
  const int64_t B = 2, H = 4, E = 8, T = 6;
  const auto p = packed_graphs({5, 9, 1, 4}, B, T);
  const int64_t L = p.doc.size(0);
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    INFO(dtype);
    auto opt = torch::dtype(dtype).requires_grad(true);
    auto q = torch::randn({B, H, L, E}, opt), k = torch::randn({B, H, L, E}, opt);
    auto v = torch::randn({B, H, L, E}, opt), table = torch::randn({H, T}, opt);
    const double tol = tolerance(dtype);
    auto out = fused(q, k, v, table, p);
    auto ref = composite(q, k, v, table, p);
    CHECK_THAT(out, AllClose(ref, tol, tol));
    auto grad = torch::randn_like(ref);
    auto g = torch::autograd::grad({out}, {q, k, v, table}, {grad});
    auto g_ref = torch::autograd::grad({ref}, {q, k, v, table}, {grad});
    for (size_t i = 0; i < g.size(); ++i) {
      INFO("gradient " << i);
      CHECK_THAT(g[i], AllClose(g_ref[i], tol, tol));
    }
  }
}

TEST_CASE("table_bias: deterministic table gradient, Meta shapes, errors", "[ops][graph]") {
  torch::manual_seed(8);
  const auto index = torch::randint(40, {3, 64, 64}, torch::kLong);
  auto table = torch::randn({8, 40}, torch::requires_grad());
  const auto grad = torch::randn({3, 8, 64, 64});
  const int saved = at::get_num_threads();
  std::vector<torch::Tensor> grads;
  for (int threads : {2, 1, 2}) {
    at::set_num_threads(threads);
    grads.push_back(
        torch::autograd::grad({torchattn::ops::table_bias(table, index)}, {table}, {grad})[0]);
  }
  at::set_num_threads(saved);
  CHECK(torch::equal(grads[0], grads[1]));
  CHECK(torch::equal(grads[0], grads[2]));
  // Against the sum written out: bincount per head.
  for (int64_t h = 0; h < 8; ++h) {
    auto want = torch::bincount(
        index.reshape({-1}), grad.select(1, h).reshape({-1}).to(torch::kDouble), 40);
    CHECK_THAT(grads[0][h], AllClose(want.to(torch::kFloat), 1e-5, 1e-5));
  }
  // A 2-D index broadcasts as B = 1.
  CHECK(torchattn::ops::table_bias(table, index[0]).sizes() == torch::IntArrayRef({1, 8, 64, 64}));
  auto meta = torchattn::ops::table_bias(
      torch::empty({8, 40}, torch::kMeta),
      torch::empty({3, 5, 7}, torch::dtype(torch::kLong).device(torch::kMeta)));
  CHECK(meta.sizes() == torch::IntArrayRef({3, 8, 5, 7}));
  CHECK_THROWS_WITH(
      torchattn::ops::table_bias(table, index + 1),
      ContainsSubstring(
          "torchattn::table_bias: index has 40, expected entries of table in [0, 40)"));
  CHECK_THROWS_WITH(
      torchattn::ops::table_bias(table, index.to(torch::kInt)),
      ContainsSubstring("index has dtype Int, expected Long (int64)"));
  CHECK_THROWS_WITH(
      torchattn::ops::table_bias(table.detach()[0], index),
      ContainsSubstring("table has shape [40], expected [H, T]"));
}
