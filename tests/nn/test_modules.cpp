// Module behaviour: serialization round trips, pretty_print, use inside containers, clone,
// parameter registration.

#include <torchattn/torchattn.h>

#include "support/modules.h"
#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>

#include <sstream>

namespace {
namespace tnn = torchattn::nn;
using torchattn::testing::AllClose;
} // namespace

TEST_CASE("modules survive a torch::save / torch::load round trip", "[nn][serialize]") {
  torch::manual_seed(6);
  auto q = torch::randn({2, 3, 4, 6});
  auto k = torch::randn({2, 3, 5, 6});
  auto v = torch::randn({2, 3, 5, 2});
  auto saved = torchattn::testing::all_modules(6, 3, torch::kFloat);
  auto fresh = torchattn::testing::all_modules(6, 3, torch::kFloat);
  for (size_t i = 0; i < saved.size(); ++i) {
    DYNAMIC_SECTION(saved[i].name) {
      // Make the saved module's state differ from a fresh module's, buffers included.
      torch::NoGradGuard no_grad;
      for (auto& p : saved[i].module.ptr()->parameters()) {
        p.add_(0.25);
      }
      std::stringstream stream;
      torch::serialize::OutputArchive out;
      saved[i].module.ptr()->save(out);
      out.save_to(stream);
      torch::serialize::InputArchive in;
      in.load_from(stream);
      fresh[i].module.ptr()->load(in);

      auto a = saved[i].module.ptr()->named_parameters();
      auto b = fresh[i].module.ptr()->named_parameters();
      REQUIRE(a.size() == b.size());
      for (const auto& p : a) {
        CHECK(torch::equal(p.value(), b[p.key()]));
      }
      auto [oa, wa] = saved[i](q, k, v);
      auto [ob, wb] = fresh[i](q, k, v);
      CHECK_THAT(ob, AllClose(oa, 0, 0));
    }
  }
}

TEST_CASE("torch::save and torch::load work on module holders", "[nn][serialize]") {
  tnn::CosineAttention a(tnn::CosineAttentionOptions().num_heads(2).temperature(7));
  tnn::CosineAttention b(tnn::CosineAttentionOptions().num_heads(2));
  std::stringstream stream;
  torch::save(a, stream);
  torch::load(b, stream);
  CHECK_THAT(b->temperature(), AllClose(torch::full({2, 1, 1}, 7.0), 1e-6, 0));
}

TEST_CASE("pretty_print names the module and its options", "[nn][print]") {
  auto print = [](const torch::nn::Module& m) {
    std::ostringstream s;
    m.pretty_print(s);
    return s.str();
  };
  CHECK(print(*tnn::DotProductAttention()) == "torchattn::nn::DotProductAttention(dropout=0)");
  CHECK(
      print(*tnn::ScaledDotProductAttention(tnn::ScaledDotProductAttentionOptions().dropout(
          0.1))) == "torchattn::nn::ScaledDotProductAttention(dropout=0.1, scale=None)");
  CHECK(
      print(*tnn::ScaledDotProductAttention(tnn::ScaledDotProductAttentionOptions().scale(0.5))) ==
      "torchattn::nn::ScaledDotProductAttention(dropout=0, scale=0.5)");
  CHECK(
      print(*tnn::CosineAttention(
          tnn::CosineAttentionOptions().num_heads(8).learnable(true).max_temperature(100))) ==
      "torchattn::nn::CosineAttention(temperature=10, learnable=true, num_heads=8, "
      "max_temperature=100, eps=1e-12, dropout=0)");
  CHECK(
      print(*tnn::AdditiveAttention(tnn::AdditiveAttentionOptions(16, 32, 8).bias(false))) ==
      "torchattn::nn::AdditiveAttention(query_dim=16, key_dim=32, hidden_dim=8, bias=false, "
      "dropout=0)");
  CHECK(
      print(*tnn::GeneralAttention(16, 32)) ==
      "torchattn::nn::GeneralAttention(query_dim=16, key_dim=32, dropout=0)");
  // Submodules print through torch's usual tree.
  std::ostringstream tree;
  tree << *tnn::AdditiveAttention(2, 3, 4);
  CHECK(
      tree.str().find(
          "(query_proj): torch::nn::Linear(in_features=2, out_features=4, bias=true)") !=
      std::string::npos);
}

TEST_CASE("modules register their parameters under stable names", "[nn]") {
  auto names = [](const torch::nn::Module& m) {
    std::vector<std::string> out;
    for (const auto& p : m.named_parameters())
      out.push_back(p.key());
    return out;
  };
  CHECK(names(*tnn::DotProductAttention()).empty());
  CHECK(names(*tnn::ScaledDotProductAttention()).empty());
  CHECK(
      names(*tnn::CosineAttention(tnn::CosineAttentionOptions().learnable(true))) ==
      std::vector<std::string>{"logit_scale"});
  tnn::CosineAttention fixed;
  CHECK(names(*fixed).empty());
  CHECK(fixed->named_buffers().contains("logit_scale"));
  CHECK(
      names(*tnn::AdditiveAttention(2, 3, 4)) == std::vector<std::string>{
                                                     "query_proj.weight", "query_proj.bias",
                                                     "key_proj.weight", "key_proj.bias",
                                                     "score_proj.weight", "score_proj.bias"});
  CHECK(
      names(*tnn::AdditiveAttention(tnn::AdditiveAttentionOptions(2, 3, 4).bias(false))) ==
      std::vector<std::string>{"query_proj.weight", "key_proj.weight", "score_proj.weight"});
  CHECK(names(*tnn::GeneralAttention(2, 3)) == std::vector<std::string>{"weight"});
  tnn::GeneralAttention general(2, 3);
  CHECK(general->weight.sizes() == torch::IntArrayRef({2, 3}));
  const double bound = 1.0 / std::sqrt(3.0);
  CHECK(general->weight.abs().max().item<double>() <= bound);
}

TEST_CASE("modules work in torch::nn::Sequential and AnyModule with three arguments", "[nn]") {
  auto q = torch::randn({2, 4, 6});
  torch::nn::AnyModule any(tnn::ScaledDotProductAttention{});
  auto [out, w] = any.forward<std::tuple<torch::Tensor, torch::Tensor>>(q, q, q);
  CHECK(out.sizes() == q.sizes());
  CHECK_FALSE(w.defined());
  torch::nn::Sequential seq(tnn::GeneralAttention(6, 6));
  auto [out2, w2] = seq->forward<std::tuple<torch::Tensor, torch::Tensor>>(q, q, q);
  CHECK(out2.sizes() == q.sizes());
}

TEST_CASE("clone() gives an independent deep copy", "[nn]") {
  tnn::AdditiveAttention a(3, 3, 4);
  auto b = std::dynamic_pointer_cast<tnn::AdditiveAttentionImpl>(a->clone());
  REQUIRE(b);
  CHECK(torch::equal(a->query_proj->weight, b->query_proj->weight));
  torch::NoGradGuard no_grad;
  b->query_proj->weight.add_(1);
  CHECK_FALSE(torch::equal(a->query_proj->weight, b->query_proj->weight));
}

TEST_CASE("modules train: a gradient step lowers the loss", "[nn]") {
  torch::manual_seed(7);
  for (auto& m : torchattn::testing::all_modules(4, 1, torch::kFloat)) {
    auto params = m.module.ptr()->parameters();
    if (params.empty()) {
      continue;
    }
    DYNAMIC_SECTION(m.name) {
      auto q = torch::randn({8, 5, 4}), k = torch::randn({8, 6, 4}), v = torch::randn({8, 6, 3});
      auto target = torch::randn({8, 5, 3});
      torch::optim::SGD opt(params, 0.5);
      auto loss_of = [&] { return (std::get<0>(m(q, k, v)) - target).pow(2).mean(); };
      const double before = loss_of().item<double>();
      for (int i = 0; i < 20; ++i) {
        opt.zero_grad();
        loss_of().backward();
        opt.step();
      }
      CHECK(loss_of().item<double>() < before);
    }
  }
}
