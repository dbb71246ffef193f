// RotaryEmbedding, KVCache and GroupedQueryAttention: the block against a Python reference of
// the Llama/Mistral architecture in float64 (tests/reference/make_gqa_reference.py: outputs and
// every gradient), cached decoding against full recomputation over 100 steps, a batch of rows
// with different lengths, beam reordering, and bad input.

#include <torchattn/torchattn.h>

#include "support/reference.h"
#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

namespace {

namespace F = torchattn::nn::functional;
using Catch::Matchers::ContainsSubstring;
using torchattn::nn::GroupedQueryAttention;
using torchattn::nn::GroupedQueryAttentionOptions;
using torchattn::nn::KVCache;
using torchattn::nn::RotaryEmbeddingOptions;
using torchattn::testing::AllClose;

GroupedQueryAttention module_of(const torchattn::testing::ReferenceCase& c, int64_t embed_dim) {
  RotaryEmbeddingOptions rope;
  rope.rotary_dim(c.integer("rotary_dim"))
      .base(c.real("base"))
      .interleaved(c.flag("interleaved"))
      .scaling(c.str("scaling"))
      .factor(c.real("factor"))
      .low_freq_factor(c.real("low_freq_factor"))
      .high_freq_factor(c.real("high_freq_factor"))
      .original_max_positions(c.integer("original_max_positions"));
  GroupedQueryAttention attn(GroupedQueryAttentionOptions(embed_dim, c.integer("num_heads"))
                                 .num_kv_heads(c.integer("num_kv_heads"))
                                 .head_dim(c.integer("head_dim"))
                                 .bias(c.flag("bias"))
                                 .rope(c.flag("rope"))
                                 .rotary(rope)
                                 .sliding_window(c.integer("sliding_window"))
                                 .is_causal(c.flag("is_causal")));
  attn->to(torch::kDouble);
  torch::NoGradGuard no_grad;
  auto params = attn->named_parameters();
  for (const auto& [name, t] : c.group("params")) {
    REQUIRE(params.contains(name));
    params[name].copy_(t);
  }
  CHECK(params.size() == c.group("params").size());
  return attn;
}

/// A module with random float64 weights.
GroupedQueryAttention random_module(GroupedQueryAttentionOptions options) {
  torch::manual_seed(11);
  GroupedQueryAttention attn(options);
  attn->to(torch::kDouble);
  return attn;
}

} // namespace

TEST_CASE("GroupedQueryAttention matches the Python reference of the Llama block", "[nn][gqa]") {
  const auto& ref = torchattn::testing::reference("gqa.pt");
  REQUIRE(ref.cases.size() == 7);
  for (const auto& c : ref.cases) {
    INFO(c.name);
    auto x = c.get("x").clone().requires_grad_();
    auto attn = module_of(c, x.size(2));
    auto out = attn(x, c.get_or_undefined("key_padding_mask"));
    CHECK_THAT(out.detach(), AllClose(c.get("output"), 1e-10, 1e-10));
    std::vector<torch::Tensor> inputs{x};
    std::vector<std::string> names{"x"};
    for (const auto& item : attn->named_parameters()) {
      inputs.push_back(item.value());
      names.push_back(item.key());
    }
    auto grads = torch::autograd::grad({out}, inputs, {c.get("grad_out")});
    for (size_t i = 0; i < grads.size(); ++i) {
      INFO("gradient of " << names[i]);
      CHECK_THAT(grads[i], AllClose(c.get("grads." + names[i]), 1e-10, 1e-10));
    }
  }
}

TEST_CASE("rotary embeddings keep the formula's invariants", "[nn][gqa][rope]") {
  torch::manual_seed(2);
  for (bool interleaved : {false, true}) {
    torchattn::nn::RotaryEmbedding rope(RotaryEmbeddingOptions(8).interleaved(interleaved));
    auto q = torch::randn({1, 1, 1, 8}, torch::kDouble),
         k = torch::randn({1, 1, 1, 8}, torch::kDouble);
    // Position 0 is the identity; a rotation keeps the norm.
    CHECK_THAT(rope(q, torch::tensor({0}, torch::kLong)), AllClose(q, 0, 0));
    auto r = rope(q, torch::tensor({5}, torch::kLong));
    CHECK(std::abs(r.norm().item<double>() - q.norm().item<double>()) < 1e-12);
    // The score depends only on the distance m - n.
    auto score = [&](int64_t m, int64_t n) {
      return (rope(q, torch::tensor({m}, torch::kLong)) * rope(k, torch::tensor({n}, torch::kLong)))
          .sum()
          .item<double>();
    };
    CHECK(std::abs(score(7, 3) - score(104, 100)) < 1e-10);
    // Past the cache's first 2048 positions it grows and stays exact.
    CHECK(std::abs(score(3000, 2996) - score(4, 0)) < 1e-9);
    // Pair 0 by hand: angle m * base^0 = m.
    auto x = torch::zeros({1, 1, 1, 8}, torch::kDouble);
    x[0][0][0][0] = 1.0;
    auto y = rope(x, torch::tensor({2}, torch::kLong));
    const int64_t partner = interleaved ? 1 : 4;
    CHECK(std::abs(y[0][0][0][0].item<double>() - std::cos(2.0)) < 1e-15);
    CHECK(std::abs(y[0][0][0][partner].item<double>() - std::sin(2.0)) < 1e-15);
  }
  // Partial rotary: features past rotary_dim pass through.
  torchattn::nn::RotaryEmbedding partial(RotaryEmbeddingOptions(8).rotary_dim(4));
  auto x = torch::randn({2, 3, 5, 8}, torch::kDouble);
  CHECK(torch::equal(partial(x).narrow(-1, 4, 4), x.narrow(-1, 4, 4)));
  // Gradients flow (ATen ops), by gradcheck.
  auto xg = torch::randn({1, 2, 3, 8}, torch::kDouble).requires_grad_();
  auto [cos, sin] =
      F::rotary_cos_sin(torch::arange(3), F::rotary_inv_freq(RotaryEmbeddingOptions(8)));
  auto out = F::apply_rotary_embedding(xg, cos, sin, false);
  auto g = torch::autograd::grad({out.pow(2).sum()}, {xg})[0];
  CHECK_THAT(g, AllClose(2 * xg.detach(), 1e-12, 1e-12)); // a rotation: |R x|² = |x|²
}

TEST_CASE("cached decoding equals full recomputation over 100 steps", "[nn][gqa][cache]") {
  for (int64_t window : {-1, 16}) {
    auto attn =
        random_module(GroupedQueryAttentionOptions(32, 8).num_kv_heads(2).sliding_window(window));
    torch::NoGradGuard no_grad;
    auto x = torch::randn({2, 105, 32}, torch::kDouble);
    auto full = attn(x);
    KVCache cache(/*capacity=*/8); // grows several times on the way
    auto prompt = attn->forward_cached(x.narrow(1, 0, 5), cache);
    CHECK_THAT(prompt, AllClose(full.narrow(1, 0, 5), 1e-10, 1e-10));
    double worst = 0;
    for (int64_t t = 5; t < 105; ++t) {
      auto y = attn->forward_cached(x.narrow(1, t, 1), cache);
      worst = std::max(worst, (y - full.narrow(1, t, 1)).abs().max().item<double>());
    }
    INFO("window " << window);
    CHECK(worst < 1e-10);
    CHECK(cache.max_length() == 105);
    CHECK(cache.capacity() >= 105);
  }
}

TEST_CASE("a batch of rows with different lengths decodes as each row alone", "[nn][gqa][cache]") {
  auto attn = random_module(GroupedQueryAttentionOptions(24, 4).num_kv_heads(1));
  torch::NoGradGuard no_grad;
  const std::vector<int64_t> prompt_lengths{3, 7, 1};
  auto x = torch::randn({3, 7 + 20, 24}, torch::kDouble);
  KVCache cache;
  // Right-padded prompts: row b's first prompt_lengths[b] tokens are real.
  attn->forward_cached(x.narrow(1, 0, 7), cache, torch::tensor(prompt_lengths, torch::kLong));
  CHECK(cache.row_lengths() == prompt_lengths);
  std::vector<std::vector<torch::Tensor>> steps(3);
  for (int64_t t = 0; t < 20; ++t) {
    // Row b's token t follows its own prompt.
    std::vector<torch::Tensor> tokens;
    for (int64_t b = 0; b < 3; ++b) {
      tokens.push_back(x[b].narrow(0, prompt_lengths[b] + t, 1));
    }
    auto y = attn->forward_cached(torch::stack(tokens), cache);
    for (int64_t b = 0; b < 3; ++b) {
      steps[b].push_back(y[b]);
    }
  }
  for (int64_t b = 0; b < 3; ++b) {
    auto alone = attn(x[b].narrow(0, 0, prompt_lengths[b] + 20).unsqueeze(0))[0];
    CHECK_THAT(
        torch::cat(steps[b]), AllClose(alone.narrow(0, prompt_lengths[b], 20), 1e-10, 1e-10));
  }
}

TEST_CASE("KVCache reorders rows for beam search and grows without loss", "[nn][gqa][cache]") {
  KVCache cache(2);
  auto k = torch::arange(3 * 2 * 4 * 2, torch::kDouble).view({3, 2, 4, 2});
  cache.append(k, -k, torch::tensor({4, 2, 3}, torch::kLong));
  CHECK(cache.capacity() >= 4);
  cache.reorder(torch::tensor({2, 2, 0}, torch::kLong));
  CHECK(cache.row_lengths() == std::vector<int64_t>{3, 3, 4});
  CHECK(torch::equal(cache.key()[0].narrow(1, 0, 3), k[2].narrow(1, 0, 3)));
  CHECK(torch::equal(cache.key()[1].narrow(1, 0, 3), k[2].narrow(1, 0, 3)));
  CHECK(torch::equal(cache.value()[2], -k[0]));
  // Expanding 3 rows into 6 beams.
  cache.reorder(torch::tensor({0, 0, 1, 1, 2, 2}, torch::kLong));
  CHECK(cache.batch_size() == 6);
  CHECK(torch::equal(cache.key()[5], k[0]));
  CHECK_THROWS_WITH(
      cache.reorder(torch::tensor({6}, torch::kLong)),
      ContainsSubstring("KVCache::reorder: rows has 6, expected rows in [0, 6)"));
  CHECK_THROWS_WITH(
      cache.append(k, k), ContainsSubstring("KVCache::append: key has shape [3, 2, 4, 2]"));
  CHECK_THROWS_WITH(
      cache.append(
          torch::zeros({6, 2, 1, 2}, torch::kDouble), torch::zeros({6, 2, 1, 2}, torch::kDouble),
          torch::tensor({2, 0, 0, 0, 0, 0}, torch::kLong)),
      ContainsSubstring("counts has 2, expected counts in [0, 1]"));
}

TEST_CASE(
    "GroupedQueryAttention and RotaryEmbedding reject bad options and input", "[nn][gqa][errors]") {
  CHECK_THROWS_WITH(
      GroupedQueryAttention(GroupedQueryAttentionOptions(32, 8).num_kv_heads(3)),
      ContainsSubstring("num_kv_heads is 3, expected a divisor of num_heads = 8"));
  CHECK_THROWS_WITH(
      GroupedQueryAttention(GroupedQueryAttentionOptions(30, 8)),
      ContainsSubstring("embed_dim 30 is not divisible by num_heads 8"));
  CHECK_THROWS_WITH(
      torchattn::nn::RotaryEmbedding(RotaryEmbeddingOptions(8).rotary_dim(5)),
      ContainsSubstring("rotary_dim is 5, expected an even count in (0, head_dim = 8]"));
  CHECK_THROWS_WITH(
      torchattn::nn::RotaryEmbedding(RotaryEmbeddingOptions(8).scaling("yarn")),
      ContainsSubstring(
          "scaling is \"yarn\", expected \"none\", \"linear\", \"ntk\" or \"llama3\""));
  GroupedQueryAttention attn(GroupedQueryAttentionOptions(32, 8).num_kv_heads(2));
  CHECK_THROWS_WITH(
      attn(torch::randn({2, 5, 16})),
      ContainsSubstring("x has shape [2, 5, 16], expected [B, L, 32]"));
  CHECK_THROWS_WITH(
      attn(torch::randn({2, 5, 32}), torch::zeros({2, 4}, torch::kBool)),
      ContainsSubstring("key_padding_mask has shape [2, 4] Bool, expected Bool [2, 5]"));
  std::ostringstream s;
  s << *attn;
  CHECK(
      s.str() ==
      "torchattn::nn::GroupedQueryAttention(embed_dim=32, num_heads=8, num_kv_heads=2, "
      "head_dim=4, bias=false, rope=true, sliding_window=-1, is_causal=true)(\n"
      "  (q_proj): torch::nn::Linear(in_features=32, out_features=32, bias=false)\n"
      "  (k_proj): torch::nn::Linear(in_features=32, out_features=8, bias=false)\n"
      "  (v_proj): torch::nn::Linear(in_features=32, out_features=8, bias=false)\n"
      "  (o_proj): torch::nn::Linear(in_features=32, out_features=32, bias=false)\n"
      "  (rotary_emb): torchattn::nn::RotaryEmbedding(head_dim=4, rotary_dim=4, base=10000, "
      "interleaved=false, scaling=none)\n)");
}
