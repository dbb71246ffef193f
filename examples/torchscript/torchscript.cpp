// torchattn-torchscript: runs TorchScript models made in Python next to torchattn modules.
//
//   /usr/bin/python3 examples/torchscript/make_models.py --library build/libtorchattn.so --out
//   models build/examples/torchscript/torchattn-torchscript models
//
// 1. block.pt (nn.MultiheadAttention inside) runs with torch::jit::load; its weights move by
//    name into the same block built from torchattn::nn::MultiheadAttention; outputs agree.
// 2. The Block's weights go back to Python (save_state_dict -> block_from_cpp.pt), which
//    `make_models.py --check` loads into its nn.Module by name.
// 3. op_block.pt calls torch.ops.torchattn.scaled_dot_product_attention; it runs here because
//    this program links torchattn, which registers the op.

#include <torchattn/jit/state_dict.h>
#include <torchattn/torchattn.h>

#include <torch/script.h>
#include <torch/torch.h>

#include <iostream>

namespace tnn = torchattn::nn;

// The C++ twin of make_models.py's Block, with the same parameter names.
struct BlockImpl : torch::nn::Module {
  explicit BlockImpl(int64_t dim = 32, int64_t heads = 4) {
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    attn = register_module(
        "attn",
        tnn::MultiheadAttention(tnn::MultiheadAttentionOptions(dim, heads).batch_first(true)));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim})));
    ff = register_module("ff", torch::nn::Linear(dim, dim));
  }
  // x [B, L, E], padding [B, L] (true = padding) -> [B, L, E]
  torch::Tensor forward(torch::Tensor x, const torch::Tensor& padding) {
    const auto h = norm1(x);
    x = x + std::get<0>(attn->forward(
                h, h, h, padding, /*need_weights=*/false, /*attn_mask=*/torch::Tensor(),
                /*average_attn_weights=*/true, /*is_causal=*/true));
    return x + ff(norm2(x));
  }
  torch::nn::LayerNorm norm1 = nullptr, norm2 = nullptr;
  tnn::MultiheadAttention attn = nullptr;
  torch::nn::Linear ff = nullptr;
};
TORCH_MODULE(Block);

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0]
              << " DIR   (DIR written by examples/torchscript/make_models.py)\n";
    return 2;
  }
  const std::string dir = argv[1];
  try {
    torch::NoGradGuard no_grad;
    torch::manual_seed(0);
    auto x = torch::randn({2, 6, 32});
    auto padding = torch::zeros({2, 6}, torch::kBool);
    padding[1].narrow(0, 4, 2).fill_(true);

    auto scripted = torchattn::jit::load_torchscript(dir + "/block.pt");
    const auto expected = scripted.forward({x, padding}).toTensor();
    Block block;
    block->eval();
    const auto report = torchattn::jit::load_state_dict(*block, scripted);
    const auto ours = block->forward(x, padding);
    const double diff = (ours - expected).abs().max().item<double>();
    std::cout << "block.pt: ran the TorchScript model; moved " << report.loaded.size()
              << " tensors into torchattn's Block; max |difference| of the outputs " << diff
              << "\n";

    // And back to Python: make_models.py --check loads this into its Block by name.
    torchattn::jit::save_state_dict(*block, dir + "/block_from_cpp.pt");
    std::cout << "block_from_cpp.pt: torchattn's Block saved for Python "
                 "(torch.jit.load(...).state_dict())\n";

    auto op_block = torchattn::jit::load_torchscript(dir + "/op_block.pt");
    const auto y = op_block.forward({x, padding}).toTensor();
    std::cout << "op_block.pt: ran torch.ops.torchattn.scaled_dot_product_attention from "
                 "TorchScript, output "
              << y.sizes() << ", finite: " << std::boolalpha << y.isfinite().all().item<bool>()
              << "\n";
    if (!(diff < 1e-5) || !y.isfinite().all().item<bool>()) {
      std::cerr << "torchattn-torchscript: the outputs do not agree\n";
      return 1;
    }
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "torchattn-torchscript: error: " << e.what() << "\n";
    return 1;
  }
}
