// The README's flex_attention examples, one per modifier, each block exactly as the README
// shows it (tests/scripts/check_readme_examples.py holds them to that). Each block checks
// what it shows: the fused result against the math path (need_weights), and prints it.

#include <torchattn/torchattn.h>

#include <iostream>

namespace F = torchattn::nn::functional;

namespace {

/// The fused op against the math path with the same options.
void check(
    const char* what, const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
    F::FlexAttentionFuncOptions opts) {
  auto fused = F::flex_attention(q, k, v, opts).output;
  auto math = F::flex_attention(q, k, v, opts.need_weights(true)).output;
  const double err = (fused - math).abs().max().item<double>();
  std::cout << what << ": output " << fused.sizes() << ", max |fused - math| " << err << "\n";
  TORCH_CHECK(err < 1e-4, what, ": the fused op and the math path differ by ", err);
}

} // namespace

int main() {
  torch::manual_seed(0);
  // [readme: shapes]
  auto q = torch::randn({2, 8, 1024, 64}, torch::requires_grad());
  auto k = torch::randn({2, 8, 1024, 64}, torch::requires_grad());
  auto v = torch::randn({2, 8, 1024, 64}, torch::requires_grad());
  // [readme: end]

  // [readme: sliding window]
  auto local = F::FlexAttentionFuncOptions().causal("top_left").window_left(255);
  auto out = F::flex_attention(q, k, v, local).output; // each query: itself and 255 keys back
  out.sum().backward();
  // [readme: end]
  check("sliding window", q, k, v, local);

  // [readme: alibi and softcap]
  auto alibi = F::FlexAttentionFuncOptions()
                   .causal("top_left")
                   .alibi_slopes(F::alibi_slopes(8)) // BLOOM's slopes, 2^(-8h/H)
                   .softcap(50.0);                   // Gemma 2's 50 tanh(s / 50)
  // [readme: end]
  check("alibi + softcap", q, k, v, alibi);

  // [readme: learnable bias]
  auto bias = torch::zeros({1, 8, 1024, 1024}, torch::requires_grad());
  auto r = F::flex_attention(q, k, v, F::FlexAttentionFuncOptions().bias(bias));
  r.output.sum().backward(); // bias.grad(): dS summed over the batch
  // [readme: end]
  check("learnable bias", q, k, v, F::FlexAttentionFuncOptions().bias(bias));

  // [readme: position table]
  auto table = torch::zeros({8, 32}, torch::requires_grad()); // T5: [H, num_buckets]
  auto t5 =
      F::FlexAttentionFuncOptions().position_bias(table).position_buckets(F::t5_position_buckets(
          1024, 1024, /*num_buckets=*/32,
          /*max_distance=*/128));
  F::flex_attention(q, k, v, t5).output.sum().backward(); // table.grad(): [8, 32]
  // [readme: end]
  check("T5 position table", q, k, v, t5);

  // [readme: documents]
  // Two sequences packed into each row of 1024 tokens: 300 + 724, and 1000 + 24.
  auto docs = torch::cat(
                  {torch::zeros({1, 300}), torch::ones({1, 724}),
                   torch::cat({torch::zeros({1, 1000}), torch::ones({1, 24})}, 1)},
                  1)
                  .view({2, 1024})
                  .to(torch::kLong);
  auto packed = F::FlexAttentionFuncOptions().causal("top_left").q_doc_ids(docs).kv_doc_ids(docs);
  // [readme: end]
  check("documents", q, k, v, packed);

  // [readme: varlen]
  // The same, unpadded: [total_tokens, H, E] and cumulative sequence lengths.
  auto qv = torch::randn({1324, 8, 64}), kv = torch::randn({1324, 8, 64});
  auto cu = torch::tensor({0, 300, 1324}, torch::kLong);
  auto var = F::flex_attention_varlen(
      qv, kv, kv, cu, cu, F::FlexAttentionFuncOptions().causal("top_left"));
  // var.output: [1324, 8, 64]; var.lse: [8, 1324]
  // [readme: end]
  std::cout << "varlen: output " << var.output.sizes() << "\n";

  // [readme: prefix-LM]
  auto prefix = F::FlexAttentionFuncOptions()
                    .causal("top_left")
                    .prefix_lengths(torch::tensor({100, 400})); // per batch entry
  // [readme: end]
  check("prefix-LM", q, k, v, prefix);

  // [readme: decoding]
  // 16 new queries against a cache of 1024 keys: causal aligned to the bottom right.
  auto q_new = torch::randn({2, 8, 16, 64});
  auto step = F::flex_attention(q_new, k, v, F::FlexAttentionFuncOptions().causal("bottom_right"));
  // [readme: end]
  check("bottom-right causal", q_new, k, v, F::FlexAttentionFuncOptions().causal("bottom_right"));
  (void)step;

  // [readme: gqa]
  auto k2 = torch::randn({2, 2, 1024, 64}), v2 = torch::randn({2, 2, 1024, 64});
  auto gqa = F::flex_attention(q, k2, v2, F::FlexAttentionFuncOptions().enable_gqa(true));
  // [readme: end]
  check("GQA", q, k2, v2, F::FlexAttentionFuncOptions().enable_gqa(true));
  (void)gqa;

  // [readme: block mask]
  // Any mask as a C++ callable, made into a BlockMask once and reused across layers.
  auto dilated = F::create_block_mask(
      [](int64_t, int64_t, int64_t i, int64_t j) { return j <= i && (i - j) % 4 == 0; },
      /*B=*/1, /*H=*/1, 1024, 1024);
  auto sparse = F::FlexAttentionFuncOptions().block_mask(dilated);
  std::cout << "block mask density " << dilated.density() << "\n";
  // [readme: end]
  check("block mask", q, k, v, sparse);

  // [readme: weights]
  auto res = F::flex_attention(q, k, v, local);
  auto rows = torch::tensor({0, 511, 1023}, torch::kLong);
  auto w = F::flex_attention_weights(q, k, res.lse, rows, local); // [2, 8, 3, 1024]
  // [readme: end]
  auto full = F::flex_attention(q, k, v, local.need_weights(true)).weights.index_select(2, rows);
  const double werr = (w - full).abs().max().item<double>();
  std::cout << "weights of 3 rows: " << w.sizes() << ", max |diff| " << werr << "\n";
  TORCH_CHECK(werr < 1e-5, "flex_attention_weights differs from the math path by ", werr);
  std::cout << "ok\n";
  return 0;
}
