// flex_attention against PyTorch 2.6's own flex_attention: tests/reference/flex.pt, made by
// tests/reference/make_flex_reference.py in the LibTorch 2.6 chroot, one case per modifier
// (ALiBi, soft-cap, bias, T5 and clipped position tables, sliding window, documents,
// prefix-LM, both causal alignments, GQA, and a combination), in float64 and float32. The
// fused op and the math path each match its output, lse and every gradient, on every vector
// build this CPU runs; the block-mask form of each mask matches too.

#include <torchattn/torchattn.h>

#include "support/capabilities.h"
#include "support/reference.h"
#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>

#include <cmath>
#include <iostream>
#include <map>

namespace {

namespace F = torchattn::nn::functional;
using torchattn::testing::AllClose;

/// The options of a reference case: the modifiers it names, with its learnable tensors as
/// leaves that require grad (returned in `learn`, in the file's gradient order).
F::FlexAttentionFuncOptions case_options(
    const torchattn::testing::ReferenceCase& c, std::map<std::string, torch::Tensor>& learn) {
  F::FlexAttentionFuncOptions o;
  o.causal(c.str("causal")).window_left(c.integer("window_left")).softcap(c.real("softcap"));
  o.enable_gqa(c.flag("enable_gqa"));
  for (const char* name : {"bias", "position_bias", "alibi_slopes"}) {
    if (c.has(name)) {
      learn[name] = c.get(name).clone().requires_grad_(true);
    }
  }
  if (learn.count("bias")) {
    o.bias(learn["bias"]);
  }
  if (learn.count("position_bias")) {
    o.position_bias(learn["position_bias"]).position_buckets(c.get("position_buckets"));
  }
  if (learn.count("alibi_slopes")) {
    o.alibi_slopes(learn["alibi_slopes"]);
  }
  if (c.has("q_doc_ids")) {
    o.q_doc_ids(c.get("q_doc_ids")).kv_doc_ids(c.get("kv_doc_ids"));
  }
  if (c.has("prefix_lengths")) {
    o.prefix_lengths(c.get("prefix_lengths"));
  }
  return o;
}

/// The same mask as a BlockMask from a C++ mask_mod (blocks of 32), replacing the built-in
/// mask modifiers.
F::FlexAttentionFuncOptions as_block_mask(
    F::FlexAttentionFuncOptions o, const torch::Tensor& q, const torch::Tensor& k) {
  const int64_t B = q.size(0), Lq = q.size(2), Lk = k.size(2);
  const std::string causal = o.causal();
  const int64_t off = causal == "bottom_right" ? Lk - Lq : 0, wl = o.window_left();
  auto docs_q = o.q_doc_ids(), docs_k = o.kv_doc_ids(), prefix = o.prefix_lengths();
  auto mod = [=](int64_t b, int64_t, int64_t i, int64_t j) {
    bool ok = true;
    if (causal != "none") {
      ok = j <= i + off || (prefix.defined() && j < prefix[b].item<int64_t>());
    }
    if (wl >= 0) {
      ok = ok && j >= i + off - wl;
    }
    if (docs_q.defined()) {
      ok = ok && docs_q[b][i].item<int64_t>() == docs_k[b][j].item<int64_t>();
    }
    return ok;
  };
  o.block_mask(F::create_block_mask(mod, B, 1, Lq, Lk, 32));
  o.causal("none").window_left(-1).q_doc_ids({}).kv_doc_ids({}).prefix_lengths({});
  return o;
}

enum class Form { Fused, Math, BlockMask };

} // namespace

TEST_CASE("flex_attention matches PyTorch 2.6's flex_attention", "[ops][flex][reference]") {
  const auto& ref = torchattn::testing::reference("flex.pt");
  REQUIRE(ref.torch_version.rfind("2.", 0) == 0);
  REQUIRE(ref.cases.size() >= 24);
  std::map<torch::ScalarType, double> worst;
  torchattn::testing::CapabilityGuard guard;
  for (const auto& cap : torchattn::testing::capabilities()) {
    torchattn::ops::set_kernel_capability(cap);
    for (const auto& c : ref.cases) {
      for (Form form : {Form::Fused, Form::Math, Form::BlockMask}) {
        const char* form_name = form == Form::Fused  ? "fused"
                                : form == Form::Math ? "math"
                                                     : "block mask";
        INFO(
            c.name << " " << form_name << " build " << cap << " (torch " << ref.torch_version
                   << ")");
        const auto dtype = c.get("query").scalar_type();
        const double tol = torchattn::testing::tolerance(dtype);
        auto q = c.get("query").clone().requires_grad_(true);
        auto k = c.get("key").clone().requires_grad_(true);
        auto v = c.get("value").clone().requires_grad_(true);
        std::map<std::string, torch::Tensor> learn;
        auto o = case_options(c, learn);
        if (form == Form::Math) {
          o.need_weights(true);
        } else if (form == Form::BlockMask) {
          o = as_block_mask(o, q, k);
        }
        auto r = F::flex_attention(q, k, v, o);
        CHECK_THAT(r.output, AllClose(c.get("output"), tol, tol));
        CHECK_THAT(r.lse, AllClose(c.get("lse"), tol, tol));
        (r.output * c.get("grad_output")).sum().backward();
        std::map<std::string, torch::Tensor> got{
            {"query", q.grad()}, {"key", k.grad()}, {"value", v.grad()}};
        for (const auto& [name, t] : learn) {
          got[name] = t.grad();
        }
        for (const auto& [name, g] : got) {
          INFO("grad of " << name);
          const auto expected = c.get("grads." + name);
          // The table's and the slopes' gradients sum many terms: relative tolerance.
          // The slopes' and the table's gradients sum Lq·Lk·B terms that cancel: their
          // rounding grows with the square root of the count.
          const bool reduced = name == "alibi_slopes" || name == "position_bias";
          const double scale =
              (1.0 + expected.abs().max().item<double>()) *
              (reduced ? std::sqrt(double(q.size(0) * q.size(2) * k.size(2))) : 1.0);
          CHECK_THAT(g, AllClose(expected, tol, tol * scale));
          worst[dtype] = std::max(worst[dtype], (g - expected).abs().max().item<double>() / scale);
        }
        worst[dtype] =
            std::max(worst[dtype], (r.output - c.get("output")).abs().max().item<double>());
      }
    }
  }
  std::cout << "flex_attention: " << ref.cases.size() << " cases from torch " << ref.torch_version
            << " x fused, math and block-mask forms, worst error float64 " << worst[torch::kDouble]
            << ", float32 " << worst[torch::kFloat] << "\n";
}
