#pragma once

// One instance of every attention module, for tests that hold for all of them.

#include <torchattn/torchattn.h>

#include <string>
#include <vector>

namespace torchattn::testing {

struct NamedModule {
  std::string name;
  torch::nn::AnyModule module;

  std::tuple<torch::Tensor, torch::Tensor> operator()(
      const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
      const torch::Tensor& attn_mask = {}, const torch::Tensor& key_padding_mask = {},
      bool is_causal = false) {
    return module.forward<std::tuple<torch::Tensor, torch::Tensor>>(
        q, k, v, attn_mask, key_padding_mask, /*need_weights=*/true, is_causal);
  }
};

/// Every module for inputs with feature size e and `heads` at dim -3, in `dtype`.
inline std::vector<NamedModule> all_modules(
    int64_t e, int64_t heads, torch::ScalarType dtype, double dropout = 0.0) {
  namespace tnn = torchattn::nn;
  std::vector<NamedModule> out;
  out.push_back(
      {"DotProductAttention", torch::nn::AnyModule(tnn::DotProductAttention(
                                  tnn::DotProductAttentionOptions().dropout(dropout)))});
  out.push_back(
      {"ScaledDotProductAttention",
       torch::nn::AnyModule(tnn::ScaledDotProductAttention(
           tnn::ScaledDotProductAttentionOptions().dropout(dropout)))});
  out.push_back(
      {"CosineAttention",
       torch::nn::AnyModule(tnn::CosineAttention(
           tnn::CosineAttentionOptions().num_heads(heads).learnable(true).dropout(dropout)))});
  out.push_back(
      {"AdditiveAttention", torch::nn::AnyModule(tnn::AdditiveAttention(
                                tnn::AdditiveAttentionOptions(e, e, 2 * e).dropout(dropout)))});
  out.push_back(
      {"GeneralAttention", torch::nn::AnyModule(tnn::GeneralAttention(
                               tnn::GeneralAttentionOptions(e).dropout(dropout)))});
  for (auto& m : out) {
    m.module.ptr()->to(dtype);
  }
  return out;
}

/// Sends every call without weights to the fused kernel while alive, so that tests of the
/// fused path on small shapes test it (by default the functionals keep small scores on the
/// math path; see set_math_path_max_scores).
struct AlwaysFused {
  int64_t saved = torchattn::nn::functional::math_path_max_scores();
  AlwaysFused() { torchattn::nn::functional::set_math_path_max_scores(0); }
  ~AlwaysFused() { torchattn::nn::functional::set_math_path_max_scores(saved); }
  AlwaysFused(const AlwaysFused&) = delete;
  AlwaysFused& operator=(const AlwaysFused&) = delete;
};

} // namespace torchattn::testing
