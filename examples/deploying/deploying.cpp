// Deploying Llama-style attention in C++: load the q_proj, k_proj, v_proj and o_proj weights of
// a layer by name, prefill a batch of prompts of different lengths into a KV cache, and decode
// token by token (one batched step per token, through the decoding kernel). At the end it
// checks the cached decoding against recomputing every position from scratch.
//
//   torchattn-deploying WEIGHTS.pt    (from export_llama_attention.py)
//   torchattn-deploying               (no file: random weights, written and read back)

#include <torchattn/jit/state_dict.h>
#include <torchattn/torchattn.h>

#include <torch/torch.h>

#include <cstdio>
#include <string>

int main(int argc, char** argv) {
  torch::manual_seed(0);
  torch::NoGradGuard no_grad;
  namespace tnn = torchattn::nn;
  std::string path = argc > 1 ? argv[1] : "llama_attention.pt";
  if (argc == 1) { // stand in for a file from Python: a block's weights under "self_attn."
    torch::nn::Module holder;
    holder.register_module(
        "self_attn",
        tnn::GroupedQueryAttention(tnn::GroupedQueryAttentionOptions(256, 8).num_kv_heads(2)));
    torchattn::jit::save_state_dict(holder, path);
  }
  // [readme: load]
  // A Llama 3-style block: hidden 256, 8 query heads sharing 2 kv heads, RoPE θ = 500000.
  tnn::GroupedQueryAttention attn(tnn::GroupedQueryAttentionOptions(256, 8).num_kv_heads(2).rotary(
      tnn::RotaryEmbeddingOptions().base(500000)));
  auto report = torchattn::jit::load_state_dict(*attn, path, /*prefix=*/"self_attn.");
  // report.loaded: q_proj.weight, k_proj.weight, v_proj.weight, o_proj.weight
  // [readme: end]
  std::printf("loaded %zu tensors from %s\n", report.loaded.size(), path.c_str());

  // [readme: decode]
  // Three prompts, right-padded to 12 tokens; row b's first lengths[b] are real.
  auto prompts = torch::randn({3, 12, 256});
  auto lengths = torch::tensor({12, 5, 9}, torch::kLong);
  tnn::KVCache cache;
  auto h = attn->forward_cached(prompts, cache, lengths); // prefill: [3, 12, 256]
  // Each row continues from its last real token (a model would embed its sampled token).
  auto x = h.gather(1, (lengths - 1).view({3, 1, 1}).expand({3, 1, 256}));
  std::vector<torch::Tensor> steps{x};
  for (int t = 0; t < 32; ++t) {
    x = attn->forward_cached(x, cache); // [3, 1, 256], one decoding-kernel call per step
    steps.push_back(x);
  }
  // cache.row_lengths(): {44, 37, 41}; beam search would call cache.reorder(parents).
  // [readme: end]

  // The same tokens recomputed without cache, row by row: the last step's output must match.
  double worst = 0;
  for (int64_t b = 0; b < 3; ++b) {
    const int64_t n = lengths[b].item<int64_t>();
    auto seq =
        torch::cat({prompts[b].narrow(0, 0, n), torch::cat(steps, 1)[b].narrow(0, 0, 32)}, 0);
    auto full = attn(seq.unsqueeze(0))[0];
    worst = std::max(worst, (full[-1] - steps.back()[b][0]).abs().max().item<double>());
  }
  std::printf(
      "decoded 32 tokens for 3 rows (cache lengths %ld, %ld, %ld); cached vs recomputed: max "
      "difference %.2e\n",
      static_cast<long>(cache.row_lengths()[0]), static_cast<long>(cache.row_lengths()[1]),
      static_cast<long>(cache.row_lengths()[2]), worst);
  return worst < 1e-4 ? 0 : 1;
}
