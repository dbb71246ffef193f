#pragma once

// The one validator of the library: the functionals, the dispatcher ops and the modules check
// their arguments here, so every message has one wording:
//   "<fn>: <argument> has <what came>, expected <what was expected>".

#include "detail/mask_args.h"

#include <torch/types.h>

#include <c10/util/Optional.h>

#include <string>
#include <tuple>
#include <vector>

namespace torchattn::detail {

/// "[2, 5, 8]"
std::string shape_str(torch::IntArrayRef sizes);

/// Whether a tensor of `shape` broadcasts to `target` without growing it.
bool broadcastable(torch::IntArrayRef shape, torch::IntArrayRef target);

/// Checks that `t` has the dtype and device of query ("<fn>: <name> has dtype ..., expected
/// ... like query").
void check_like(
    const char* fn, const char* name, const torch::Tensor& t, const torch::Tensor& query);

/// The dtype of the softmax statistics (row max, log-sum, logsumexp) for inputs of `dtype`:
/// float32 for bfloat16 and float16, else `dtype` itself.
torch::ScalarType stats_dtype(torch::ScalarType dtype);

/// Checks that an operand of a fused op has a dtype its kernels compute: Float, Double,
/// BFloat16 or Half.
void check_fused_dtype(const char* fn, const char* name, const torch::Tensor& t);

/// Checks an output-shaped tensor a backward op is given (grad_output, output): `shape`, on
/// query's device, in query's dtype or stats_dtype(query) (a forward op's float32 output for
/// bfloat16 and float16 inputs).
void check_output_like(
    const char* fn, const char* name, const torch::Tensor& t, const torch::Tensor& query,
    torch::IntArrayRef shape);

/// Checks the softmax statistics a backward op is given: contiguous [B, H, Lq] in
/// stats_dtype(query), on query's device.
void check_softmax_stats_shape(
    const char* fn, const torch::Tensor& row_max, const torch::Tensor& row_log_sum,
    const torch::Tensor& query);

/// Checks that a module's input has the dtype and device of its parameters (`like`).
void check_like_parameters(
    const char* fn, const char* name, const torch::Tensor& t, const torch::Tensor& like);

/// Checks a mask's dtype and device: Bool or the dtype of query, on query's device.
void check_mask_dtype(
    const char* fn, const char* name, const torch::Tensor& mask, const torch::Tensor& query);

/// check_mask_dtype, and that the mask broadcasts to `target` (described by `target_desc`,
/// e.g. "[..., Lq, Lk]").
void check_mask(
    const char* fn, const char* name, const torch::Tensor& mask, const torch::Tensor& query,
    torch::IntArrayRef target, const char* target_desc);

/// Checks a dropout probability: in [0, 1).
void check_dropout(const char* fn, const char* name, double p);

/// Checks query/key/value and the masks of a functional; returns the shape of the scores
/// [..., Lq, Lk]. `same_qk_dim`: the score function needs query.size(-1) == key.size(-1).
std::vector<int64_t> check_inputs(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const MaskArgs& masks, bool same_qk_dim);

/// The scale of scaled dot-product attention: `scale`, or 1/sqrt(E) for query [..., E]. Fails
/// on a non-finite scale, and on E = 0 without one (1/sqrt(0) is no scale the caller chose).
double resolve_scale(
    const char* fn, const c10::optional<double>& scale, const torch::Tensor& query);

/// Checks a parameter tensor: defined, same dtype and device as `like`, the expected shape.
void check_param(
    const char* fn, const char* name, const torch::Tensor& param, const torch::Tensor& like,
    torch::IntArrayRef expected, const char* expected_desc);

/// Checks that `input`'s features match dim `dim` of the 2-D `weight` (a module's in-features),
/// naming the input: "additive_attention: query has 16 features (shape [2, 5, 16]), expected
/// 32, dim 1 of query_weight [24, 32] [D, Eq]".
void check_features(
    const char* fn, const char* input_name, const torch::Tensor& input, const char* weight_name,
    const torch::Tensor& weight, int64_t dim, const char* layout);

/// Checks the arguments of the scaled_dot_product_attention ops (4-D query [B, H, Lq, E], key
/// [B, H, Lk, E], value [B, H, Lk, Ev], float32 or float64); returns the mask as a 4-D
/// [B, H, Lq, Lk] view (undefined when none) and the resolved scale.
std::tuple<torch::Tensor, double> check_sdpa_args(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const c10::optional<torch::Tensor>& attn_mask, double dropout_p,
    c10::optional<double> scale);

/// check_sdpa_args for the backward op, and the shapes and dtypes of what the forward op gave:
/// grad_output and output [B, H, Lq, Ev], row_max and row_log_sum contiguous [B, H, Lq].
std::tuple<torch::Tensor, double> check_sdpa_backward_args(
    const char* fn, const torch::Tensor& grad_output, const torch::Tensor& query,
    const torch::Tensor& key, const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask, const torch::Tensor& output,
    const torch::Tensor& row_max, const torch::Tensor& row_log_sum, double scale);

/// Checks additive_attention_scores' arguments (query [..., Lq, D], key [..., Lk, D] with the
/// same leading dims, score_weight [D]; float32 or float64 on CPU).
void check_additive_args(
    const char* fn, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& score_weight);

/// check_additive_args, and grad_scores [..., Lq, Lk] in the dtype of query.
void check_additive_backward_args(
    const char* fn, const torch::Tensor& grad_scores, const torch::Tensor& query,
    const torch::Tensor& key, const torch::Tensor& score_weight);

/// Checks a module's dropout option in reset(); `module` is e.g. "CosineAttention".
void check_dropout_option(const char* module, double p);

} // namespace torchattn::detail
