#include <torchattn/jit/state_dict.h>

#include <torch/torch.h>

#include <cctype>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>

namespace torchattn::jit {
namespace {

std::string describe(const torch::Tensor& t) {
  std::string dtype =
      c10::toString(t.scalar_type()); // "Float": PyTorch's Python spelling is "float"
  for (char& c : dtype)
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return c10::str(t.sizes(), " ", dtype);
}

std::map<std::string, torch::Tensor> source_tensors(const torch::jit::Module& src) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : src.named_parameters(/*recurse=*/true))
    out[p.name] = p.value;
  for (const auto& b : src.named_buffers(/*recurse=*/true))
    out[b.name] = b.value;
  return out;
}

std::string list(const char* what, const std::vector<std::string>& names) {
  if (names.empty()) {
    return "";
  }
  std::string joined;
  for (const auto& name : names) {
    joined += (joined.empty() ? "" : ", ") + name;
  }
  return c10::str("\n  ", what, " (", names.size(), "): ", joined);
}

} // namespace

StateDictReport load_state_dict(
    torch::nn::Module& dst, const torch::jit::Module& src, const std::string& prefix, bool strict) {
  std::map<std::string, torch::Tensor> targets;
  for (const auto& p : dst.named_parameters(/*recurse=*/true))
    targets[p.key()] = p.value();
  for (const auto& b : dst.named_buffers(/*recurse=*/true))
    targets[b.key()] = b.value();
  std::map<std::string, torch::Tensor> sources;
  StateDictReport report;
  for (auto& [name, t] : source_tensors(src)) {
    if (name.rfind(prefix, 0) == 0) {
      sources[name.substr(prefix.size())] = t;
    } else {
      report.unexpected.push_back(name);
    }
  }
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;
  for (const auto& [name, target] : targets) {
    const auto it = sources.find(name);
    if (it == sources.end()) {
      report.missing.push_back(name);
      continue;
    }
    const torch::Tensor& source = it->second;
    if (source.sizes() != target.sizes() || source.scalar_type() != target.scalar_type()) {
      report.mismatched.push_back(
          c10::str(name, ": expected ", describe(target), ", got ", describe(source)));
      continue;
    }
    copies.emplace_back(target, source);
    report.loaded.push_back(name);
  }
  for (const auto& [name, t] : sources) {
    if (targets.count(name) == 0)
      report.unexpected.push_back(prefix + name);
  }
  if (strict && !report.ok()) {
    TORCH_CHECK(
        false, "load_state_dict: the TorchScript module does not match the ", dst.name(), ":",
        list("missing", report.missing), list("unexpected", report.unexpected),
        list("mismatched", report.mismatched),
        "\n  (strict=false loads what matches and returns these lists)");
  }
  torch::NoGradGuard no_grad;
  for (auto& [target, source] : copies)
    target.copy_(source);
  return report;
}

torch::jit::Module load_torchscript(const std::string& path) {
  TORCH_CHECK(std::filesystem::exists(path), "load_torchscript: '", path, "' does not exist");
  {
    std::ifstream in(path, std::ios::binary);
    char magic[2] = {};
    in.read(magic, 2);
    TORCH_CHECK(
        in && magic[0] == 'P' && magic[1] == 'K', "load_torchscript: '", path,
        "' is not a TorchScript archive (torch.jit.save writes a zip file; torch.save files of "
        "Python objects cannot be read from C++)");
  }
  try {
    return torch::jit::load(path);
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    if (what.find("torchattn::") != std::string::npos ||
        what.find("torchattn.") != std::string::npos) {
      TORCH_CHECK(
          false, "load_torchscript: '", path,
          "' calls torchattn ops, which are not registered in this ",
          "process: link libtorchattn (and include <torchattn/torchattn.h>), or in Python call "
          "torch.ops.load_library on it first. (",
          what.substr(0, what.find('\n')), ")");
    }
    TORCH_CHECK(false, "load_torchscript: cannot load '", path, "': ", what);
  }
}

StateDictReport load_state_dict(
    torch::nn::Module& dst, const std::string& path, const std::string& prefix, bool strict) {
  return load_state_dict(dst, load_torchscript(path), prefix, strict);
}

void save_state_dict(const torch::nn::Module& module, const std::string& path) {
  torch::jit::Module root("__torch__.torchattn.StateDict");
  // Submodules recreate the dotted names: encoder.0.self_attn.in_proj_weight.
  auto add = [&](const std::string& name, const torch::Tensor& t, bool buffer) {
    torch::jit::Module* m = &root;
    std::vector<torch::jit::Module> chain;
    size_t start = 0;
    std::string qualified = "__torch__.torchattn.StateDict";
    for (size_t dot; (dot = name.find('.', start)) != std::string::npos; start = dot + 1) {
      const std::string part = name.substr(start, dot - start);
      qualified += "." + (std::isdigit(static_cast<unsigned char>(part[0])) ? "_" + part : part);
      if (!m->hasattr(part)) {
        torch::jit::Module child(qualified);
        m->register_module(part, child);
      }
      chain.push_back(m->attr(part).toModule());
      m = &chain.back();
    }
    const std::string leaf = name.substr(start);
    const torch::Tensor value = t.detach().clone();
    if (buffer) {
      m->register_buffer(leaf, value);
    } else {
      m->register_parameter(leaf, value, /*is_buffer=*/false);
    }
  };
  for (const auto& p : module.named_parameters(/*recurse=*/true))
    add(p.key(), p.value(), false);
  for (const auto& b : module.named_buffers(/*recurse=*/true))
    add(b.key(), b.value(), true);
  const std::string tmp = path + ".tmp";
  root.save(tmp);
  TORCH_CHECK(
      std::rename(tmp.c_str(), path.c_str()) == 0, "save_state_dict: cannot rename '", tmp,
      "' to '", path, "'");
}

} // namespace torchattn::jit
