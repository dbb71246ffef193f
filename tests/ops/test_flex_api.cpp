// flex_attention's surroundings: the Meta kernels' shapes, every bad-input message, the
// varlen interface against one call per sequence, the weights of chosen rows from the LSE,
// block masks from C++ mask_mods, ALiBi slopes and T5 buckets against their definitions,
// rows with no key, determinism across thread counts, and double backward's refusal.

#include <torchattn/torchattn.h>

#include "support/reference.h"
#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <ATen/Parallel.h>

#include <cmath>
#include <sstream>
#include <string>

namespace {

namespace F = torchattn::nn::functional;
using Catch::Matchers::ContainsSubstring;
using torchattn::testing::AllClose;

template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const c10::Error& e) {
    return e.what_without_backtrace();
  }
  return "";
}

F::FlexAttentionOutput flex(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const F::FlexAttentionFuncOptions& o = {}) {
  return F::flex_attention(q, k, v, o);
}

} // namespace

TEST_CASE("flex_attention's Meta kernels give the CPU kernels' shapes", "[ops][flex][meta]") {
  auto m = torch::TensorOptions().device(torch::kMeta);
  auto q = torch::empty({2, 4, 5, 8}, m), k = torch::empty({2, 2, 7, 8}, m);
  auto v = torch::empty({2, 2, 7, 3}, m);
  auto table = torch::empty({4, 6}, m);
  auto buckets = torch::empty({11}, m.dtype(torch::kLong));
  auto r = flex(
      q, k, v,
      F::FlexAttentionFuncOptions()
          .enable_gqa(true)
          .causal("bottom_right")
          .position_bias(table)
          .position_buckets(buckets)
          .bias(torch::empty({5, 7}, m)));
  CHECK(r.output.device().is_meta());
  CHECK(r.output.sizes() == torch::IntArrayRef({2, 4, 5, 3}));
  CHECK(r.lse.sizes() == torch::IntArrayRef({2, 4, 5}));
  const c10::optional<torch::Tensor> none;
  auto [out, mx, ls] = torchattn::ops::_flex_attention_forward(
      q, k, v, none, torch::empty({5, 7}, m), "none", -1, -1, none, none, none, none, none, none,
      0.0, none, table, buckets, 0.5);
  auto [gq, gk, gv, gb, gt, ga] = torchattn::ops::_flex_attention_backward(
      torch::empty({2, 4, 5, 3}, m), q, k, v, none, torch::empty({5, 7}, m), "none", -1, -1, none,
      none, none, none, none, none, 0.0, none, table, buckets, out, mx, ls, 0.5,
      {true, true, false});
  CHECK(gq.sizes() == q.sizes());
  CHECK(gk.sizes() == k.sizes());
  CHECK(gv.sizes() == v.sizes());
  CHECK(gb.sizes() == torch::IntArrayRef({5, 7}));
  CHECK(gt.sizes() == table.sizes());
  CHECK_FALSE(ga.defined());
}

TEST_CASE("flex_attention names the argument in every error", "[ops][flex][errors]") {
  auto q = torch::randn({2, 4, 6, 8}), k = torch::randn({2, 4, 9, 8}),
       v = torch::randn({2, 4, 9, 5});
  using O = F::FlexAttentionFuncOptions;
  const std::vector<std::pair<O, std::string>> cases{
      {O().causal("upper"),
       "causal is \"upper\", expected \"none\", \"top_left\" or \"bottom_right\""},
      {O().window_left(-2), "window_left is -2, expected -1 (unbounded) or a count >= 0"},
      {O().q_doc_ids(torch::zeros({6}, torch::kLong)), "q_doc_ids and kv_doc_ids come together"},
      {O().q_doc_ids(torch::zeros({6}, torch::kLong)).kv_doc_ids(torch::zeros({8}, torch::kLong)),
       "kv_doc_ids has shape [8], expected [9] or [2, 9]"},
      {O().q_doc_ids(torch::zeros({6})).kv_doc_ids(torch::zeros({9})),
       "q_doc_ids has dtype Float, expected an integer dtype"},
      {O().prefix_lengths(torch::tensor({3, 4})), "prefix_lengths is given with causal \"none\""},
      {O().causal("top_left").prefix_lengths(torch::tensor({3, 4, 5})),
       "prefix_lengths has shape [3]"},
      {O().softcap(-1.0), "softcap is -1, expected 0 (none) or a finite cap > 0"},
      {O().alibi_slopes(torch::ones({3})), "alibi_slopes has shape [3], expected [4] [H]"},
      {O().position_bias(torch::ones({4, 5})), "position_bias and position_buckets come together"},
      {O().position_bias(torch::ones({4, 5})).position_buckets(torch::zeros({13}, torch::kLong)),
       "position_buckets has shape [13] and dtype Long, expected Long [14]"},
      {O().position_bias(torch::ones({4, 5})).position_buckets(torch::full({14}, 5, torch::kLong)),
       "position_buckets has a bucket outside [0, 5) of position_bias"},
      {O().bias(torch::ones({6, 8})),
       "bias has shape [6, 8], expected a shape broadcastable to [2, 4, 6, 9]"},
      {O().bias(torch::ones({6, 9}, torch::kDouble)),
       "bias has dtype Double, expected Float like query"},
      {O().attn_mask(torch::ones({6, 9}).requires_grad_(true)).bias(torch::ones({6, 9})),
       "attn_mask requires grad and bias is given"},
  };
  for (const auto& c : cases) {
    INFO(c.second);
    CHECK_THAT(error_of([&] { flex(q, k, v, c.first); }), ContainsSubstring(c.second));
  }
  // Shapes of the operands, GQA.
  CHECK_THAT(
      error_of([&] {
        flex(q, torch::randn({2, 2, 9, 8}), torch::randn({2, 2, 9, 5}));
      }),
      ContainsSubstring("key has 2 heads and query 4, expected the same (pass enable_gqa=true"));
  CHECK_THAT(
      error_of([&] {
        flex(q, torch::randn({2, 3, 9, 8}), torch::randn({2, 3, 9, 5}), O().enable_gqa(true));
      }),
      ContainsSubstring(
          "key has 3 heads and query 4, expected a number of kv heads that divides H"));
  CHECK_THAT(
      error_of([&] {
        flex(q, k, torch::randn({2, 4, 8, 5}));
      }),
      ContainsSubstring("value has shape [2, 4, 8, 5], expected [2, 4, 9, Ev]"));
  CHECK_THAT(
      error_of([&] { flex(q.to(torch::kInt), k, v); }),
      ContainsSubstring("query has dtype Int, expected Float, Double, BFloat16 or Half"));
  // Block masks.
  auto wrong =
      F::create_block_mask([](int64_t, int64_t, int64_t, int64_t) { return true; }, 1, 1, 6, 20, 4);
  CHECK_THAT(
      error_of([&] { flex(q, k, v, O().block_mask(wrong)); }),
      ContainsSubstring("block_kinds has shape [1, 1, 2, 5] and dtype Byte, expected a contiguous "
                        "Byte [2 or 1, 4 or 1, 2, 3]"));
  CHECK_THAT(
      error_of([&] { F::create_block_mask(nullptr, 1, 1, 6, 9); }),
      ContainsSubstring("create_block_mask: mask_mod is empty"));
  // Varlen and the weights.
  auto cu = torch::tensor({0, 4, 3}, torch::kLong);
  CHECK_THAT(
      error_of([&] {
        F::flex_attention_varlen(
            torch::randn({3, 2, 8}), torch::randn({3, 2, 8}), torch::randn({3, 2, 8}), cu, cu);
      }),
      ContainsSubstring("cu_seqlens_q is"));
  CHECK_THAT(
      error_of([&] {
        F::flex_attention_varlen(
            torch::randn({3, 2, 8}), torch::randn({4, 2, 8}), torch::randn({4, 2, 8}),
            torch::tensor({0, 3}, torch::kLong), torch::tensor({0, 4}, torch::kLong),
            O().causal("top_left"));
      }),
      ContainsSubstring(
          "causal masks, windows and prefixes need cu_seqlens_q equal to cu_seqlens_k"));
  auto lse = flex(q, k, v).lse;
  CHECK_THAT(
      error_of([&] {
        F::flex_attention_weights(q, k, lse, torch::tensor({0, 6}, torch::kLong));
      }),
      ContainsSubstring("rows has a row outside [0, 6)"));
  CHECK_THAT(
      error_of([&] {
        F::flex_attention_weights(q, k, lse.narrow(2, 0, 5), torch::tensor({0}, torch::kLong));
      }),
      ContainsSubstring("lse has shape [2, 4, 5], expected [2, 4, 6]"));
}

TEST_CASE("flex_attention_varlen equals one call per sequence", "[ops][flex]") {
  torch::manual_seed(3);
  const std::vector<int64_t> lens{5, 0, 130, 1, 260};
  std::vector<int64_t> cu{0};
  for (auto l : lens) {
    cu.push_back(cu.back() + l);
  }
  const int64_t T = cu.back();
  auto q = torch::randn({T, 4, 16}, torch::kDouble), k = torch::randn({T, 2, 16}, torch::kDouble);
  auto v = torch::randn({T, 2, 8}, torch::kDouble);
  auto cu_t = torch::tensor(cu, torch::kLong);
  for (const char* causal : {"none", "top_left"}) {
    auto o = F::FlexAttentionFuncOptions().causal(causal).window_left(50).enable_gqa(true);
    auto r = F::flex_attention_varlen(q, k, v, cu_t, cu_t, o);
    REQUIRE(r.output.sizes() == torch::IntArrayRef({T, 4, 8}));
    REQUIRE(r.lse.sizes() == torch::IntArrayRef({4, T}));
    for (size_t s = 0; s < lens.size(); ++s) {
      if (lens[s] == 0) {
        continue;
      }
      auto part = [&](const torch::Tensor& t) {
        return t.narrow(0, cu[s], lens[s]).transpose(0, 1).unsqueeze(0);
      };
      auto one = flex(part(q), part(k), part(v), o);
      INFO("sequence " << s << " causal " << causal);
      CHECK_THAT(part(r.output), AllClose(one.output, 1e-12, 1e-12));
      CHECK_THAT(r.lse.narrow(1, cu[s], lens[s]).unsqueeze(0), AllClose(one.lse, 1e-12, 1e-12));
    }
  }
}

TEST_CASE("flex_attention_weights gives the math path's weights of chosen rows", "[ops][flex]") {
  torch::manual_seed(4);
  auto q = torch::randn({2, 3, 300, 16}, torch::kDouble),
       k = torch::randn({2, 3, 280, 16}, torch::kDouble);
  auto v = torch::randn({2, 3, 280, 8}, torch::kDouble);
  // Row 7 of document 9 has no key: its weights are zero.
  auto qd = torch::zeros({300}, torch::kLong).index_put_({7}, 9);
  auto o = F::FlexAttentionFuncOptions()
               .causal("bottom_right")
               .softcap(3.0)
               .alibi_slopes(F::alibi_slopes(3).to(torch::kDouble))
               .q_doc_ids(qd)
               .kv_doc_ids(torch::zeros({280}, torch::kLong));
  auto r = flex(q, k, v, o);
  auto rows = torch::tensor({0, 7, 150, 299}, torch::kLong);
  auto w = F::flex_attention_weights(q, k, r.lse, rows, o);
  auto full = flex(q, k, v, F::FlexAttentionFuncOptions(o).need_weights(true)).weights;
  CHECK_THAT(w, AllClose(full.index_select(2, rows), 1e-12, 1e-12));
  CHECK(w.select(2, 1).abs().sum().item<double>() == 0.0);
  CHECK(std::isinf(r.lse[0][0][7].item<double>()));
}

TEST_CASE("create_block_mask classifies blocks as the mask says", "[ops][flex]") {
  auto causal = [](int64_t, int64_t, int64_t q, int64_t kv) { return kv <= q; };
  auto bm = F::create_block_mask(causal, 1, 1, 100, 100, 32);
  // Blocks of 32 on 100 x 100: 4 x 4, the last ones ragged. Below the diagonal full, on it
  // partial, above empty.
  CHECK(bm.kinds.equal(torch::tensor({1, 0, 0, 0, 2, 1, 0, 0, 2, 2, 1, 0, 2, 2, 2, 1}, torch::kByte)
                           .view({1, 1, 4, 4})));
  CHECK(bm.masks.size(0) == 4);
  CHECK(bm.density() == 10.0 / 16.0);
  auto dense = torch::ones({100, 100}, torch::kBool).tril().view({1, 1, 100, 100});
  auto from_dense = F::block_mask_from_dense(dense, 32);
  CHECK(from_dense.kinds.equal(bm.kinds));
  CHECK(from_dense.masks.equal(bm.masks));
  // and / or of mask_mods.
  auto even = [](int64_t, int64_t, int64_t, int64_t kv) { return kv % 2 == 0; };
  auto both = F::and_masks({causal, even}), either = F::or_masks({causal, even});
  CHECK(both(0, 0, 5, 4));
  CHECK_FALSE(both(0, 0, 5, 3));
  CHECK(either(0, 0, 1, 8));
  CHECK_FALSE(either(0, 0, 1, 9));
}

TEST_CASE("ALiBi slopes and T5 buckets follow their definitions", "[ops][flex]") {
  // Press et al.: H = 8 gives 2^-1 ... 2^-8; H = 6 takes 4's (2^-2, 2^-4, 2^-6, 2^-8) and then
  // every other of 8's (2^-1, 2^-3).
  CHECK_THAT(
      F::alibi_slopes(8),
      AllClose(torch::pow(2.0, -torch::arange(1, 9, torch::kDouble)).to(torch::kFloat), 0, 0));
  CHECK_THAT(
      F::alibi_slopes(6),
      AllClose(
          torch::tensor({0.25, 0.0625, 0.015625, 0.00390625, 0.5, 0.125}).to(torch::kFloat), 0, 0));
  // HuggingFace's bucketing, as PyTorch 2.6 computed it for the reference case.
  const auto& ref = torchattn::testing::reference("flex.pt");
  for (const auto& c : ref.cases) {
    if (c.name.rfind("t5_table", 0) == 0) {
      CHECK(F::t5_position_buckets(150, 150).equal(c.get("position_buckets")));
    }
  }
  // The clipped distance by hand: Lq = 2, Lk = 3, j - i in [-1, 2], clipped at 1.
  CHECK(F::clipped_position_buckets(2, 3, 1).equal(torch::tensor({0, 1, 2, 2}, torch::kLong)));
}

TEST_CASE("flex_attention: rows with no key give zeros under every modifier", "[ops][flex]") {
  auto q = torch::randn({1, 2, 200, 8}).requires_grad_(true);
  auto k = torch::randn({1, 2, 150, 8}).requires_grad_(true);
  auto v = torch::randn({1, 2, 150, 8}).requires_grad_(true);
  // Bottom-right causal with Lq > Lk: the first 50 queries see no key. Documents: queries of
  // document 5 have no keys.
  auto qd = torch::zeros({200}, torch::kLong).index_put_({torch::indexing::Slice(60, 70)}, 5);
  auto bias = torch::randn({200, 150}).requires_grad_(true);
  auto slopes = torch::rand({2}).requires_grad_(true);
  auto o = F::FlexAttentionFuncOptions()
               .causal("bottom_right")
               .softcap(2.0)
               .bias(bias)
               .alibi_slopes(slopes)
               .q_doc_ids(qd)
               .kv_doc_ids(torch::zeros({150}, torch::kLong));
  auto r = flex(q, k, v, o);
  r.output.sum().backward();
  auto dead = torch::zeros({200}, torch::kBool);
  dead.narrow(0, 0, 50).fill_(true);
  dead.narrow(0, 60, 10).fill_(true);
  CHECK(r.output.index({0, 0, dead}).abs().sum().item<float>() == 0.0f);
  CHECK(r.lse.index({0, 0, dead}).isneginf().all().item<bool>());
  CHECK(q.grad().index({0, 0, dead}).abs().sum().item<float>() == 0.0f);
  for (const auto& g : {q.grad(), k.grad(), v.grad(), bias.grad(), slopes.grad()}) {
    CHECK(g.isfinite().all().item<bool>());
  }
  CHECK(bias.grad().index({dead}).abs().sum().item<float>() == 0.0f);
}

TEST_CASE("flex_attention gives the same bits on 1 and 2 threads", "[ops][flex]") {
  auto run = [](int threads) {
    at::set_num_threads(threads);
    torch::manual_seed(5);
    auto q = torch::randn({1, 4, 300, 16}).requires_grad_(true);
    auto k = torch::randn({1, 2, 300, 16}).requires_grad_(true);
    auto v = torch::randn({1, 2, 300, 16}).requires_grad_(true);
    auto bias = torch::randn({4, 300, 300}).requires_grad_(true);
    auto table = torch::randn({4, 32}).requires_grad_(true);
    auto r = flex(
        q, k, v,
        F::FlexAttentionFuncOptions()
            .enable_gqa(true)
            .bias(bias)
            .position_bias(table)
            .position_buckets(F::t5_position_buckets(300, 300)));
    r.output.pow(2).sum().backward();
    return std::vector<torch::Tensor>{r.output, q.grad(),    k.grad(),
                                      v.grad(), bias.grad(), table.grad()};
  };
  const int saved = at::get_num_threads();
  auto one = run(1), two = run(2);
  at::set_num_threads(saved);
  for (size_t i = 0; i < one.size(); ++i) {
    INFO("tensor " << i);
    CHECK(one[i].equal(two[i]));
  }
}

TEST_CASE("flex_attention refuses double backward", "[ops][flex][errors]") {
  auto q = torch::randn({1, 1, 4, 8}).requires_grad_(true);
  auto out = flex(q, q, q).output;
  auto g =
      torch::autograd::grad({out.sum()}, {q}, {}, /*retain_graph=*/true, /*create_graph=*/true)[0];
  CHECK_THAT(
      error_of([&] { g.sum().backward(); }),
      ContainsSubstring("flex_attention: double backward is not supported by the fused kernel"));
}

TEST_CASE("FlexAttention module: its parameters learn through the fused kernel", "[nn][flex]") {
  torch::manual_seed(6);
  torchattn::nn::FlexAttention attn(torchattn::nn::FlexAttentionOptions(4)
                                        .causal("top_left")
                                        .window_left(40)
                                        .softcap(20.0)
                                        .learnable_alibi(true)
                                        .position_buckets(16)
                                        .max_distance(64));
  auto params = attn->named_parameters();
  REQUIRE(params.contains("position_bias"));
  REQUIRE(params.contains("alibi_slopes"));
  CHECK(attn->position_bias.sizes() == torch::IntArrayRef({4, 16}));
  CHECK_THAT(attn->alibi_slopes, AllClose(F::alibi_slopes(4), 0, 0));
  auto q = torch::randn({2, 4, 150, 8}), k = torch::randn({2, 4, 150, 8});
  auto v = torch::randn({2, 4, 150, 8});
  auto [out, lse] = attn(q, k, v);
  // The same through the functional's math path, with the module's parameters.
  auto want = F::flex_attention(
      q, k, v,
      F::FlexAttentionFuncOptions()
          .causal("top_left")
          .window_left(40)
          .softcap(20.0)
          .alibi_slopes(attn->alibi_slopes)
          .position_bias(attn->position_bias)
          .position_buckets(F::t5_position_buckets(150, 150, 16, 64))
          .need_weights(true));
  CHECK_THAT(out, AllClose(want.output, 1e-5, 1e-5));
  CHECK_THAT(lse, AllClose(want.lse, 1e-5, 1e-5));
  out.pow(2).sum().backward();
  auto g_table = attn->position_bias.grad().clone(), g_slopes = attn->alibi_slopes.grad().clone();
  attn->zero_grad();
  want.output.pow(2).sum().backward();
  CHECK_THAT(g_table, AllClose(attn->position_bias.grad(), 1e-4, 1e-5));
  CHECK_THAT(g_slopes, AllClose(attn->alibi_slopes.grad(), 1e-4, 1e-4));
  std::ostringstream printed;
  printed << *attn;
  CHECK_THAT(
      printed.str(),
      ContainsSubstring("torchattn::nn::FlexAttention(num_heads=4, causal=top_left"));
  CHECK_THAT(
      error_of(
          [] { torchattn::nn::FlexAttention(torchattn::nn::FlexAttentionOptions(2).causal("x")); }),
      ContainsSubstring("FlexAttention: causal is \"x\""));
}

TEST_CASE("MultiheadAttention runs flex_attention's modifiers per head", "[nn][flex][mha]") {
  torch::manual_seed(7);
  auto flex_options = F::FlexAttentionFuncOptions()
                          .causal("top_left")
                          .window_left(5)
                          .softcap(4.0)
                          .alibi_slopes(F::alibi_slopes(4));
  torchattn::nn::MultiheadAttention mha(
      torchattn::nn::MultiheadAttentionOptions(16, 4).batch_first(true).flex(flex_options));
  mha->eval();
  auto x = torch::randn({2, 12, 16});
  auto pad =
      torch::zeros({2, 12}, torch::kBool).index_put_({1, torch::indexing::Slice(10, 12)}, true);
  auto [out, weights] = mha(x, x, x, pad, /*need_weights=*/false);
  // By hand: the projections, flex_attention on the math path with the padding as a mask, the
  // output projection.
  auto qkv = torch::linear(x, mha->in_proj_weight, mha->in_proj_bias).chunk(3, -1);
  auto heads = [](const torch::Tensor& t) { return t.view({2, 12, 4, 4}).transpose(1, 2); };
  auto keep = pad.logical_not().view({2, 1, 1, 12});
  auto r = F::flex_attention(
      heads(qkv[0]), heads(qkv[1]), heads(qkv[2]),
      F::FlexAttentionFuncOptions(flex_options).attn_mask(keep).need_weights(true));
  auto want = torch::linear(
      r.output.transpose(1, 2).reshape({2, 12, 16}), mha->out_proj->weight, mha->out_proj->bias);
  CHECK_THAT(out, AllClose(want, 1e-5, 1e-5));
  mha->train();
  CHECK_THAT(
      error_of([&] {
        torchattn::nn::MultiheadAttention(
            torchattn::nn::MultiheadAttentionOptions(16, 4).dropout(0.1).flex(flex_options))(
            x, x, x);
      }),
      ContainsSubstring("MultiheadAttention: dropout 0.1 with flex modifiers, expected 0"));
}
