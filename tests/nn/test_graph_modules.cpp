// GATConv, GATv2Conv and GraphTransformerConv against tests/reference/graph.pt: layers written
// in Python from the published formulas with PyTorch Geometric's semantics and parameter
// names. The parameters load into the C++ modules by state-dict name; outputs, attention
// weights (with the edge_index they belong to) and the gradients of x and every parameter
// match in float64. Then dropout, the prepared-graph path, and errors.

#include <torchattn/jit/state_dict.h>
#include <torchattn/torchattn.h>

#include "support/reference.h"
#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <string>
#include <vector>

namespace {

using Catch::Matchers::ContainsSubstring;
using torchattn::testing::AllClose;
using torchattn::testing::ReferenceCase;

/// The module of a reference case, in float64, its parameters loaded by name.
torch::nn::AnyModule module_of(const ReferenceCase& c) {
  const std::string kind = c.str("kind");
  const int64_t in = c.integer("in_channels"), out = c.integer("out_channels");
  std::shared_ptr<torch::nn::Module> m;
  torch::nn::AnyModule any;
  if (kind == "gat") {
    torchattn::nn::GATConv conv(torchattn::nn::GATConvOptions(in, out)
                                    .heads(c.integer("heads"))
                                    .concat(c.flag("concat"))
                                    .negative_slope(c.real("negative_slope"))
                                    .add_self_loops(c.flag("add_self_loops"))
                                    .bias(c.flag("bias")));
    m = conv.ptr();
    any = torch::nn::AnyModule(conv);
  } else if (kind == "gatv2") {
    torchattn::nn::GATv2Conv conv(torchattn::nn::GATv2ConvOptions(in, out)
                                      .heads(c.integer("heads"))
                                      .concat(c.flag("concat"))
                                      .negative_slope(c.real("negative_slope"))
                                      .add_self_loops(c.flag("add_self_loops"))
                                      .bias(c.flag("bias"))
                                      .share_weights(c.flag("share_weights")));
    m = conv.ptr();
    any = torch::nn::AnyModule(conv);
  } else {
    torchattn::nn::GraphTransformerConv conv(torchattn::nn::GraphTransformerConvOptions(in, out)
                                                 .heads(c.integer("heads"))
                                                 .concat(c.flag("concat"))
                                                 .root_weight(c.flag("root_weight"))
                                                 .bias(c.flag("bias")));
    m = conv.ptr();
    any = torch::nn::AnyModule(conv);
  }
  m->to(torch::kDouble);
  m->eval();
  // The state dict as PyG names it, in a TorchScript container, loaded by name.
  const auto report =
      torchattn::jit::load_state_dict(*m, c.bag.attr("params").toModule(), "", /*strict=*/false);
  INFO(c.name);
  CHECK(report.missing.empty());
  CHECK(report.mismatched.empty());
  if (kind == "gatv2" && c.flag("share_weights")) {
    // PyG lists the shared Linear twice; ours once (lin_r is lin_l).
    CHECK(report.unexpected == std::vector<std::string>{"lin_r.bias", "lin_r.weight"});
  } else {
    CHECK(report.unexpected.empty());
  }
  CHECK(report.loaded.size() == m->named_parameters().size());
  return any;
}

/// forward_with_attention of whichever module `any` holds.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> with_attention(
    torch::nn::AnyModule& any, const torch::Tensor& x, const torch::Tensor& edge_index) {
  if (auto* m = any.ptr().get(); auto* gat = dynamic_cast<torchattn::nn::GATConvImpl*>(m)) {
    return gat->forward_with_attention(x, edge_index);
  } else if (auto* gatv2 = dynamic_cast<torchattn::nn::GATv2ConvImpl*>(m)) {
    return gatv2->forward_with_attention(x, edge_index);
  }
  return any.get<torchattn::nn::GraphTransformerConv>()->forward_with_attention(x, edge_index);
}

} // namespace

TEST_CASE(
    "graph modules match the Python reference, PyG state dicts loading by name",
    "[nn][graph][reference]") {
  const auto& ref = torchattn::testing::reference("graph.pt");
  REQUIRE(ref.cases.size() == 9);
  for (const auto& c : ref.cases) {
    INFO(c.name);
    auto any = module_of(c);
    auto x = c.get("x").clone().requires_grad_(true);
    auto [out, edges, weights] = with_attention(any, x, c.get("edge_index"));
    CHECK_THAT(out, AllClose(c.get("output"), 1e-10, 1e-10));
    CHECK(torch::equal(edges, c.get("edges")));
    CHECK_THAT(weights, AllClose(c.get("weights"), 1e-10, 1e-10));
    // The plain forward, through AnyModule as a Sequential would call it.
    CHECK_THAT(any.forward(x, c.get("edge_index")), AllClose(c.get("output"), 1e-10, 1e-10));
    (out * c.get("grad_out")).sum().backward();
    CHECK_THAT(x.grad(), AllClose(c.get("grads.x"), 1e-10, 1e-10));
    auto named = any.ptr()->named_parameters();
    for (const auto& [name, g] : c.group("grads")) {
      if (name == "x") {
        continue;
      }
      INFO("gradient of " << name);
      CHECK_THAT(named[name].grad(), AllClose(g, 1e-10, 1e-10));
    }
  }
}

TEST_CASE("GATConv: dropout on the weights in training, a prepared graph, errors", "[nn][graph]") {
  torch::manual_seed(0);
  torchattn::nn::GATConv conv(torchattn::nn::GATConvOptions(6, 4).heads(2).dropout(0.5));
  auto x = torch::randn({10, 6});
  auto edge_index = torch::randint(10, {2, 40}, torch::kLong);
  // Prepared once, the graph gives forward's result.
  conv->eval();
  const auto graph = conv->graph(edge_index, 10);
  CHECK(graph.num_edges() == 40 - (edge_index[0] == edge_index[1]).sum().item<int64_t>() + 10);
  CHECK(torch::equal(std::get<0>(conv->forward_graph(x, graph)), conv(x, edge_index)));
  // In training, each weight is dropped (0) or scaled by 1 / (1 - p); eval is deterministic.
  conv->train();
  auto [y, edges, w] = conv->forward_with_attention(x, edge_index);
  conv->eval();
  auto [y_eval, edges_eval, w_eval] = conv->forward_with_attention(x, edge_index);
  const auto kept = w != 0;
  CHECK(kept.any().item<bool>());
  CHECK_FALSE(kept.all().item<bool>());
  CHECK_THAT(w.masked_select(kept), AllClose(w_eval.masked_select(kept) * 2, 1e-6, 1e-6));
  CHECK_FALSE(torch::allclose(y, y_eval));
  // Errors name the module and the argument.
  CHECK_THROWS_WITH(
      conv(torch::randn({10, 5}), edge_index),
      ContainsSubstring("torchattn::nn::GATConv: x has shape [10, 5], expected [N, 6]"));
  CHECK_THROWS_WITH(
      conv(x, torch::randint(12, {2, 40}, torch::kLong) + 10),
      ContainsSubstring("edge_index has source"));
  CHECK_THROWS_WITH(
      conv(x, edge_index.to(torch::kInt)),
      ContainsSubstring("edge_index has dtype Int, expected Long (int64)"));
  CHECK_THROWS_WITH(
      torchattn::nn::GATConv(torchattn::nn::GATConvOptions(6, 4).dropout(1.0)),
      ContainsSubstring("dropout"));
  CHECK_THROWS_WITH(
      torchattn::nn::GATv2Conv(torchattn::nn::GATv2ConvOptions(6, 0)),
      ContainsSubstring("GATv2Conv: in_channels, out_channels and heads are 6, 0 and 1, expected "
                        "positive"));
}
