// decode_attention and the decoding kernel: a sweep against the math path on every vector build
// this CPU runs (cache lengths per row, query positions, causal, windows, GQA, head dims with
// tails, strided cache views), the routes (sdpa and flex_attention send small Lq there; a
// gradient goes to the tiled kernel), the edges (no key, NaN, huge logits) and bad input.
//
// The reference is the math path of scaled_dot_product_attention (need_weights, which is
// checked against PyTorch in tests/nn/test_reference.cpp) on the kv heads repeated per query
// head, with the masks written out as a dense boolean mask from their definition.

#include <torchattn/torchattn.h>

#include "support/capabilities.h"
#include "support/low_precision_rule.h"
#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <fmt/format.h>

#include <limits>

namespace {

namespace F = torchattn::nn::functional;
using Catch::Matchers::ContainsSubstring;
using torchattn::testing::AllClose;

struct Case {
  int64_t B, H, Hkv, Lq, Lk, E, Ev;
  bool causal = true;
  int64_t window = -1;
  bool lengths = false, starts = false, strided = false;
};

/// The mask from its definition: row b's query i at p = start_b + i sees key j < len_b with
/// j <= p if causal and j >= p - window if window >= 0.
torch::Tensor dense_mask(const Case& c, const torch::Tensor& len, const torch::Tensor& start) {
  auto mask = torch::zeros({c.B, 1, c.Lq, c.Lk}, torch::kBool);
  for (int64_t b = 0; b < c.B; ++b) {
    for (int64_t i = 0; i < c.Lq; ++i) {
      const int64_t p = start[b].item<int64_t>() + i;
      for (int64_t j = 0; j < len[b].item<int64_t>(); ++j) {
        const bool seen = (!c.causal || j <= p) && (c.window < 0 || j >= p - c.window);
        mask[b][0][i][j] = seen;
      }
    }
  }
  return mask;
}

/// The math path's output and lse in float64; rows with no key get zeros and -inf.
std::pair<torch::Tensor, torch::Tensor> reference(
    const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    const torch::Tensor& mask) {
  const int64_t G = q.size(1) / k.size(1);
  auto kk = k.to(torch::kDouble).repeat_interleave(G, 1);
  auto vv = v.to(torch::kDouble).repeat_interleave(G, 1);
  auto qd = q.to(torch::kDouble);
  const double scale = 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  auto out = std::get<0>(F::scaled_dot_product_attention(
      qd, kk, vv, F::ScaledDotProductAttentionFuncOptions().attn_mask(mask).need_weights(true)));
  auto s = (qd * scale).matmul(kk.transpose(-2, -1)).masked_fill(mask.logical_not(), -INFINITY);
  return {out, s.logsumexp(-1)};
}

torch::Tensor range_int(int64_t lo, int64_t hi, int64_t n) {
  return torch::randint(lo, hi + 1, {n}, torch::kLong);
}

/// Runs one case on the current build and dtype; returns the worst error of output and lse.
void check_case(const Case& c, torch::ScalarType dtype) {
  auto q = torch::randn({c.B, c.H, c.Lq, c.E}, dtype);
  auto kbig = torch::randn({c.B, c.Hkv, c.Lk + (c.strided ? 7 : 0), c.E}, dtype);
  auto vbig = torch::randn({c.B, c.Hkv, c.Lk + (c.strided ? 7 : 0), c.Ev}, dtype);
  // A strided view: a slice of a bigger cache, as a preallocated KV cache gives.
  auto k = kbig.narrow(2, 0, c.Lk), v = vbig.narrow(2, 0, c.Lk);
  auto len = c.lengths ? range_int(0, c.Lk, c.B) : torch::full({c.B}, c.Lk, torch::kLong);
  auto start = c.starts ? range_int(-2, c.Lk, c.B) : len - c.Lq;
  const c10::optional<torch::Tensor> lengths =
      c.lengths ? c10::optional<torch::Tensor>(len) : c10::nullopt;
  const c10::optional<torch::Tensor> starts =
      c.starts ? c10::optional<torch::Tensor>(start) : c10::nullopt;
  auto [out, lse] =
      torchattn::ops::decode_attention(q, k, v, lengths, starts, c.causal, c.window, c10::nullopt);
  auto [ref_out, ref_lse] = reference(q, k, v, dense_mask(c, len, start));
  const double tol = torchattn::testing::tolerance(dtype);
  INFO(fmt::format(
      "B={} H={} Hkv={} Lq={} Lk={} E={} Ev={} causal={} window={} lengths={} starts={} "
      "strided={} {} {}",
      c.B, c.H, c.Hkv, c.Lq, c.Lk, c.E, c.Ev, c.causal, c.window, c.lengths, c.starts, c.strided,
      torch::toString(dtype), torchattn::ops::kernel_capability()));
  CHECK_THAT(out.to(torch::kDouble), AllClose(ref_out, tol, tol));
  // -inf where no key is seen, in both.
  CHECK(torch::equal(lse.isinf(), ref_lse.isinf()));
  auto finite = ref_lse.isfinite();
  CHECK_THAT(
      lse.to(torch::kDouble).masked_select(finite),
      AllClose(ref_lse.masked_select(finite), tol, tol));
}

/// The sweep: shapes from one head to many, MQA and GQA, Lq 1 to 16, Lk from 1 to past a
/// split, head dims with vector tails and different value dims; each in 8 variants of causal,
/// window, per-row lengths and starts, and a strided cache.
std::vector<Case> sweep_cases() {
  const std::vector<std::array<int64_t, 7>> shapes{
      {1, 1, 1, 1, 1, 8, 8},   {1, 4, 1, 1, 700, 64, 64},   {2, 8, 2, 3, 777, 33, 17},
      {3, 2, 2, 16, 40, 8, 8}, {2, 6, 3, 5, 1500, 128, 80}, {1, 32, 8, 1, 2100, 16, 16},
      {2, 3, 1, 2, 300, 1, 5}, {1, 2, 2, 7, 5, 20, 3},      {4, 16, 4, 1, 520, 96, 96}};
  std::vector<Case> cases;
  for (const auto& s : shapes) {
    for (int variant = 0; variant < 8; ++variant) {
      Case c{s[0], s[1], s[2], s[3], s[4], s[5], s[6]};
      c.causal = variant % 2 == 0;
      c.window = variant % 4 >= 2 ? (variant % 3) * 50 : -1;
      c.lengths = variant >= 4;
      c.starts = variant == 5 || variant == 7;
      c.strided = variant % 3 == 1;
      cases.push_back(c);
    }
  }
  return cases;
}

} // namespace

TEST_CASE("decode_attention equals the math path over a sweep", "[ops][decode]") {
  torch::manual_seed(7);
  torchattn::testing::for_each_build_and_dtype([](torch::ScalarType dtype) {
    int n = 0;
    for (const auto& c : sweep_cases()) {
      check_case(c, dtype);
      ++n;
    }
    CHECK(n == 72);
  });
}

TEST_CASE(
    "decode_attention in bfloat16 and float16 keeps FlashAttention's 2x rule", "[ops][decode]") {
  // The kernel reads the cache in its dtype and computes in float32: its output errs at most 2x
  // the math path's in the same dtype (support/low_precision_rule.h), against float64 on the
  // same rounded inputs; the lse, float32 from exact products of the rounded inputs, within
  // float32's rounding. Every case of the sweep (contiguous caches), on every vector build.
  torchattn::testing::CapabilityGuard guard;
  torch::manual_seed(17);
  for (const auto dtype : {torch::kBFloat16, torch::kHalf}) {
    for (const auto& cap : torchattn::testing::low_precision_capabilities()) {
      torchattn::ops::set_kernel_capability(cap);
      for (const auto& c : sweep_cases()) {
        auto q = torch::randn({c.B, c.H, c.Lq, c.E}).to(dtype);
        auto k = torch::randn({c.B, c.Hkv, c.Lk, c.E}).to(dtype);
        auto v = torch::randn({c.B, c.Hkv, c.Lk, c.Ev}).to(dtype);
        auto len = c.lengths ? range_int(0, c.Lk, c.B) : torch::full({c.B}, c.Lk, torch::kLong);
        auto start = c.starts ? range_int(-2, c.Lk, c.B) : len - c.Lq;
        auto [out, lse] =
            torchattn::ops::decode_attention(q, k, v, len, start, c.causal, c.window, c10::nullopt);
        const auto mask = dense_mask(c, len, start);
        auto [ref_out, ref_lse] = reference(q, k, v, mask);
        const int64_t G = c.H / c.Hkv;
        auto math = std::get<0>(F::scaled_dot_product_attention(
            q, k.repeat_interleave(G, 1), v.repeat_interleave(G, 1),
            F::ScaledDotProductAttentionFuncOptions().attn_mask(mask).need_weights(true)));
        CAPTURE(
            c10::toString(dtype), cap, c.B, c.H, c.Hkv, c.Lq, c.Lk, c.E, c.Ev, c.causal, c.window,
            c.lengths, c.starts);
        torchattn::testing::require_rule(out, math, ref_out, dtype);
        REQUIRE(lse.scalar_type() == torch::kFloat);
        REQUIRE(torch::equal(lse.isinf(), ref_lse.isinf()));
        auto finite = ref_lse.isfinite();
        CHECK_THAT(
            lse.to(torch::kDouble).masked_select(finite),
            AllClose(ref_lse.masked_select(finite), 1e-5, 1e-5));
      }
    }
  }
}

TEST_CASE(
    "decode_attention's edges: no key, NaN, huge logits, fully masked rows", "[ops][decode]") {
  torchattn::testing::for_each_build_and_dtype([](torch::ScalarType dtype) {
    auto q = torch::randn({2, 4, 2, 16}, dtype), k = torch::randn({2, 2, 300, 16}, dtype),
         v = torch::randn({2, 2, 300, 16}, dtype);
    // Row 0 has an empty cache: zeros and -inf. Row 1 sees its 300 keys.
    auto len = torch::tensor({0, 300}, torch::kLong);
    auto [out, lse] = torchattn::ops::decode_attention(
        q, k, v, len, c10::nullopt, /*is_causal=*/true, -1, c10::nullopt);
    CHECK(out[0].abs().max().item<double>() == 0.0);
    CHECK(lse[0].eq(-INFINITY).all().item<bool>());
    CHECK(lse[1].isfinite().all().item<bool>());
    // A NaN in one key makes the rows that see it NaN, as the math path does.
    auto kn = k.clone();
    kn[1][0][17][3] = std::numeric_limits<double>::quiet_NaN();
    auto nan_out = std::get<0>(
        torchattn::ops::decode_attention(q, kn, v, len, c10::nullopt, true, -1, c10::nullopt));
    CHECK(nan_out[1].narrow(0, 0, 2).isnan().all().item<bool>());
    CHECK(nan_out[1].narrow(0, 2, 2).isnan().any().item<bool>() == false);
    // Logits up to 1e30 (float32) or 1e300 (float64): one key takes all the weight.
    const double big = dtype == torch::kFloat ? 1e15 : 1e150;
    auto qb = q * big, kb = k * big;
    auto [ob, lb] = torchattn::ops::decode_attention(
        qb, kb, v, c10::nullopt, c10::nullopt, false, -1, c10::nullopt);
    Case c{2, 4, 2, 2, 300, 16, 16};
    c.causal = false;
    auto full = torch::full({2}, 300, torch::kLong);
    auto [ro, rl] = reference(qb, kb, v, dense_mask(c, full, full - 2));
    CHECK_THAT(ob.to(torch::kDouble), AllClose(ro, 1e-5, 1e-5));
  });
}

TEST_CASE("small Lq in sdpa and flex_attention takes the decoding kernel", "[ops][decode]") {
  torch::manual_seed(3);
  auto q = torch::randn({2, 8, 3, 32}), k = torch::randn({2, 8, 900, 32}),
       v = torch::randn({2, 8, 900, 32});
  auto math = [&](bool causal) {
    return std::get<0>(F::scaled_dot_product_attention(
        q, k, v, F::ScaledDotProductAttentionFuncOptions().is_causal(causal).need_weights(true)));
  };
  for (bool causal : {false, true}) {
    auto fused = torchattn::ops::scaled_dot_product_attention(q, k, v, {}, 0.0, causal, {});
    CHECK_THAT(fused, AllClose(math(causal), 1e-5, 1e-5));
  }
  // flex_attention, bottom-right causal with a window, GQA: against the tiled kernel (the
  // same call with gradients).
  auto kg = k.narrow(1, 0, 2), vg = v.narrow(1, 0, 2);
  auto opts =
      F::FlexAttentionFuncOptions().causal("bottom_right").window_left(100).enable_gqa(true);
  auto dec = F::flex_attention(q, kg, vg, opts).output;
  auto tiled = F::flex_attention(q.clone().requires_grad_(), kg, vg, opts).output;
  CHECK_THAT(dec, AllClose(tiled.detach(), 1e-5, 1e-5));
}

TEST_CASE("decode_attention with empty dims equals the math path", "[ops][decode]") {
  // E = 0 (scores 0: uniform weights over the keys a query sees), Lk = 0 (no key: zeros,
  // lse -inf), Ev = 0 and Lq = 0.
  for (auto [Lq, Lk, E, Ev] : std::vector<std::array<int64_t, 4>>{
           {2, 30, 0, 8}, {2, 0, 8, 8}, {2, 30, 8, 0}, {0, 30, 8, 8}}) {
    INFO("Lq=" << Lq << " Lk=" << Lk << " E=" << E << " Ev=" << Ev);
    auto q = torch::randn({2, 4, Lq, E}, torch::kDouble);
    auto k = torch::randn({2, 2, Lk, E}, torch::kDouble),
         v = torch::randn({2, 2, Lk, Ev}, torch::kDouble);
    auto len = torch::tensor({Lk, Lk / 2}, torch::kLong);
    auto [out, lse] = torchattn::ops::decode_attention(
        q, k, v, len, c10::nullopt, true, -1, 1.0 / std::sqrt(std::max<int64_t>(E, 1)));
    Case c{2, 4, 2, Lq, Lk, E, Ev};
    auto mask = dense_mask(c, len, len - Lq);
    CHECK(out.sizes() == torch::IntArrayRef({2, 4, Lq, Ev}));
    // Where a row sees no key: lse -inf, in any case.
    CHECK(torch::equal(lse.isinf(), mask.logical_not().all(-1).expand({2, 4, Lq})));
    if (E == 0) { // scores 0, uniform weights: the mean of the values seen
      auto w = torch::ones({2, 1, Lq, Lk}, torch::kDouble).masked_fill(mask.logical_not(), 0.0);
      auto mean = w.matmul(v.repeat_interleave(2, 1)) / w.sum(-1, true);
      CHECK_THAT(out, AllClose(mean, 1e-12, 1e-12));
    } else {
      auto [ref_out, ref_lse] = reference(q, k, v, mask);
      CHECK_THAT(out, AllClose(ref_out, 1e-12, 1e-12));
    }
  }
}

TEST_CASE("decode_attention with gradients takes the tiled kernel", "[ops][decode]") {
  torch::manual_seed(5);
  auto q = torch::randn({2, 4, 2, 16}, torch::kDouble).requires_grad_();
  auto k = torch::randn({2, 2, 50, 16}, torch::kDouble).requires_grad_();
  auto v = torch::randn({2, 2, 50, 16}, torch::kDouble).requires_grad_();
  auto len = torch::tensor({30, 50}, torch::kLong);
  auto out = std::get<0>(
      torchattn::ops::decode_attention(q, k, v, len, c10::nullopt, true, 10, c10::nullopt));
  auto g = torch::randn_like(out);
  auto grads = torch::autograd::grad({out}, {q, k, v}, {g});
  Case c{2, 4, 2, 2, 50, 16, 16};
  c.window = 10;
  auto mask = dense_mask(c, len, len - 2);
  auto q2 = q.detach().requires_grad_(), k2 = k.detach().requires_grad_(),
       v2 = v.detach().requires_grad_();
  auto ref = std::get<0>(F::scaled_dot_product_attention(
      q2, k2.repeat_interleave(2, 1), v2.repeat_interleave(2, 1),
      F::ScaledDotProductAttentionFuncOptions().attn_mask(mask).need_weights(true)));
  auto ref_grads = torch::autograd::grad({ref}, {q2, k2, v2}, {g});
  CHECK_THAT(out.detach(), AllClose(ref.detach(), 1e-10, 1e-10));
  for (int i = 0; i < 3; ++i) {
    CHECK_THAT(grads[i], AllClose(ref_grads[i], 1e-10, 1e-10));
  }
  // The forward-only op itself refuses inputs that require grad.
  CHECK_THROWS_WITH(
      torchattn::ops::_decode_attention_forward(q, k, v, len, c10::nullopt, true, -1, 0.25),
      ContainsSubstring("_decode_attention_forward: query, key or value requires grad"));
}

TEST_CASE("decode_attention rejects bad input with a clear message", "[ops][decode][errors]") {
  auto q = torch::randn({2, 4, 1, 8}), k = torch::randn({2, 2, 10, 8}),
       v = torch::randn({2, 2, 10, 8});
  auto call = [&](const torch::Tensor& qq, const torch::Tensor& kk,
                  c10::optional<torch::Tensor> len, c10::optional<torch::Tensor> start,
                  int64_t window) {
    torchattn::ops::decode_attention(qq, kk, v, len, start, true, window, c10::nullopt);
  };
  CHECK_THROWS_WITH(
      call(q, k, torch::tensor({1, 2, 3}, torch::kLong), c10::nullopt, -1),
      ContainsSubstring("decode_attention: kv_lengths has shape [3] Long, expected Long [2]"));
  CHECK_THROWS_WITH(
      call(q, k, torch::tensor({1, 11}, torch::kLong), c10::nullopt, -1),
      ContainsSubstring("kv_lengths has values in [1, 11], expected lengths in [0, 10]"));
  CHECK_THROWS_WITH(
      call(q, k, torch::tensor({1.0, 2.0}), c10::nullopt, -1),
      ContainsSubstring("kv_lengths has shape [2] Float, expected Long [2]"));
  CHECK_THROWS_WITH(
      call(q, k, c10::nullopt, torch::tensor({0}, torch::kLong), -1),
      ContainsSubstring("q_start has shape [1] Long, expected Long [2]"));
  CHECK_THROWS_WITH(
      call(q, k, c10::nullopt, c10::nullopt, -2),
      ContainsSubstring("window_left is -2, expected -1 (unbounded) or a count >= 0"));
  CHECK_THROWS_WITH(
      call(torch::randn({2, 3, 1, 8}), k, c10::nullopt, c10::nullopt, -1),
      ContainsSubstring("decode_attention"));
}

TEST_CASE("decode_attention's Meta kernel gives shapes", "[ops][decode]") {
  auto meta = torch::TensorOptions().device(torch::kMeta);
  auto [out, lse] = torchattn::ops::decode_attention(
      torch::empty({2, 8, 3, 16}, meta), torch::empty({2, 2, 40, 16}, meta),
      torch::empty({2, 2, 40, 12}, meta), torch::empty({2}, meta.dtype(torch::kLong)), c10::nullopt,
      true, -1, c10::nullopt);
  CHECK(out.sizes() == torch::IntArrayRef({2, 8, 3, 12}));
  CHECK(lse.sizes() == torch::IntArrayRef({2, 8, 3}));
}
