// MultiheadAttention against torch.nn.MultiheadAttention (tests/reference/multihead_attention.pt)
// and against LibTorch's torch::nn::MultiheadAttention, plus what PyTorch gets wrong.

#include <torchattn/torchattn.h>

#include "support/modules.h"
#include "support/reference.h"
#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <iostream>
#include <set>

namespace {

namespace tnn = torchattn::nn;
using torchattn::testing::AllClose;
using torchattn::testing::ReferenceCase;
constexpr double kInf = std::numeric_limits<double>::infinity();

tnn::MultiheadAttention from_case(const ReferenceCase& c) {
  return tnn::MultiheadAttention(
      tnn::MultiheadAttentionOptions(c.integer("embed_dim"), c.integer("num_heads"))
          .kdim(c.integer("kdim"))
          .vdim(c.integer("vdim"))
          .bias(c.flag("bias"))
          .add_bias_kv(c.flag("add_bias_kv"))
          .add_zero_attn(c.flag("add_zero_attn"))
          .batch_first(c.flag("batch_first")));
}

} // namespace

namespace {

/// One case of a reference file made by torch.nn.MultiheadAttention: parameters copied by
/// name, output, weights and every gradient compared. `is_causal` cases (PyTorch 2.x) passed
/// PyTorch the causal mask with the hint; ours gets only is_causal.
void check_mha_case(
    const ReferenceCase& c, const std::string& torch_version, torchattn::testing::WorstError& worst,
    bool is_causal) {
  INFO(c.name << " (reference by torch " << torch_version << ")");
  const auto dtype = c.get("query").scalar_type();
  const double tol = torchattn::testing::tolerance(dtype);
  auto mha = from_case(c);
  mha->to(dtype);
  // Parameters by state-dict name, both ways.
  auto params = mha->named_parameters();
  std::set<std::string> ours, theirs;
  for (const auto& p : params)
    ours.insert(p.key());
  for (const auto& kv : c.group("params"))
    theirs.insert(kv.first);
  CHECK(ours == theirs);
  {
    torch::NoGradGuard no_grad;
    for (const auto& [name, value] : c.group("params")) {
      if (params.contains(name))
        params[name].copy_(value);
    }
  }
  const bool self = c.flag("self_attention");
  auto query = c.get("query").clone().requires_grad_(true);
  auto key = self ? query : c.get("key").clone().requires_grad_(true);
  auto value = self ? query : c.get("value").clone().requires_grad_(true);
  auto [out, weights] = mha->forward(
      query, key, value, c.get_or_undefined("key_padding_mask"), c.flag("need_weights"),
      c.get_or_undefined("attn_mask"), c.flag("average"), is_causal);
  CHECK_THAT(out, AllClose(c.get("output"), tol, tol));
  worst.note(out, c.get("output"));
  auto loss = (out * c.get("grad_output")).sum();
  if (c.flag("need_weights")) {
    CHECK_THAT(weights, AllClose(c.get("weights"), tol, tol));
    worst.note(weights, c.get("weights"));
    loss = loss + (weights * c.get("grad_weights")).sum();
  } else {
    CHECK_FALSE(weights.defined());
  }
  loss.backward();
  for (const auto& [name, expected] : c.group("grads")) {
    INFO("gradient of " << name);
    torch::Tensor actual;
    if (name == "query")
      actual = query.grad();
    else if (name == "key")
      actual = key.grad();
    else if (name == "value")
      actual = value.grad();
    else if (name.rfind("params.", 0) == 0 && params.contains(name.substr(7)))
      actual = params[name.substr(7)].grad();
    CHECK_THAT(actual, AllClose(expected, tol, tol));
    worst.note(actual, expected);
  }
}

} // namespace

TEST_CASE("MultiheadAttention matches torch.nn.MultiheadAttention", "[nn][mha][reference]") {
  const auto& ref = torchattn::testing::reference("multihead_attention.pt");
  torchattn::testing::WorstError worst;
  int n = 0;
  for (const auto& c : ref.cases) {
    ++n;
    check_mha_case(c, ref.torch_version, worst, /*is_causal=*/false);
  }
  {
    // Once more with every no-weights case on the fused kernel, small as the shapes are.
    torchattn::testing::AlwaysFused fused;
    for (const auto& c : ref.cases)
      check_mha_case(c, ref.torch_version, worst, /*is_causal=*/false);
  }
  CHECK(n >= 72);
  std::cout << "MultiheadAttention: " << n << " reference cases from torch " << ref.torch_version
            << ", worst |diff| float64 " << worst[torch::kDouble] << ", float32 "
            << worst[torch::kFloat] << "\n";
}

TEST_CASE(
    "MultiheadAttention is_causal and the scale of SDPA match PyTorch 2.x",
    "[nn][mha][reference]") {
  torchattn::testing::AlwaysFused fused; // the SDPA cases test the functional's fused path
  // tests/reference/torch2.pt, made by PyTorch 2.6 (the trixie chroot): semantics 1.13 lacks.
  const auto& ref = torchattn::testing::reference("torch2.pt");
  REQUIRE(ref.torch_version.rfind("2.", 0) == 0);
  torchattn::testing::WorstError worst;
  int mha = 0, sdpa = 0;
  for (const auto& c : ref.cases) {
    if (c.name.rfind("mha_causal", 0) == 0) {
      ++mha;
      REQUIRE(c.flag("is_causal"));
      check_mha_case(c, ref.torch_version, worst, /*is_causal=*/true);
      continue;
    }
    ++sdpa;
    INFO(c.name << " (reference by torch " << ref.torch_version << ")");
    const auto dtype = c.get("query").scalar_type();
    const double tol = torchattn::testing::tolerance(dtype);
    auto q = c.get("query").clone().requires_grad_(true);
    auto k = c.get("key").clone().requires_grad_(true);
    auto v = c.get("value").clone().requires_grad_(true);
    const auto mask = c.get_or_undefined("attn_mask");
    namespace F = torchattn::nn::functional;
    // The functional (fused path, no weights) and the op itself.
    auto [out, w] = F::scaled_dot_product_attention(
        q, k, v,
        F::ScaledDotProductAttentionFuncOptions()
            .attn_mask(mask)
            .is_causal(c.flag("is_causal"))
            .scale(c.real("scale")));
    auto op_out = torchattn::ops::scaled_dot_product_attention(
        q, k, v, mask.defined() ? c10::optional<torch::Tensor>(mask) : c10::nullopt, 0.0,
        c.flag("is_causal"), c.real("scale"));
    CHECK_THAT(out, AllClose(c.get("output"), tol, tol));
    CHECK_THAT(op_out, AllClose(c.get("output"), tol, tol));
    worst.note(out, c.get("output"));
    (out * c.get("grad_output")).sum().backward();
    CHECK_THAT(q.grad(), AllClose(c.get("grads.query"), tol, tol));
    CHECK_THAT(k.grad(), AllClose(c.get("grads.key"), tol, tol));
    CHECK_THAT(v.grad(), AllClose(c.get("grads.value"), tol, tol));
    worst.note(q.grad(), c.get("grads.query"));
    worst.note(k.grad(), c.get("grads.key"));
    worst.note(v.grad(), c.get("grads.value"));
  }
  CHECK(mha >= 10);
  CHECK(sdpa >= 8);
  std::cout << "PyTorch 2.x semantics: " << mha << " MultiheadAttention is_causal and " << sdpa
            << " scaled_dot_product_attention(scale=) cases from torch " << ref.torch_version
            << ", worst |diff| float64 " << worst[torch::kDouble] << ", float32 "
            << worst[torch::kFloat] << "\n";
}

TEST_CASE(
    "MultiheadAttention agrees with LibTorch's where LibTorch is right, and masks booleans where "
    "it is not",
    "[nn][mha]") {
  torch::manual_seed(11);
  const int64_t E = 8, H = 2, L = 4, S = 5, B = 3;
  tnn::MultiheadAttention ours(E, H);
  torch::nn::MultiheadAttention theirs(E, H);
  {
    torch::NoGradGuard no_grad;
    auto dst = theirs->named_parameters();
    for (const auto& p : ours->named_parameters()) {
      p.value().normal_(0, 0.3);
      dst[p.key()].copy_(p.value()); // the same state-dict names
    }
  }
  auto q = torch::randn({L, B, E}), k = torch::randn({S, B, E}), v = torch::randn({S, B, E});
  auto float_mask = torch::randn({L, S});
  auto [a, wa] = ours(q, k, v, torch::Tensor(), true, float_mask);
  auto [b, wb] = theirs(q, k, v, torch::Tensor(), true, float_mask);
  CHECK_THAT(a, AllClose(b, 1e-5, 1e-6));
  CHECK_THAT(wa, AllClose(wb, 1e-5, 1e-6));

  // A boolean mask: true = not allowed. Ours equals the -inf float mask; LibTorch 1.x adds
  // the booleans as 0/1 (pytorch/pytorch#80494), so its result differs.
  auto bool_mask = torch::rand({L, S}) > 0.5;
  bool_mask.select(1, 0).fill_(false);
  auto as_float = torch::zeros({L, S}).masked_fill(bool_mask, -kInf);
  auto [c, wc] = ours(q, k, v, torch::Tensor(), true, bool_mask);
  auto [d, wd] = ours(q, k, v, torch::Tensor(), true, as_float);
  CHECK_THAT(c, AllClose(d, 1e-6, 1e-6));
  CHECK(wc.masked_select(bool_mask.unsqueeze(0).expand_as(wc)).abs().max().item<double>() == 0.0);
  try {
    auto [e, we] = theirs(q, k, v, torch::Tensor(), true, bool_mask);
    CHECK_FALSE(torch::allclose(e, c, 1e-4, 1e-5));
    CHECK(we.masked_select(bool_mask.unsqueeze(0).expand_as(we)).abs().max().item<double>() > 0.0);
  } catch (const c10::Error&) {
    SUCCEED("this LibTorch rejects boolean masks instead of masking them");
  }
}

TEST_CASE("MultiheadAttention gives zeros, not NaN, for fully masked rows", "[nn][mha][masks]") {
  torch::manual_seed(12);
  tnn::MultiheadAttention mha(tnn::MultiheadAttentionOptions(8, 2).batch_first(true));
  auto x = torch::randn({2, 3, 8}, torch::requires_grad());
  auto kpm = torch::zeros({2, 3}, torch::kBool);
  kpm[1].fill_(true); // sequence 1 is all padding
  auto [out, w] = mha->forward(x, x, x, kpm);
  REQUIRE(torch::isfinite(out).all().item<bool>());
  CHECK(w[1].abs().max().item<double>() == 0.0);
  // The output of a fully masked query is out_proj(0) = out_proj.bias.
  CHECK_THAT(out[1], AllClose(mha->out_proj->bias.expand({3, 8}), 0, 0));
  (out.sum() + w.sum()).backward();
  CHECK(torch::isfinite(x.grad()).all().item<bool>());
  for (const auto& p : mha->parameters()) {
    CHECK(torch::isfinite(p.grad()).all().item<bool>());
  }
}

TEST_CASE("MultiheadAttention is_causal equals an explicit causal mask", "[nn][mha][masks]") {
  torch::manual_seed(13);
  for (bool bias_kv : {false, true}) {
    DYNAMIC_SECTION("add_bias_kv " << bias_kv) {
      tnn::MultiheadAttention mha(
          tnn::MultiheadAttentionOptions(8, 2).add_bias_kv(bias_kv).add_zero_attn(bias_kv));
      auto x = torch::randn({5, 2, 8});
      auto causal = torch::ones({5, 5}, torch::kBool).triu(1);
      auto [a, wa] = mha->forward(x, x, x, {}, true, {}, true, /*is_causal=*/true);
      auto [b, wb] = mha->forward(x, x, x, {}, true, causal);
      CHECK_THAT(a, AllClose(b, 0, 0));
      CHECK_THAT(wa, AllClose(wb, 0, 0));
    }
  }
}

TEST_CASE("MultiheadAttention score options and state dict", "[nn][mha]") {
  auto names = [](const torch::nn::Module& m) {
    std::vector<std::string> out;
    for (const auto& p : m.named_parameters())
      out.push_back(p.key());
    return out;
  };
  CHECK(
      names(*tnn::MultiheadAttention(8, 2)) ==
      std::vector<std::string>{
          "in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"});
  CHECK(
      names(*tnn::MultiheadAttention(
          tnn::MultiheadAttentionOptions(8, 2).kdim(4).vdim(6).bias(false).add_bias_kv(true))) ==
      std::vector<std::string>{
          "q_proj_weight", "k_proj_weight", "v_proj_weight", "bias_k", "bias_v",
          "out_proj.weight"});
  tnn::MultiheadAttention cosine(
      tnn::MultiheadAttentionOptions(8, 2).score(tnn::AttentionScore::Cosine));
  CHECK(cosine->named_parameters().contains("logit_scale"));
  auto x = torch::randn({3, 2, 8});
  for (auto score : {tnn::AttentionScore::DotProduct, tnn::AttentionScore::Cosine}) {
    tnn::MultiheadAttention mha(tnn::MultiheadAttentionOptions(8, 2).score(score));
    auto [out, w] = mha(x, x, x);
    CHECK(out.sizes() == x.sizes());
    CHECK_THAT(w.sum(-1), AllClose(torch::ones({2, 3}), 1e-5, 1e-6));
  }
  std::ostringstream s;
  cosine->pretty_print(s);
  CHECK(
      s.str() ==
      "torchattn::nn::MultiheadAttention(embed_dim=8, num_heads=2, dropout=0, bias=true, "
      "add_bias_kv=false, add_zero_attn=false, kdim=8, vdim=8, batch_first=false, score=Cosine)");
}

TEST_CASE("MultiheadAttention validates its options and inputs", "[nn][mha][errors]") {
  using Catch::Matchers::ContainsSubstring;
  CHECK_THROWS_WITH(
      tnn::MultiheadAttention(10, 3),
      ContainsSubstring(
          "torchattn::nn::MultiheadAttention: embed_dim (10) must be divisible by num_heads (3)"));
  CHECK_THROWS_WITH(
      tnn::MultiheadAttention(0, 1), ContainsSubstring("embed_dim is 0, expected > 0"));
  tnn::MultiheadAttention mha(tnn::MultiheadAttentionOptions(8, 2).batch_first(true));
  auto x = torch::randn({2, 3, 8});
  CHECK_THROWS_WITH(
      mha(torch::randn({2, 3, 4, 8}), x, x),
      ContainsSubstring("MultiheadAttention: query has 4 dims [2, 3, 4, 8], expected 3 [B, L, E] "
                        "or 2 [L, E] (unbatched)"));
  CHECK_THROWS_WITH(
      mha(torch::randn({2, 3, 7}), x, x),
      ContainsSubstring(
          "MultiheadAttention: query has 7 features (shape [2, 3, 7]), expected embed_dim 8"));
  CHECK_THROWS_WITH(
      mha(x, torch::randn({3, 3, 8}), torch::randn({3, 3, 8})),
      ContainsSubstring("MultiheadAttention: key has batch 3 (shape [3, 3, 8]), expected 2 like "
                        "query [2, 3, 8]"));
  CHECK_THROWS_WITH(
      mha->forward(x, x, x, torch::zeros({2, 4}, torch::kBool)),
      ContainsSubstring(
          "MultiheadAttention: key_padding_mask has shape [2, 4], expected [2, 3] [B, S]"));
  CHECK_THROWS_WITH(
      mha->forward(x, x, x, {}, true, torch::zeros({3, 4}, torch::kBool)),
      ContainsSubstring("MultiheadAttention: attn_mask has shape [3, 4], expected [3, 3] [L, S] or "
                        "[4, 3, 3] [B*num_heads, L, S]"));
  CHECK_THROWS_WITH(
      mha->forward(x, x, x, {}, true, torch::zeros({3, 3}, torch::kInt)),
      ContainsSubstring("MultiheadAttention: attn_mask has dtype Int, expected Bool or Float"));
  auto xd = x.to(torch::kDouble);
  CHECK_THROWS_WITH(
      mha(xd, xd, xd),
      ContainsSubstring(
          "MultiheadAttention: query has dtype Double, expected Float like the module's parameters "
          "(convert the input, or the module with ->to(Double))"));
}

TEST_CASE(
    "the key/value cache appends in place and reorders beams like index_select",
    "[nn][mha][cache]") {
  torch::manual_seed(15);
  tnn::MultiheadAttention attn(tnn::MultiheadAttentionOptions(16, 4).batch_first(true));
  attn->eval();
  torch::NoGradGuard no_grad;
  auto x = torch::randn({3, 12, 16});
  tnn::MultiheadAttentionCache cache;
  for (int64_t t = 0; t < 6; ++t) {
    attn->forward_step(x.slice(1, t, t + 1), cache);
  }
  // The steps appended into one buffer: key and value view it, no copy per step.
  CHECK(cache.buffer.max_length() == 6);
  CHECK(cache.key.data_ptr() == cache.buffer.key().data_ptr());
  // Beam search: the same rows as index_select on a cache set by hand.
  auto rows = torch::tensor({2, 0, 0}, torch::kLong);
  tnn::MultiheadAttentionCache by_hand{
      cache.key.index_select(0, rows).clone(), cache.value.index_select(0, rows).clone()};
  cache.reorder(rows);
  CHECK(torch::equal(cache.key, by_hand.key));
  for (int64_t t = 6; t < 12; ++t) {
    auto [a, wa] = attn->forward_step(x.slice(1, t, t + 1), cache);
    auto [b, wb] = attn->forward_step(x.slice(1, t, t + 1), by_hand);
    CHECK(torch::equal(a, b));
  }
  CHECK(cache.size() == 12);
  CHECK(by_hand.size() == 12);
}

TEST_CASE("the key/value cache decodes like full recomputation over 50 steps", "[nn][mha][cache]") {
  torch::manual_seed(14);
  const int64_t B = 2, E = 16, H = 4, steps = 50, S = 7;
  for (bool extras : {false, true}) {
    DYNAMIC_SECTION((extras ? "with add_bias_kv and add_zero_attn" : "plain")) {
      auto opts =
          tnn::MultiheadAttentionOptions(E, H).batch_first(true).add_bias_kv(extras).add_zero_attn(
              extras);
      tnn::MultiheadAttention self_attn(opts);
      tnn::MultiheadAttention cross(
          tnn::MultiheadAttentionOptions(E, H).batch_first(true).kdim(6).vdim(5));
      self_attn->eval();
      cross->eval();
      torch::NoGradGuard no_grad;
      auto x = torch::randn({B, steps, E});
      auto memory_k = torch::randn({B, S, 6}), memory_v = torch::randn({B, S, 5});
      auto src_padding = torch::zeros({B, S}, torch::kBool);
      src_padding[1].slice(0, 4).fill_(true);

      auto [full_self, full_w] =
          self_attn->forward(x, x, x, {}, true, {}, true, /*is_causal=*/true);
      auto [full_cross, full_cw] = cross->forward(full_self, memory_k, memory_v, src_padding);

      tnn::MultiheadAttentionCache cache;
      auto memory = cross->project_memory(memory_k, memory_v);
      std::vector<torch::Tensor> self_steps, cross_steps;
      for (int64_t t = 0; t < steps; ++t) {
        auto [h, w] = self_attn->forward_step(x.slice(1, t, t + 1), cache);
        auto [c, cw] = cross->forward_step(h, memory, src_padding);
        self_steps.push_back(h);
        cross_steps.push_back(c);
      }
      CHECK(cache.size() == steps);
      CHECK(memory.size() == S);
      CHECK_THAT(torch::cat(self_steps, 1), AllClose(full_self, 1e-6, 1e-6));
      CHECK_THAT(torch::cat(cross_steps, 1), AllClose(full_cross, 1e-6, 1e-6));

      // Several positions per step (a prompt) give the same rows too.
      tnn::MultiheadAttentionCache chunked;
      auto [first, w1] = self_attn->forward_step(x.slice(1, 0, 20), chunked);
      auto [rest, w2] =
          self_attn->forward_step(x.slice(1, 20, steps), chunked, {}, /*need_weights=*/true);
      CHECK_THAT(torch::cat({first, rest}, 1), AllClose(full_self, 1e-6, 1e-6));
      CHECK_THAT(w2, AllClose(full_w.slice(1, 20, steps), 1e-6, 1e-6));
    }
  }
}

TEST_CASE("the key/value cache reports misuse", "[nn][mha][cache][errors]") {
  using Catch::Matchers::ContainsSubstring;
  tnn::MultiheadAttention mha(tnn::MultiheadAttentionOptions(8, 2).batch_first(true));
  tnn::MultiheadAttentionCache cache;
  CHECK_THROWS_WITH(
      mha->forward_step(torch::randn({2, 8}), cache),
      ContainsSubstring(
          "MultiheadAttention::forward_step: query has shape [2, 8], expected [B, T, 8]"));
  mha->forward_step(torch::randn({2, 1, 8}), cache);
  CHECK_THROWS_WITH(
      mha->forward_step(torch::randn({3, 1, 8}), cache),
      ContainsSubstring("MultiheadAttention::forward_step: cache.key holds batch 2 (shape [2, 2, "
                        "1, 4]), the query has batch 3"));
  // A cache from another module, or broken by hand: named, with what this module expects.
  tnn::MultiheadAttention other(tnn::MultiheadAttentionOptions(8, 4).batch_first(true));
  tnn::MultiheadAttentionCache other_cache;
  other->forward_step(torch::randn({2, 1, 8}), other_cache);
  CHECK_THROWS_WITH(
      mha->forward_step(torch::randn({2, 1, 8}), other_cache),
      ContainsSubstring("MultiheadAttention::forward_step: cache.key has shape [2, 4, 1, 2], "
                        "expected [B, 2, S, 4] [B, num_heads, S, head_dim]"));
  tnn::MultiheadAttention wide(tnn::MultiheadAttentionOptions(16, 2).batch_first(true));
  auto memory = wide->project_memory(torch::randn({2, 5, 16}), torch::randn({2, 5, 16}));
  CHECK_THROWS_WITH(
      mha->forward_step(torch::randn({2, 1, 8}), memory),
      ContainsSubstring("cache.key has shape [2, 2, 5, 8], expected [B, 2, S, 4]"));
  tnn::MultiheadAttentionCache half_cache{cache.key, torch::Tensor()};
  CHECK_THROWS_WITH(
      mha->forward_step(torch::randn({2, 1, 8}), half_cache),
      ContainsSubstring("MultiheadAttention::forward_step: the cache has a key but no value"));
  tnn::MultiheadAttentionCache flat{cache.key[0], cache.value[0]};
  CHECK_THROWS_WITH(
      mha->forward_step(torch::randn({2, 1, 8}), flat),
      ContainsSubstring("cache.key has shape [2, 1, 4], expected [B, 2, S, 4]"));
  tnn::MultiheadAttentionCache uneven{cache.key, torch::cat({cache.value, cache.value}, 2)};
  CHECK_THROWS_WITH(
      mha->forward_step(torch::randn({2, 1, 8}), uneven),
      ContainsSubstring("cache.key holds 1 positions and cache.value 2; expected the same"));
  CHECK_THROWS_WITH(
      mha->forward_step(torch::randn({2, 1, 8}, torch::kDouble), cache),
      ContainsSubstring("MultiheadAttention::forward_step: query has dtype Double, expected Float "
                        "like the module's parameters"));
  CHECK_THROWS_WITH(
      mha->forward_step(torch::randn({2, 1, 8}), cache, torch::zeros({2, 1}, torch::kBool)),
      ContainsSubstring(
          "key_padding_mask has shape [2, 1], expected [2, 2] [B, cached positions]"));
  CHECK_THROWS_WITH(
      mha->project_memory(torch::randn({2, 3, 7}), torch::randn({2, 3, 8})),
      ContainsSubstring("MultiheadAttention::project_memory: expected key [B, S, 8] and value [B, "
                        "S, 8], got [2, 3, 7] and [2, 3, 8]"));
  tnn::MultiheadAttention cross(tnn::MultiheadAttentionOptions(8, 2).kdim(4));
  tnn::MultiheadAttentionCache empty;
  CHECK_THROWS_WITH(
      cross->forward_step(torch::randn({1, 2, 8}), empty),
      ContainsSubstring("self-attention steps need kdim == vdim == embed_dim"));
}

TEST_CASE(
    "multi_head_attention_forward equals LibTorch's functional, packed and separate projections",
    "[nn][mha]") {
  // LibTorch's torch::nn::functional::multi_head_attention_forward computes the reference; an
  // additive mask, which it handles as PyTorch does (its bool masks are added, not masked).
  namespace F = torchattn::nn::functional;
  namespace tf = torch::nn::functional;
  torch::manual_seed(11);
  const int64_t e = 12, h = 3, l = 5, s = 7, b = 2;
  auto w_in = torch::randn({3 * e, e}, torch::kDouble),
       b_in = torch::randn({3 * e}, torch::kDouble);
  auto w_out = torch::randn({e, e}, torch::kDouble), b_out = torch::randn({e}, torch::kDouble);
  auto bias_k = torch::randn({1, 1, e}, torch::kDouble),
       bias_v = torch::randn({1, 1, e}, torch::kDouble);
  auto q = torch::randn({l, b, e}, torch::kDouble), kv = torch::randn({s, b, e}, torch::kDouble);
  auto mask = torch::randn({l, s}, torch::kDouble);
  for (const bool separate : {false, true}) {
    auto theirs_options = tf::MultiheadAttentionForwardFuncOptions(
                              e, h, w_in, b_in, bias_k, bias_v, true, 0.0, w_out, b_out)
                              .attn_mask(mask)
                              .training(false);
    auto ours_options = F::MultiheadAttentionForwardFuncOptions(
                            e, h, w_in, b_in, bias_k, bias_v, true, 0.0, w_out, b_out)
                            .attn_mask(mask)
                            .training(false);
    if (separate) {
      auto parts = w_in.chunk(3);
      theirs_options.use_separate_proj_weight(true)
          .q_proj_weight(parts[0])
          .k_proj_weight(parts[1])
          .v_proj_weight(parts[2]);
      ours_options.use_separate_proj_weight(true)
          .q_proj_weight(parts[0])
          .k_proj_weight(parts[1])
          .v_proj_weight(parts[2]);
    }
    auto [want, want_w] = tf::multi_head_attention_forward(q, kv, kv, theirs_options);
    auto [got, got_w] = F::multi_head_attention_forward(q, kv, kv, ours_options);
    CHECK_THAT(got, AllClose(want, 1e-12, 1e-12));
    CHECK_THAT(got_w, AllClose(want_w, 1e-12, 1e-12));
  }
}

TEST_CASE("MultiheadAttention's forward is its functional with its parameters", "[nn][mha]") {
  namespace F = torchattn::nn::functional;
  torch::manual_seed(12);
  tnn::MultiheadAttention mha(
      tnn::MultiheadAttentionOptions(16, 4).kdim(10).vdim(6).batch_first(true));
  mha->eval();
  auto q = torch::randn({2, 5, 16}), k = torch::randn({2, 9, 10}), v = torch::randn({2, 9, 6});
  auto [want, want_w] =
      mha->forward(q, k, v, {}, true, {}, /*average_attn_weights=*/false, /*is_causal=*/true);
  auto [got, got_w] = F::multi_head_attention_forward(
      q, k, v,
      F::MultiheadAttentionForwardFuncOptions(
          16, 4, {}, mha->in_proj_bias, {}, {}, false, 0.0, mha->out_proj->weight,
          mha->out_proj->bias)
          .use_separate_proj_weight(true)
          .q_proj_weight(mha->q_proj_weight)
          .k_proj_weight(mha->k_proj_weight)
          .v_proj_weight(mha->v_proj_weight)
          .batch_first(true)
          .is_causal(true)
          .average_attn_weights(false));
  CHECK_THAT(got, AllClose(want, 0.0, 0.0));
  CHECK_THAT(got_w, AllClose(want_w, 0.0, 0.0));
  CHECK_THROWS_WITH(
      F::multi_head_attention_forward(
          q, k, v,
          F::MultiheadAttentionForwardFuncOptions(
              16, 4, {}, {}, {}, {}, false, 0.0, mha->out_proj->weight, {})
              .use_separate_proj_weight(true)
              .q_proj_weight(mha->q_proj_weight)
              .k_proj_weight(mha->k_proj_weight)
              .v_proj_weight(mha->v_proj_weight.t())
              .batch_first(true)),
      Catch::Matchers::ContainsSubstring(
          "MultiheadAttention: value has 6 features (shape [2, 9, 6]), expected vdim 16"));
}
