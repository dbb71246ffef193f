// CPU autocast (torchattn::AutocastCpu, LibTorch's at::autocast): torchattn's attention ops
// are lower-precision ops, as PyTorch's scaled_dot_product_attention is. Under autocast their
// float32 inputs (and floating masks and biases) are cast to the autocast dtype; the result
// must equal the op called on those casts outside autocast, bit for bit. float64 is left
// alone, and so is everything outside the guard. A module (MultiheadAttention with a float
// mask) trains under autocast: bfloat16 output, float32 gradients of its float32 parameters.

#include <torchattn/torchattn.h>

#include <catch2/catch_test_macros.hpp>

namespace {

namespace ops = torchattn::ops;
using torchattn::AutocastCpu;

torch::Tensor bf(const torch::Tensor& t) {
  return t.to(torch::kBFloat16);
}

} // namespace

TEST_CASE("AutocastCpu turns CPU autocast on for its scope and restores it", "[autocast]") {
  REQUIRE_FALSE(AutocastCpu::is_enabled());
  {
    AutocastCpu outer(torch::kBFloat16);
    CHECK(AutocastCpu::is_enabled());
    CHECK(AutocastCpu::get_dtype() == torch::kBFloat16);
    {
      AutocastCpu off(torch::kBFloat16, /*enabled=*/false);
      CHECK_FALSE(AutocastCpu::is_enabled());
    }
    CHECK(AutocastCpu::is_enabled());
  }
  CHECK_FALSE(AutocastCpu::is_enabled());
}

TEST_CASE("scaled_dot_product_attention under autocast runs in bfloat16", "[autocast]") {
  torch::manual_seed(0);
  const auto q = torch::randn({2, 3, 17, 16}), k = torch::randn({2, 3, 23, 16}),
             v = torch::randn({2, 3, 23, 8}), mask = torch::randn({17, 23});
  torch::Tensor out, out64;
  {
    AutocastCpu autocast;
    out = ops::scaled_dot_product_attention(q, k, v, mask, 0.0, false, c10::nullopt);
    out64 = ops::scaled_dot_product_attention(
        q.to(torch::kDouble), k.to(torch::kDouble), v.to(torch::kDouble), mask.to(torch::kDouble),
        0.0, false, c10::nullopt);
  }
  REQUIRE(out.scalar_type() == torch::kBFloat16);
  CHECK(torch::equal(
      out, ops::scaled_dot_product_attention(bf(q), bf(k), bf(v), bf(mask), 0.0, false, {})));
  CHECK(out64.scalar_type() == torch::kDouble);
  CHECK(
      ops::scaled_dot_product_attention(q, k, v, mask, 0.0, false, {}).scalar_type() ==
      torch::kFloat);
  // A boolean mask stays boolean.
  torch::Tensor with_bool;
  {
    AutocastCpu autocast;
    with_bool = ops::scaled_dot_product_attention(q, k, v, mask.gt(-1), 0.0, true, {});
  }
  CHECK(torch::equal(
      with_bool,
      ops::scaled_dot_product_attention(bf(q), bf(k), bf(v), mask.gt(-1), 0.0, true, {})));
}

TEST_CASE("flex_attention under autocast casts its floating modifiers", "[autocast]") {
  torch::manual_seed(1);
  const auto q = torch::randn({1, 4, 9, 16}), k = torch::randn({1, 2, 12, 16}),
             v = torch::randn({1, 2, 12, 16}), mask = torch::randn({9, 12}),
             slopes = torch::rand({4});
  auto call = [&](const torch::Tensor& q_, const torch::Tensor& k_, const torch::Tensor& v_,
                  const torch::Tensor& mask_, const torch::Tensor& slopes_) {
    return ops::flex_attention(
        q_, k_, v_, mask_, c10::nullopt, "top_left", 5, -1, c10::nullopt, c10::nullopt,
        c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt, 30.0, slopes_, c10::nullopt,
        c10::nullopt, c10::nullopt, /*enable_gqa=*/true);
  };
  torch::Tensor out, lse;
  {
    AutocastCpu autocast;
    std::tie(out, lse) = call(q, k, v, mask, slopes);
  }
  REQUIRE(out.scalar_type() == torch::kBFloat16);
  CHECK(lse.scalar_type() == torch::kFloat);
  const auto [want, want_lse] = call(bf(q), bf(k), bf(v), bf(mask), bf(slopes));
  CHECK(torch::equal(out, want));
  CHECK(torch::equal(lse, want_lse));
}

TEST_CASE("decode_attention and additive_attention_scores under autocast", "[autocast]") {
  torch::manual_seed(2);
  const auto q = torch::randn({2, 8, 1, 32}), k = torch::randn({2, 2, 40, 32}),
             v = torch::randn({2, 2, 40, 32});
  const auto lengths = torch::tensor({40, 17}, torch::kLong);
  torch::Tensor out, scores;
  const auto aq = torch::randn({3, 5, 8}), ak = torch::randn({3, 7, 8}), w = torch::randn({8});
  {
    AutocastCpu autocast;
    out = std::get<0>(ops::decode_attention(q, k, v, lengths, {}, true, -1, {}));
    scores = ops::additive_attention_scores(aq, ak, w);
  }
  REQUIRE(out.scalar_type() == torch::kBFloat16);
  CHECK(torch::equal(
      out, std::get<0>(ops::decode_attention(bf(q), bf(k), bf(v), lengths, {}, true, -1, {}))));
  REQUIRE(scores.scalar_type() == torch::kBFloat16);
  CHECK(torch::equal(scores, ops::additive_attention_scores(bf(aq), bf(ak), bf(w))));
}

TEST_CASE("MultiheadAttention trains under autocast with float32 parameters", "[autocast]") {
  torch::manual_seed(3);
  torchattn::nn::MultiheadAttention mha(
      torchattn::nn::MultiheadAttentionOptions(64, 4).batch_first(true));
  const auto x = torch::randn({2, 10, 64});
  // A float (additive) mask: without the op's autocast kernel it reaches the bfloat16 kernel
  // in float32, and the dtype check refuses it.
  const auto mask = torch::randn({10, 10});
  auto grads = [&](bool autocast) {
    mha->zero_grad();
    torch::Tensor out;
    {
      AutocastCpu guard(torch::kBFloat16, autocast);
      out = std::get<0>(mha->forward(x, x, x, {}, /*need_weights=*/false, mask));
    }
    CHECK(out.scalar_type() == (autocast ? torch::kBFloat16 : torch::kFloat));
    out.to(torch::kFloat).square().sum().backward();
    std::vector<torch::Tensor> g;
    for (const auto& p : mha->parameters())
      g.push_back(p.grad().clone());
    return g;
  };
  const auto g32 = grads(false), g16 = grads(true);
  REQUIRE(g32.size() == g16.size());
  for (size_t i = 0; i < g32.size(); ++i) {
    INFO("parameter " << i);
    CHECK(g16[i].scalar_type() == torch::kFloat);
    // bfloat16 has 8 significant bits: gradients within a few percent of the float32 ones.
    const double err = (g16[i] - g32[i]).norm().item<double>();
    CHECK(err <= 0.05 * g32[i].norm().item<double>());
  }
}

TEST_CASE("graph_attention under autocast casts its floating inputs, not the graph", "[autocast]") {
  torch::manual_seed(3);
  const auto q = torch::randn({6, 2, 4}), k = torch::randn({6, 2, 4}), v = torch::randn({6, 2, 5});
  const auto w = torch::randn({2, 4}), es = torch::rand({9, 2});
  const auto row_ptr = torch::tensor({0, 2, 3, 3, 5, 8, 9}, torch::kLong);
  const auto col = torch::tensor({0, 5, 1, 2, 3, 0, 1, 4, 5}, torch::kLong);
  auto call = [&](const torch::Tensor& q_, const torch::Tensor& k_, const torch::Tensor& v_,
                  const torch::Tensor& w_, const torch::Tensor& es_) {
    return ops::graph_attention(
        q_, k_, v_, row_ptr, col, "additive", w_, 0.2, c10::nullopt, es_, true);
  };
  torch::Tensor out, lse, weights;
  {
    AutocastCpu autocast;
    std::tie(out, lse, weights) = call(q, k, v, w, es);
  }
  REQUIRE(out.scalar_type() == torch::kBFloat16);
  CHECK(lse.scalar_type() == torch::kFloat);
  const auto [want, want_lse, want_weights] = call(bf(q), bf(k), bf(v), bf(w), bf(es));
  CHECK(torch::equal(out, want));
  CHECK(torch::equal(lse, want_lse));
  CHECK(torch::equal(weights, want_weights));
}
