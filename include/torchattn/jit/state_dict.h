#pragma once

#include <torch/nn/module.h>
#include <torch/script.h>

#include <string>
#include <vector>

/// Moving weights between TorchScript files (made by PyTorch with torch.jit.script or
/// torch.jit.trace and saved with torch.jit.save) and C++ modules, by state-dict name.
namespace torchattn::jit {

/// What load_state_dict found. Names are the destination module's (after `prefix` is removed
/// from the source names).
struct StateDictReport {
  std::vector<std::string> missing;    ///< in the destination, not in the source
  std::vector<std::string> unexpected; ///< in the source, not in the destination
  std::vector<std::string> mismatched; ///< in both, with another shape or dtype: "name: expected
                                       ///< [..] float, got [..] double"
  std::vector<std::string> loaded;     ///< copied
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
};

/// Copies the parameters and buffers of `src` into `dst` by name, like PyTorch's
/// `Module.load_state_dict`. Source names that start with `prefix` are taken without it
/// (for a model held as a submodule, e.g. prefix "model."); the others are unexpected.
/// Shapes and dtypes must match exactly. With `strict`, nothing is copied unless everything
/// matches, and the error lists every missing, unexpected and mismatched name; otherwise every
/// tensor that matches is copied and the report lists the rest.
///
/// Example:
/// ```
/// auto scripted = torch::jit::load("mha.pt");   // torch.jit.script(nn.MultiheadAttention(...))
/// torchattn::nn::MultiheadAttention mha(torchattn::nn::MultiheadAttentionOptions(64, 4));
/// torchattn::jit::load_state_dict(*mha, scripted);
/// ```
StateDictReport load_state_dict(
    torch::nn::Module& dst, const torch::jit::Module& src, const std::string& prefix = "",
    bool strict = true);

/// The same from a TorchScript file. A missing file, or one that is not a TorchScript
/// archive, gives an error naming the path.
StateDictReport load_state_dict(
    torch::nn::Module& dst, const std::string& path, const std::string& prefix = "",
    bool strict = true);

/// Writes the parameters and buffers of `module` as a TorchScript module whose state dict has
/// the same names, for Python: `torch.jit.load(path).state_dict()` loads into the matching
/// PyTorch module with `load_state_dict` (e.g. an `nn.MultiheadAttention` from a
/// `torchattn::nn::MultiheadAttention` of the same options). The file is written beside
/// `path` and renamed over it.
void save_state_dict(const torch::nn::Module& module, const std::string& path);

/// Loads a TorchScript file with torch::jit::load and a clear error: a missing file, a file
/// that is not a TorchScript archive, or a model that calls torchattn ops while this process
/// has none registered (say so, rather than "Unknown builtin op").
torch::jit::Module load_torchscript(const std::string& path);

} // namespace torchattn::jit

/// The names of torchattn 0.1, before they moved to torchattn::jit; removed in the next release.
namespace torchattn {

using StateDictReport [[deprecated("use torchattn::jit::StateDictReport")]] = jit::StateDictReport;

[[deprecated("use torchattn::jit::load_state_dict")]] inline jit::StateDictReport load_state_dict(
    torch::nn::Module& dst, const torch::jit::Module& src, const std::string& prefix = "",
    bool strict = true) {
  return jit::load_state_dict(dst, src, prefix, strict);
}

[[deprecated("use torchattn::jit::load_state_dict")]] inline jit::StateDictReport load_state_dict(
    torch::nn::Module& dst, const std::string& path, const std::string& prefix = "",
    bool strict = true) {
  return jit::load_state_dict(dst, path, prefix, strict);
}

[[deprecated("use torchattn::jit::save_state_dict")]] inline void save_state_dict(
    const torch::nn::Module& module, const std::string& path) {
  jit::save_state_dict(module, path);
}

[[deprecated("use torchattn::jit::load_torchscript")]] inline torch::jit::Module load_torchscript(
    const std::string& path) {
  return jit::load_torchscript(path);
}

} // namespace torchattn
