#pragma once

// Reads tests/reference/*.pt, written by tests/reference/make_reference.py: one
// submodule per case holding its tensors as buffers and its options as attributes.

#include <torch/script.h>
#include <torch/torch.h>

#include <map>
#include <sstream>
#include <string>
#include <vector>

#ifndef TORCHATTN_REFERENCE_DIR
#error "TORCHATTN_REFERENCE_DIR must name tests/reference"
#endif

namespace torchattn::testing {

struct ReferenceCase {
  std::string name;
  torch::jit::Module bag;
  std::map<std::string, torch::Tensor> tensors; // by dotted name: "query", "params.weight", ...

  bool has(const std::string& t) const { return tensors.count(t) != 0; }
  torch::Tensor get(const std::string& t) const {
    auto it = tensors.find(t);
    TORCH_CHECK(it != tensors.end(), "reference case ", name, " has no tensor ", t);
    return it->second;
  }
  torch::Tensor get_or_undefined(const std::string& t) const {
    return has(t) ? get(t) : torch::Tensor();
  }
  /// Tensors under "prefix." with the prefix removed.
  std::map<std::string, torch::Tensor> group(const std::string& prefix) const {
    std::map<std::string, torch::Tensor> out;
    for (const auto& [k, v] : tensors) {
      if (k.rfind(prefix + ".", 0) == 0) {
        out[k.substr(prefix.size() + 1)] = v;
      }
    }
    return out;
  }
  std::string str(const char* attr) const { return bag.attr(attr).toStringRef(); }
  bool flag(const char* attr) const { return bag.attr(attr).toBool(); }
  double real(const char* attr) const { return bag.attr(attr).toDouble(); }
  int64_t integer(const char* attr) const { return bag.attr(attr).toInt(); }
};

struct Reference {
  std::string torch_version;
  std::vector<ReferenceCase> cases;
};

/// The cases of tests/reference/<file>, loaded once.
// `file` is a C string, not a std::string: GCC 14 warns (-Wdangling-reference) when a function
// returning a reference is called with a temporary string argument.
inline const Reference& reference(const char* file = "attention.pt") {
  static std::map<std::string, Reference> loaded;
  auto it = loaded.find(file);
  if (it != loaded.end()) {
    return it->second;
  }
  const Reference ref = [&] {
    Reference r;
    auto root = torch::jit::load(std::string(TORCHATTN_REFERENCE_DIR) + "/" + file);
    r.torch_version = root.attr("torch_version").toStringRef();
    std::istringstream names(root.attr("case_names").toStringRef());
    for (std::string name; std::getline(names, name);) {
      ReferenceCase c{name, root.attr(name).toModule(), {}};
      for (const auto& b : c.bag.named_buffers(/*recurse=*/true)) {
        c.tensors[b.name] = b.value;
      }
      r.cases.push_back(std::move(c));
    }
    return r;
  }();
  return loaded.emplace(file, ref).first->second;
}

} // namespace torchattn::testing
