// Outputs, attention weights and gradients of every module against tensors made by PyTorch
// (tests/reference/make_reference.py), with parameters loaded by state-dict name.

#include <torchattn/torchattn.h>

#include "support/modules.h"
#include "support/reference.h"
#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>

#include <iostream>
#include <set>

namespace {

using torchattn::testing::AllClose;
using torchattn::testing::ReferenceCase;
using torchattn::testing::WorstError;
namespace tnn = torchattn::nn;

torch::nn::AnyModule make_module(
    const ReferenceCase& c, const torch::Tensor& query, const torch::Tensor& key) {
  const auto variant = c.str("variant");
  if (variant == "dot") {
    return torch::nn::AnyModule(tnn::DotProductAttention());
  }
  if (variant == "sdpa") {
    auto options = tnn::ScaledDotProductAttentionOptions();
    if (c.real("scale") > 0) {
      options.scale(c.real("scale"));
    }
    return torch::nn::AnyModule(tnn::ScaledDotProductAttention(options));
  }
  if (variant == "cosine") {
    auto options = tnn::CosineAttentionOptions()
                       .num_heads(c.integer("num_heads"))
                       .learnable(c.flag("learnable"));
    if (c.real("max_temperature") > 0) {
      options.max_temperature(c.real("max_temperature"));
    }
    return torch::nn::AnyModule(tnn::CosineAttention(options));
  }
  if (variant == "additive") {
    return torch::nn::AnyModule(tnn::AdditiveAttention(
        tnn::AdditiveAttentionOptions(query.size(-1), key.size(-1), c.integer("hidden_dim"))
            .bias(c.flag("bias"))));
  }
  if (variant == "general") {
    return torch::nn::AnyModule(tnn::GeneralAttention(query.size(-1), key.size(-1)));
  }
  FAIL("unknown variant " << variant);
  return {};
}

// Copies the case's parameters into the module by name; every name must match both ways.
std::map<std::string, torch::Tensor> load_params(
    torch::nn::Module& module, const ReferenceCase& c) {
  std::map<std::string, torch::Tensor> by_name;
  for (auto& p : module.named_parameters()) {
    by_name[p.key()] = p.value();
  }
  for (auto& b : module.named_buffers()) {
    by_name[b.key()] = b.value();
  }
  const auto params = c.group("params");
  std::set<std::string> expected, actual;
  for (const auto& kv : params)
    expected.insert(kv.first);
  for (const auto& kv : by_name)
    actual.insert(kv.first);
  CHECK(actual == expected);
  torch::NoGradGuard no_grad;
  for (const auto& [name, value] : params) {
    by_name.at(name).copy_(value);
  }
  return by_name;
}

/// `fused`: the output comes from a call without weights (the fused kernel where the score
/// function has one), the weights from a second call that asks for them, so that the loss, and
/// so the reference gradients, stay those of PyTorch's output and weights.
void check_case(const ReferenceCase& c, WorstError& worst, bool fused) {
  const auto dtype = c.get("query").scalar_type();
  const double tol = torchattn::testing::tolerance(dtype);
  auto query = c.get("query").clone().requires_grad_(true);
  auto key = c.get("key").clone().requires_grad_(true);
  auto value = c.get("value").clone().requires_grad_(true);

  auto module = make_module(c, query, key);
  module.ptr()->to(dtype);
  const auto params = load_params(*module.ptr(), c);

  auto run = [&](bool need_weights) {
    return module.forward<std::tuple<torch::Tensor, torch::Tensor>>(
        query, key, value, c.get_or_undefined("attn_mask"), c.get_or_undefined("key_padding_mask"),
        need_weights, c.flag("is_causal"));
  };
  auto [out, weights] = run(/*need_weights=*/true);
  if (fused) {
    auto [fused_out, no_weights] = run(/*need_weights=*/false);
    CHECK_FALSE(no_weights.defined());
    out = fused_out;
  }
  CHECK_THAT(out, AllClose(c.get("output"), tol, tol));
  CHECK_THAT(weights, AllClose(c.get("weights"), tol, tol));
  worst.note(out, c.get("output"));
  worst.note(weights, c.get("weights"));

  auto loss = (out * c.get("grad_output")).sum() + (weights * c.get("grad_weights")).sum();
  loss.backward();
  // Gradients of the fused path are compared as in the op sweep: relative to each element and
  // to the largest of the query, key and value gradients. Both paths round in float32, the
  // kernel relative to dS·q' and dS·k', which cosine's temperature scales up and its
  // normalisation backward (I - q̂q̂ᵀ)/|q| cancels down (seen under PyTorch 2.6's ATen: 4e-5 on
  // a key-gradient element of 1.85, whose tensor peaks at 2.3).
  double magnitude = 1.0;
  for (const char* g : {"grads.query", "grads.key", "grads.value"}) {
    if (fused && c.get(g).numel() > 0) {
      magnitude = std::max(magnitude, c.get(g).abs().max().item<double>());
    }
  }
  auto grad_close = [&](const torch::Tensor& expected) {
    return AllClose(expected, tol, tol * magnitude);
  };
  CHECK_THAT(query.grad(), grad_close(c.get("grads.query")));
  CHECK_THAT(key.grad(), grad_close(c.get("grads.key")));
  CHECK_THAT(value.grad(), grad_close(c.get("grads.value")));
  worst.note(query.grad(), c.get("grads.query"));
  worst.note(key.grad(), c.get("grads.key"));
  worst.note(value.grad(), c.get("grads.value"));
  for (const auto& [name, expected] : c.group("grads")) {
    if (name == "query" || name == "key" || name == "value") {
      continue;
    }
    INFO("parameter " << name);
    const auto& p = params.at(name);
    CHECK(p.requires_grad());
    CHECK_THAT(p.grad(), grad_close(expected));
    worst.note(p.grad(), expected);
  }
}

void check_variant(const std::string& variant, bool fused = false) {
  const auto& ref = torchattn::testing::reference();
  int n = 0;
  WorstError worst;
  for (const auto& c : ref.cases) {
    if (c.str("variant") != variant) {
      continue;
    }
    ++n;
    INFO(c.name << " (reference by torch " << ref.torch_version << ")");
    try {
      check_case(c, worst, fused);
    } catch (const std::exception& e) {
      FAIL_CHECK("unexpected exception: " << e.what());
    }
  }
  REQUIRE(n >= 18);
  // Figures for humans (ctest -V): how close we are, not only that we are within tolerance.
  std::cout << variant << (fused ? " (output without weights)" : "") << ": " << n
            << " reference cases, worst |diff| float64 " << worst[torch::kDouble] << ", float32 "
            << worst[torch::kFloat] << "\n";
}

} // namespace

TEST_CASE("DotProductAttention matches PyTorch references", "[nn][reference]") {
  check_variant("dot");
}
TEST_CASE("ScaledDotProductAttention matches PyTorch references", "[nn][reference]") {
  check_variant("sdpa");
}
TEST_CASE("CosineAttention matches PyTorch references", "[nn][reference]") {
  check_variant("cosine");
}
TEST_CASE("AdditiveAttention matches PyTorch references", "[nn][reference]") {
  check_variant("additive");
}
TEST_CASE("GeneralAttention matches PyTorch references", "[nn][reference]") {
  check_variant("general");
}

TEST_CASE(
    "the fused path (no weights requested) matches PyTorch references", "[nn][reference][ops]") {
  torchattn::testing::AlwaysFused fused;
  for (const char* variant : {"dot", "sdpa", "cosine"}) {
    DYNAMIC_SECTION(variant) {
      check_variant(variant, /*fused=*/true);
    }
  }
}
