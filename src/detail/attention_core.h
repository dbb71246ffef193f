#pragma once

// The math path shared by every score function: validation of q/k/v and masks, masking,
// a softmax that is zero (not NaN) on fully masked rows, dropout and the weighted sum.

#include <torch/types.h>

#include <c10/util/Optional.h>

#include <ostream>
#include <string>
#include <tuple>
#include <vector>

namespace torchattn::detail {

/// The arguments of TORCHATTN_ATTENTION_FUNC_ARGS, gathered from any *FuncOptions.
struct MaskArgs {
  const torch::Tensor& attn_mask;
  const torch::Tensor& key_padding_mask;
  bool is_causal;
  double dropout_p;
  bool need_weights;

  template <typename Options>
  static MaskArgs from(const Options& o) {
    return {o.attn_mask(), o.key_padding_mask(), o.is_causal(), o.dropout_p(), o.need_weights()};
  }
};

/// "[2, 5, 8]"
std::string shape_str(torch::IntArrayRef sizes);

/// Checks that `t` has the dtype and device of query ("<fn>: <name> has dtype ..., expected
/// ... like query").
void check_like(const char* fn, const char* name, const torch::Tensor& t, const torch::Tensor& query);

/// Checks query/key/value and the masks; returns the shape of the scores [..., Lq, Lk].
/// `same_qk_dim`: the score function needs query.size(-1) == key.size(-1).
std::vector<int64_t> check_inputs(
    const char* fn,
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const MaskArgs& masks,
    bool same_qk_dim);

/// The scale of scaled dot-product attention: `scale`, or 1/sqrt(E) for query [..., E]. Fails
/// on a non-finite scale, and on E = 0 without one (1/sqrt(0) is no scale the caller chose).
double resolve_scale(const char* fn, const c10::optional<double>& scale, const torch::Tensor& query);

/// Checks a parameter tensor: defined, same dtype and device as `like`, the expected shape.
void check_param(
    const char* fn,
    const char* name,
    const torch::Tensor& param,
    const torch::Tensor& like,
    torch::IntArrayRef expected,
    const char* expected_desc);

/// Fills the TORCHATTN_ATTENTION_FUNC_ARGS of any *FuncOptions, as every module's forward does.
template <typename Options>
Options with_masks(
    Options options,
    const torch::Tensor& attn_mask,
    const torch::Tensor& key_padding_mask,
    bool is_causal,
    double dropout_p,
    bool need_weights) {
  options.attn_mask(attn_mask);
  options.key_padding_mask(key_padding_mask);
  options.is_causal(is_causal);
  options.dropout_p(dropout_p);
  options.need_weights(need_weights);
  return options;
}

/// Whether a tensor of `shape` broadcasts to `target` without growing it.
bool broadcastable(torch::IntArrayRef shape, torch::IntArrayRef target);

/// [rows, cols] bool, true where key j is later than query i's position `offset + i`: the
/// masked entries of causal attention (top-left aligned when offset is 0).
torch::Tensor causal_masked(int64_t rows, int64_t cols, int64_t offset, const torch::TensorOptions& options);

/// τ = exp(min(logit_scale, log(max_temperature))) for cosine attention's log temperatures.
torch::Tensor temperature_from_log(const torch::Tensor& logit_scale, const c10::optional<double>& max_temperature);

/// scores [..., Lq, Lk], value [..., Lk, Ev] -> (out [..., Lq, Ev], weights or undefined)
std::tuple<torch::Tensor, torch::Tensor> attend(
    torch::Tensor scores, const torch::Tensor& value, const MaskArgs& masks);

} // namespace torchattn::detail

namespace torchattn::detail {

/// Checks a module's dropout option in reset(); `module` is e.g. "CosineAttention".
void check_dropout_option(const char* module, double p);

/// Writes "None" or the value, as PyTorch prints optional options.
void print_optional(std::ostream& stream, const c10::optional<double>& value);

} // namespace torchattn::detail
