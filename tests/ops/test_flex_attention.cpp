// flex_attention's fused kernel against its math path, on every vector build this CPU runs: a
// randomised sweep of modifier combinations, shapes (Lq != Lk, ragged and empty documents,
// windows wider than the sequence), strides and dtypes, comparing the output, the LSE and
// every gradient (query, key, value, bias, position table, ALiBi slopes). The math path is
// itself checked against PyTorch's flex_attention in test_flex_reference.cpp.
//
// FlashAttention's rule sets the tolerance: against the math path in float64, the fused
// error may be at most 2x the math path's own error in the same dtype, plus a floor of
// 1e-5 (float32, as test_flash_edges allows) or 1e-12 (float64) of the largest element (for
// the table's and the slopes' gradients, of the sum of their terms' magnitudes).

#include <torchattn/torchattn.h>

#include "support/capabilities.h"

#include <catch2/catch_test_macros.hpp>

#include <torch/torch.h>

#include <fmt/format.h>

#include <random>
#include <string>
#include <vector>

namespace {

namespace F = torchattn::nn::functional;

/// One random case: shapes, modifiers and layouts.
struct Case {
  int64_t B, H, Hkv, Lq, Lk, E, Ev;
  F::FlexAttentionFuncOptions options;
  bool bias = false, table = false, alibi = false;
  std::vector<int64_t> bias_shape;
  bool transposed = false; // q, k, v as [B, L, H, E] memory viewed as [B, H, L, E]
  std::string description;
};

/// Sorted document ids for L tokens: `docs` documents of random (possibly zero) lengths.
torch::Tensor ragged_docs(std::mt19937& rng, int64_t L, int64_t docs) {
  std::vector<int64_t> ids(static_cast<size_t>(L));
  std::uniform_int_distribution<int64_t> pick(0, docs - 1);
  for (auto& id : ids) {
    id = pick(rng);
  }
  std::sort(ids.begin(), ids.end());
  return torch::tensor(ids, torch::kLong);
}

Case random_case(std::mt19937& rng, int index) {
  auto uni = [&](int64_t lo, int64_t hi) {
    return std::uniform_int_distribution<int64_t>(lo, hi)(rng);
  };
  auto coin = [&](double p) { return std::bernoulli_distribution(p)(rng); };
  Case c;
  c.B = uni(1, 2);
  c.Hkv = uni(1, 2);
  c.H = c.Hkv * (coin(0.3) ? uni(2, 3) : 1);
  c.Lq = uni(1, 300);
  c.Lk = coin(0.5) ? c.Lq : uni(1, 400);
  c.E = uni(1, 40);
  c.Ev = coin(0.5) ? c.E : uni(1, 24);
  c.transposed = coin(0.3);
  auto& o = c.options;
  o.enable_gqa(c.H != c.Hkv);
  std::string d = fmt::format(
      "#{} B={} H={} Hkv={} Lq={} Lk={} E={} Ev={}{}", index, c.B, c.H, c.Hkv, c.Lq, c.Lk, c.E,
      c.Ev, c.transposed ? " strided" : "");
  const int causal = static_cast<int>(uni(0, 2));
  if (causal > 0) {
    o.causal(causal == 1 ? "top_left" : "bottom_right");
    d += " causal=" + o.causal();
    if (coin(0.2)) {
      o.prefix_lengths(torch::randint(0, c.Lk + 1, {c.B}, torch::kLong));
      d += " prefix";
    }
  }
  if (coin(0.3)) {
    o.window_left(uni(0, 1) ? uni(0, 64) : uni(0, 600)); // sometimes wider than the sequence
    d += fmt::format(" window_left={}", o.window_left());
  }
  if (coin(0.2)) {
    o.window_right(uni(0, 80));
    d += fmt::format(" window_right={}", o.window_right());
  }
  if (coin(0.3)) {
    const int64_t docs = uni(1, 6);
    std::vector<torch::Tensor> q, k;
    for (int64_t b = 0; b < c.B; ++b) {
      q.push_back(ragged_docs(rng, c.Lq, docs));
      k.push_back(ragged_docs(rng, c.Lk, docs));
    }
    o.q_doc_ids(torch::stack(q));
    o.kv_doc_ids(torch::stack(k));
    d += fmt::format(" docs={}", docs);
  }
  if (coin(0.15)) {
    // A random mask_mod over 16-token blocks: some blocks empty, some full, some striped.
    const int64_t seed = uni(0, 1 << 20);
    const int64_t bs = uni(0, 1) ? 16 : 128;
    auto mod = [seed](int64_t b, int64_t h, int64_t q, int64_t kv) {
      const int64_t cell = ((q / 16) * 7919 + (kv / 16) * 104729 + seed + b * 31 + h * 17) % 5;
      return cell == 0 ? false : cell == 1 ? ((q + kv) % 3 != 0) : true;
    };
    o.block_mask(F::create_block_mask(mod, c.B, uni(0, 1) ? c.H : 1, c.Lq, c.Lk, bs));
    d += fmt::format(" block_mask={}", bs);
  }
  if (coin(0.2)) {
    if (coin(0.5)) {
      o.attn_mask(torch::rand({c.Lq, c.Lk}).gt(0.2));
      d += " bool_mask";
    } else {
      o.attn_mask(torch::randn({c.B, 1, c.Lq, c.Lk}));
      d += " additive_mask";
    }
  }
  if (coin(0.3)) {
    c.bias = true;
    const std::vector<std::vector<int64_t>> shapes{
        {c.B, c.H, c.Lq, c.Lk}, {1, c.H, c.Lq, c.Lk}, {c.Lq, c.Lk}, {c.B, 1, 1, c.Lk}};
    c.bias_shape = shapes[static_cast<size_t>(uni(0, 3))];
    d += " bias" + fmt::format("{}", fmt::join(c.bias_shape, "x"));
  }
  if (coin(0.3)) {
    c.alibi = true;
    d += " alibi";
  }
  if (coin(0.3)) {
    c.table = true;
    if (coin(0.5)) {
      o.position_buckets(F::t5_position_buckets(c.Lq, c.Lk, 32, 128, coin(0.7)));
      o.position_bias(torch::randn({c.H, 32}));
      d += " t5_table";
    } else {
      const int64_t md = uni(1, 40);
      o.position_buckets(F::clipped_position_buckets(c.Lq, c.Lk, md));
      o.position_bias(torch::randn({c.H, 2 * md + 1}));
      d += " clipped_table";
    }
  }
  if (coin(0.3)) {
    o.softcap(uni(0, 1) ? 1.0 + uni(0, 20) : 0.5);
    d += fmt::format(" softcap={}", o.softcap());
  }
  if (coin(0.2)) {
    o.scale(uni(0, 1) ? 2.0 : 0.01);
    d += fmt::format(" scale={}", *o.scale());
  }
  c.description = d;
  return c;
}

/// Output, lse and the gradients of q, k, v, bias, table and slopes (undefined when absent).
using Result = std::vector<torch::Tensor>;

/// `probe`: a zero [B, H, Lq, Lk] added to the bias, whose gradient (dS itself) is returned
/// last, for the conditioning of the reduced gradients.
Result run(
    const Case& c, const std::vector<torch::Tensor>& inputs, torch::ScalarType dtype, bool fused,
    bool probe = false) {
  auto leaf = [&](const torch::Tensor& t) {
    return t.defined() ? t.to(dtype).detach().requires_grad_(true) : t;
  };
  auto layout = [&](const torch::Tensor& t) {
    // [B, H, L, E] values stored as [B, L, H, E]: strided heads and rows.
    return c.transposed ? t.transpose(1, 2).contiguous().transpose(1, 2) : t;
  };
  auto q = leaf(layout(inputs[0])), k = leaf(layout(inputs[1])), v = leaf(layout(inputs[2]));
  auto bias = leaf(inputs[3]), table = leaf(inputs[4]), alibi = leaf(inputs[5]);
  auto o = c.options;
  if (o.attn_mask().defined() && o.attn_mask().is_floating_point()) {
    o.attn_mask(o.attn_mask().to(dtype));
  }
  auto zero =
      probe ? torch::zeros({c.B, c.H, c.Lq, c.Lk}, dtype).requires_grad_(true) : torch::Tensor();
  auto total_bias = probe ? (bias.defined() ? bias + zero : zero) : bias;
  o.bias(total_bias).position_bias(table).alibi_slopes(alibi).need_weights(!fused);
  auto r = F::flex_attention(q, k, v, o);
  std::vector<torch::Tensor> wrt{q, k, v};
  for (const auto& t : {bias, table, alibi, zero}) {
    if (t.defined()) {
      wrt.push_back(t);
    }
  }
  auto grad = inputs[6].to(dtype);
  auto g = torch::autograd::grad({r.output}, wrt, {grad});
  Result out{r.output.detach(), r.lse.detach(), g[0], g[1], g[2]};
  size_t next = 3;
  for (const auto& t : {bias, table, alibi, zero}) {
    out.push_back(t.defined() ? g[next++] : torch::Tensor());
  }
  return out;
}

double max_abs(const torch::Tensor& t) {
  auto f = t.to(torch::kDouble).masked_fill(t.to(torch::kDouble).isinf(), 0.0);
  return t.numel() == 0 ? 0.0 : f.abs().max().item<double>();
}

/// |a - b| with -inf == -inf counted as 0.
double max_diff(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.numel() == 0) {
    return 0.0;
  }
  auto x = a.to(torch::kDouble), y = b.to(torch::kDouble);
  auto both_inf = x.isinf().logical_and(y.isinf()).logical_and(x.eq(y));
  return (x - y).abs().masked_fill(both_inf, 0.0).max().item<double>();
}

constexpr const char* kNames[] = {"output",     "lse",       "grad_query", "grad_key",
                                  "grad_value", "grad_bias", "grad_table", "grad_alibi"};

void check_case(const Case& c, torch::ScalarType dtype) {
  std::vector<torch::Tensor> inputs{
      torch::randn({c.B, c.H, c.Lq, c.E}, torch::kDouble),
      torch::randn({c.B, c.Hkv, c.Lk, c.E}, torch::kDouble),
      torch::randn({c.B, c.Hkv, c.Lk, c.Ev}, torch::kDouble),
      c.bias ? torch::randn(c.bias_shape, torch::kDouble) : torch::Tensor(),
      c.table ? c.options.position_bias().to(torch::kDouble) : torch::Tensor(),
      c.alibi ? torch::rand({c.H}, torch::kDouble) * 0.5 : torch::Tensor(),
      torch::randn({c.B, c.H, c.Lq, c.Ev}, torch::kDouble)};
  const auto fused = run(c, inputs, dtype, /*fused=*/true);
  const auto math = run(c, inputs, dtype, /*fused=*/false);
  const auto exact = run(c, inputs, torch::kDouble, /*fused=*/false, /*probe=*/true);
  const double floor = dtype == torch::kFloat ? 1e-5 : 1e-12;
  // The table's and the slopes' gradients are sums of dS (times j - i) over whole diagonals,
  // whose terms cancel (each row of dS sums to 0): their rounding error scales with the sum
  // of the terms' magnitudes, not with the result.
  const auto& ds = exact.back();
  auto d = (torch::arange(c.Lk, torch::kDouble).view({1, -1}) -
            torch::arange(c.Lq, torch::kDouble).view({-1, 1}))
               .abs();
  const double cond_table = ds.defined() ? ds.abs().sum().item<double>() : 0.0;
  const double cond_alibi = ds.defined() ? (ds.abs() * d).sum().item<double>() : 0.0;
  for (size_t i = 0; i + 1 < fused.size(); ++i) {
    if (!exact[i].defined()) {
      continue;
    }
    INFO(c.description << " dtype=" << dtype << " " << kNames[i]);
    REQUIRE(fused[i].defined());
    // Rows with no key: zero output and gradients, never NaN.
    REQUIRE_FALSE(fused[i].isnan().any().item<bool>());
    const double err = max_diff(fused[i], exact[i]);
    const double scale = i == 6 ? cond_table : i == 7 ? cond_alibi : 0.0;
    const double allowed =
        2 * max_diff(math[i], exact[i]) + floor * (1 + std::max(max_abs(exact[i]), scale));
    INFO("fused error " << err << ", allowed " << allowed);
    CHECK(err <= allowed);
  }
}

void sweep(int cases, unsigned seed) {
  torchattn::testing::CapabilityGuard guard;
  const auto caps = torchattn::testing::capabilities();
  std::mt19937 rng(seed);
  torch::manual_seed(seed);
  for (int i = 0; i < cases; ++i) {
    const auto c = random_case(rng, i);
    torchattn::ops::set_kernel_capability(caps[static_cast<size_t>(i) % caps.size()]);
    const auto dtype = i % 2 == 0 ? torch::kFloat : torch::kDouble;
    INFO("build " << torchattn::ops::kernel_capability());
    check_case(c, dtype);
  }
}

} // namespace

TEST_CASE(
    "flex_attention: fused equals the math path over 520 random modifier combinations",
    "[ops][flex]") {
  sweep(520, 16);
}

TEST_CASE(
    "flex_attention: fused equals the math path over 3000 more combinations",
    "[ops][flex][.slow]") {
  sweep(3000, 1616);
}
