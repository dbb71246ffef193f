// TorchScript interop: models made by real PyTorch (tests/reference/torchscript, made by
// tests/reference/make_torchscript.py) run next to torchattn modules that take their weights.

#include <torchattn/jit/state_dict.h>
#include <torchattn/torchattn.h>

#include "support/tensor_matchers.h"

#include <catch2/catch_test_macros.hpp>
#include <catch2/matchers/catch_matchers_string.hpp>

#include <torch/script.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#ifdef TORCHATTN_HAS_TRANSLATION_EXAMPLE
#include <model.h>
#endif

using Catch::Matchers::ContainsSubstring;
using torchattn::testing::AllClose;
namespace tnn = torchattn::nn;

namespace {

std::string ts_file(const std::string& name) {
  return std::string(TORCHATTN_REFERENCE_DIR) + "/torchscript/" + name;
}

struct TempPath {
  std::string path;
  explicit TempPath(const std::string& name)
      : path((std::filesystem::temp_directory_path() / ("torchattn_jit_" + name)).string()) {}
  ~TempPath() { std::filesystem::remove(path); }
};

} // namespace

TEST_CASE("a scripted nn.MultiheadAttention loads into MultiheadAttention and agrees", "[jit]") {
  auto scripted = torchattn::jit::load_torchscript(ts_file("mha_scripted.pt"));
  scripted.eval();
  tnn::MultiheadAttention mha(tnn::MultiheadAttentionOptions(16, 4).batch_first(true));
  mha->eval();
  const auto report = torchattn::jit::load_state_dict(*mha, scripted);
  CHECK(report.ok());
  CHECK(report.loaded.size() == 4); // in_proj_weight, in_proj_bias, out_proj.weight, out_proj.bias
  torch::manual_seed(7);
  auto q = torch::randn({3, 6, 16}), kv = torch::randn({3, 9, 16});
  auto pad = torch::zeros({3, 9}, torch::kBool);
  pad[2].narrow(0, 4, 5).fill_(true);
  auto ref = scripted.forward({q, kv, kv, pad}).toTuple()->elements();
  auto [out, w] = mha->forward(q, kv, kv, pad, /*need_weights=*/true);
  CHECK_THAT(out, AllClose(ref[0].toTensor(), 1e-6, 1e-6));
  CHECK_THAT(w, AllClose(ref[1].toTensor(), 1e-6, 1e-6));
  auto [fast, none] = mha->forward(q, kv, kv, pad, /*need_weights=*/false);
  CHECK_THAT(fast, AllClose(ref[0].toTensor(), 1e-6, 1e-6));
}

TEST_CASE("a traced nn.MultiheadAttention with kdim and vdim loads under a prefix", "[jit]") {
  auto traced = torchattn::jit::load_torchscript(ts_file("mha_traced.pt"));
  tnn::MultiheadAttention mha(
      tnn::MultiheadAttentionOptions(16, 2).kdim(12).vdim(10).batch_first(true));
  mha->eval();
  CHECK_THROWS_WITH(
      torchattn::jit::load_state_dict(*mha, traced), ContainsSubstring("unexpected (6): attn."));
  const auto report = torchattn::jit::load_state_dict(*mha, traced, "attn.");
  CHECK(report.ok());
  torch::manual_seed(8);
  auto q = torch::randn({2, 5, 16}), k = torch::randn({2, 7, 12}), v = torch::randn({2, 7, 10});
  auto pad = torch::zeros({2, 7}, torch::kBool);
  pad[1].narrow(0, 5, 2).fill_(true);
  auto ref = traced.forward({q, k, v, pad}).toTensor();
  auto [out, w] = mha->forward(q, k, v, pad, /*need_weights=*/false);
  CHECK_THAT(out, AllClose(ref, 1e-6, 1e-6));
}

TEST_CASE("a scripted model calling torchattn's op runs from C++", "[jit][ops]") {
  auto m = torchattn::jit::load_torchscript(ts_file("op_model.pt"));
  torch::manual_seed(9);
  auto x = torch::randn({2, 70, 16}); // 70 x 70 scores: the fused kernel
  auto out = m.forward({x}).toTensor();
  // The same computation by hand from the model's weights, with the math path.
  auto params = m.named_parameters();
  std::map<std::string, torch::Tensor> p;
  for (const auto& item : params)
    p[item.name] = item.value;
  auto qkv = torch::linear(x, p["qkv.weight"], p["qkv.bias"])
                 .view({2, 70, 3, 2, 8})
                 .permute({2, 0, 3, 1, 4});
  namespace F = tnn::functional;
  auto [y, w] = F::scaled_dot_product_attention(
      qkv[0], qkv[1], qkv[2],
      F::ScaledDotProductAttentionFuncOptions().is_causal(true).need_weights(true));
  auto expected =
      torch::linear(y.transpose(1, 2).reshape({2, 70, 16}), p["out.weight"], p["out.bias"]);
  CHECK_THAT(out, AllClose(expected, 1e-6, 1e-6));
}

#ifdef TORCHATTN_HAS_TRANSLATION_EXAMPLE
TEST_CASE(
    "the Python GRU seq2seq model loads into the translation example's model",
    "[jit][translation]") {
  auto traced = torchattn::jit::load_torchscript(ts_file("seq2seq_gru.pt"));
  translate::ModelOptions o;
  o.kind = "gru";
  o.attention = "additive";
  o.src_vocab = 40;
  o.tgt_vocab = 50;
  o.embed_dim = 16;
  o.hidden_dim = 16;
  auto model = translate::make_model(o);
  model->eval();
  const auto report = torchattn::jit::load_state_dict(*model, traced);
  CHECK(report.ok());
  torch::manual_seed(10);
  auto src = torch::randint(4, 40, {3, 6}, torch::kLong);
  src[1].narrow(0, 4, 2).fill_(0);
  src[2].narrow(0, 2, 4).fill_(0);
  auto tgt = torch::randint(4, 50, {3, 5}, torch::kLong);
  auto ref = traced.forward({src, src.eq(0), tgt}).toTensor();
  torch::NoGradGuard no_grad;
  CHECK_THAT(model->forward(src, src.eq(0), tgt), AllClose(ref, 1e-6, 1e-6));
}
#endif

TEST_CASE("strict loading lists every missing, unexpected and mismatched name", "[jit][errors]") {
  auto scripted = torchattn::jit::load_torchscript(ts_file("mha_scripted.pt"));
  // No bias: in_proj_bias and out_proj.bias are unexpected. kdim 8: separate q/k/v weights.
  tnn::MultiheadAttention other(tnn::MultiheadAttentionOptions(16, 4).bias(false).kdim(8));
  try {
    torchattn::jit::load_state_dict(*other, scripted);
    FAIL("no error");
  } catch (const c10::Error& e) {
    const std::string msg = e.what_without_backtrace();
    CHECK_THAT(msg, ContainsSubstring("missing (3): k_proj_weight, q_proj_weight, v_proj_weight"));
    CHECK_THAT(
        msg, ContainsSubstring("unexpected (3): in_proj_bias, in_proj_weight, out_proj.bias"));
    CHECK_THAT(msg, !ContainsSubstring("mismatched"));
  }
  tnn::MultiheadAttention wider(tnn::MultiheadAttentionOptions(32, 4));
  CHECK_THROWS_WITH(
      torchattn::jit::load_state_dict(*wider, scripted),
      ContainsSubstring("mismatched (4): in_proj_bias: expected [96] float, got [48] float"));
  // Nothing is copied by a failed strict load; non-strict copies what matches and reports.
  const auto before = other->out_proj->weight.clone();
  CHECK_THROWS(torchattn::jit::load_state_dict(*other, scripted));
  CHECK(torch::equal(before, other->out_proj->weight));
  const auto report = torchattn::jit::load_state_dict(*other, scripted, "", /*strict=*/false);
  CHECK(report.loaded == std::vector<std::string>{"out_proj.weight"});
  CHECK(report.missing.size() == 3);
  CHECK_FALSE(torch::equal(before, other->out_proj->weight));
  tnn::MultiheadAttention doubles(tnn::MultiheadAttentionOptions(16, 4));
  doubles->to(torch::kDouble);
  CHECK_THROWS_WITH(
      torchattn::jit::load_state_dict(*doubles, scripted),
      ContainsSubstring("out_proj.weight: expected [16, 16] double, got [16, 16] float"));
}

TEST_CASE("bad TorchScript files give clear errors", "[jit][errors]") {
  tnn::MultiheadAttention mha(tnn::MultiheadAttentionOptions(16, 4));
  CHECK_THROWS_WITH(
      torchattn::jit::load_state_dict(*mha, "/nonexistent/model.pt"),
      ContainsSubstring("does not exist"));
  TempPath text("not_an_archive.pt");
  std::ofstream(text.path) << "this is not a zip file";
  CHECK_THROWS_WITH(
      torchattn::jit::load_torchscript(text.path),
      ContainsSubstring("is not a TorchScript archive"));
  TempPath truncated("truncated.pt");
  {
    std::ifstream in(ts_file("mha_scripted.pt"), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::ofstream(truncated.path, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  }
  CHECK_THROWS_WITH(
      torchattn::jit::load_torchscript(truncated.path), ContainsSubstring("cannot load"));
}

TEST_CASE("save_state_dict writes a TorchScript module with the same names and tensors", "[jit]") {
  torch::manual_seed(11);
  tnn::MultiheadAttention mha(tnn::MultiheadAttentionOptions(16, 4).add_bias_kv(true));
  TempPath path("saved.pt");
  torchattn::jit::save_state_dict(*mha, path.path);
  auto loaded = torch::jit::load(path.path);
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& p : loaded.named_parameters())
    tensors[p.name] = p.value;
  const auto params = mha->named_parameters();
  CHECK(tensors.size() == params.size());
  for (const auto& item : params) {
    INFO(item.key());
    REQUIRE(tensors.count(item.key()) == 1);
    CHECK(torch::equal(tensors[item.key()], item.value()));
  }
  // And back: a round trip through the file.
  tnn::MultiheadAttention copy(tnn::MultiheadAttentionOptions(16, 4).add_bias_kv(true));
  CHECK(torchattn::jit::load_state_dict(*copy, path.path).ok());
  CHECK(torch::equal(copy->in_proj_weight, mha->in_proj_weight));
  // Nested modules and list indices keep their dotted names (encoder.0.weight).
  torch::nn::Sequential seq(
      torch::nn::Linear(3, 4), torch::nn::LayerNorm(torch::nn::LayerNormOptions({4})));
  torchattn::jit::save_state_dict(*seq, path.path);
  std::set<std::string> names;
  for (const auto& p : torch::jit::load(path.path).named_parameters())
    names.insert(p.name);
  CHECK(names == std::set<std::string>{"0.weight", "0.bias", "1.weight", "1.bias"});
}

TEST_CASE("the names before torchattn::jit still work, deprecated", "[jit]") {
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  auto scripted = torchattn::load_torchscript(ts_file("mha_scripted.pt"));
  torchattn::nn::MultiheadAttention mha(torchattn::nn::MultiheadAttentionOptions(16, 4));
  torchattn::StateDictReport report = torchattn::load_state_dict(*mha, scripted);
#pragma GCC diagnostic pop
  CHECK(report.ok());
  CHECK(report.loaded.size() == mha->named_parameters().size());
}
