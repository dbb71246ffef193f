// CPU kernels of the attention ops: argument checks, the choice of the vector build of the
// fused kernels (flash_attention_kernel_impl.cpp, additive_scores_kernel_impl.cpp), and the
// math path for dropout.

#include <torchattn/ops/attention.h>

#include "detail/attention_core.h"
#include "ops/cpu/additive_scores_kernel.h"
#include "ops/cpu/flash_attention_kernel.h"
#include "ops/registration.h"

#include <ATen/Dispatch.h>
#include <torch/library.h>
#include <torch/torch.h>

#include <atomic>
#include <cstdlib>
#include <limits>
#include <string>

namespace torchattn::ops {

namespace {

enum class Capability : int { Default = 0, Avx2 = 1, Avx512 = 2 };

const char* name_of(Capability c) {
  switch (c) {
    case Capability::Avx512:
      return "avx512";
    case Capability::Avx2:
      return "avx2";
    case Capability::Default:
      break;
  }
  return "default";
}

Capability supported() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    return Capability::Avx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    return Capability::Avx2;
  }
#endif
  return Capability::Default;
}

Capability parse(const std::string& s, const char* what) {
  if (s == "avx512") {
    return Capability::Avx512;
  }
  if (s == "avx2") {
    return Capability::Avx2;
  }
  TORCH_CHECK(
      s == "default", what, " is '", s, "', expected one of avx512, avx2, default");
  return Capability::Default;
}

Capability initial() {
  Capability best = supported();
  for (const char* var : {"TORCHATTN_CPU_CAPABILITY", "ATEN_CPU_CAPABILITY"}) {
    const char* value = std::getenv(var);
    if (value != nullptr && *value != '\0') {
      std::string s(value);
      for (auto& ch : s) {
        ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      }
      // An unknown or unsupported request never raises the level beyond what the CPU has.
      if (s == "avx512" || s == "avx2" || s == "default") {
        const Capability asked = parse(s, var);
        best = static_cast<int>(asked) < static_cast<int>(best) ? asked : best;
      }
      break;
    }
  }
  return best;
}

std::atomic<int>& current() {
  static std::atomic<int> capability{static_cast<int>(initial())};
  return capability;
}

/// The variant of a kernel for the current capability.
template <typename Fn>
Fn for_capability(Fn avx512, Fn avx2, Fn fallback) {
  switch (static_cast<Capability>(current().load())) {
    case Capability::Avx512:
      return avx512;
    case Capability::Avx2:
      return avx2;
    case Capability::Default:
      break;
  }
  return fallback;
}

struct Kernels {
  cpu::ForwardFn forward;
  cpu::BackwardFn backward;
};

Kernels kernels() {
  return {for_capability(cpu::AVX512::flash_attention_forward, cpu::AVX2::flash_attention_forward,
                         cpu::DEFAULT::flash_attention_forward),
          for_capability(cpu::AVX512::flash_attention_backward, cpu::AVX2::flash_attention_backward,
                         cpu::DEFAULT::flash_attention_backward)};
}

bool any_empty(std::initializer_list<torch::Tensor> tensors) {
  for (const auto& t : tensors) {
    if (t.numel() == 0) {
      return true;
    }
  }
  return false;
}

/// The masked, scaled scores [B, H, Lq, Lk] by ATen, for inputs with no elements.
torch::Tensor empty_scores(const torch::Tensor& query, const torch::Tensor& key,
                           const torch::Tensor& mask, bool is_causal, double scale) {
  const double ninf = -std::numeric_limits<double>::infinity();
  auto s = (query * scale).matmul(key.transpose(-2, -1));
  if (mask.defined()) {
    s = mask.scalar_type() == torch::kBool ? s.masked_fill(mask.logical_not(), ninf) : s + mask;
  }
  if (is_causal) {
    s = s.masked_fill(torchattn::detail::causal_masked(s.size(2), s.size(3), 0, s.options()), ninf);
  }
  return s;
}

/// The forward where some input has no elements (B, H, Lq, Lk, E or Ev is 0): the kernels'
/// data pointers would be null there, so ATen computes it, which costs nothing at these sizes.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> empty_forward(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& mask, bool is_causal, double scale) {
  const double ninf = -std::numeric_limits<double>::infinity();
  auto s = empty_scores(query, key, mask, is_causal, scale);
  auto row_max = s.size(3) == 0 ? torch::full(s.sizes().slice(0, 3), ninf, s.options())
                                : std::get<0>(s.max(-1));
  auto dead = row_max.eq(ninf);
  auto p = (s - row_max.masked_fill(dead, 0.0).unsqueeze(-1)).exp();
  auto sum = p.sum(-1);
  auto out = (p.matmul(value) / sum.masked_fill(dead, 1.0).unsqueeze(-1)).masked_fill(dead.unsqueeze(-1), 0.0);
  return {out, row_max, sum.log().masked_fill(dead, ninf)};
}

/// The backward of empty_forward, from the same statistics.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> empty_backward(
    const torch::Tensor& grad_out, const torch::Tensor& query, const torch::Tensor& key,
    const torch::Tensor& value, const torch::Tensor& mask, const torch::Tensor& out,
    const torch::Tensor& row_max, const torch::Tensor& row_log_sum, bool is_causal, double scale) {
  auto s = empty_scores(query, key, mask, is_causal, scale);
  auto dead = row_max.eq(-std::numeric_limits<double>::infinity()).unsqueeze(-1);
  auto p = (s - row_max.unsqueeze(-1) - row_log_sum.unsqueeze(-1)).exp().masked_fill(dead, 0.0);
  auto delta = (grad_out * out).sum(-1, /*keepdim=*/true);
  auto ds = p * (grad_out.matmul(value.transpose(-2, -1)) - delta);
  return {ds.matmul(key) * scale, ds.transpose(-2, -1).matmul(query) * scale,
          p.transpose(-2, -1).matmul(grad_out)};
}

/// The fused forward on checked arguments: `mask` is the 4-D view check_sdpa_args returns.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> run_forward(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const torch::Tensor& mask,
    bool is_causal,
    double scale) {
  // query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev]
  //   -> out [B, H, Lq, Ev], row_max [B, H, Lq], row_log_sum [B, H, Lq]
  if (any_empty({query, key, value})) {
    return empty_forward(query, key, value, mask, is_causal, scale);
  }
  auto out = torch::empty({query.size(0), query.size(1), query.size(2), value.size(3)},
                          query.options());
  auto row_max = torch::empty({query.size(0), query.size(1), query.size(2)}, query.options());
  auto row_log_sum = torch::empty_like(row_max);
  kernels().forward(query, key, value, mask, cpu::FlashArgs{is_causal, scale}, out, row_max,
                    row_log_sum);
  return {out, row_max, row_log_sum};
}

/// Checks the softmax statistics that backward is given: the forward's shapes, and values the
/// forward can produce (a row's log Σ exp(s - max) is at least 0, as the max term alone is 1;
/// a fully masked row has both -inf). Anything else would give silently wrong gradients.
void check_softmax_stats(
    const char* fn, const torch::Tensor& row_max, const torch::Tensor& row_log_sum,
    const torch::Tensor& query) {
  const auto shape = query.sizes().slice(0, 3);
  for (const auto& [name, t] : {std::pair<const char*, const torch::Tensor&>{"row_max", row_max},
                                {"row_log_sum", row_log_sum}}) {
    TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined, expected [B, H, Lq] from the forward op");
    TORCH_CHECK(
        t.sizes() == shape && t.scalar_type() == query.scalar_type() && t.is_contiguous(), fn,
        ": ", name, " has shape ", torchattn::detail::shape_str(t.sizes()), " and dtype ",
        t.scalar_type(), ", expected a contiguous ", torchattn::detail::shape_str(shape), " ",
        query.scalar_type(), " tensor from the forward op");
  }
  // One pass over the rows, no temporaries: this runs on every backward.
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "check_softmax_stats", [&] {
    const scalar_t* mx = row_max.data_ptr<scalar_t>();
    const scalar_t* ls = row_log_sum.data_ptr<scalar_t>();
    const scalar_t ninf = -std::numeric_limits<scalar_t>::infinity();
    for (int64_t i = 0; i < row_max.numel(); ++i) {
      const bool dead = mx[i] == ninf;
      if (dead != (ls[i] == ninf) || (!dead && ls[i] < 0)) {
        const int64_t lq = row_max.size(2), h = row_max.size(1);
        const std::vector<int64_t> index{i / (lq * h), i / lq % h, i % lq};
        TORCH_CHECK(
            false, fn, ": row_max ", mx[i], " and row_log_sum ", ls[i], " at ",
            torchattn::detail::shape_str(index),
            " are not softmax statistics of the forward op: expected row_log_sum >= 0, or both "
            "-inf on a row with no key to attend");
      }
    }
  });
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> forward_cpu(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask,
    bool is_causal,
    double scale) {
  auto [mask, resolved] = detail::check_sdpa_args(
      "torchattn::_scaled_dot_product_attention_forward", query, key, value, attn_mask,
      /*dropout_p=*/0.0, scale);
  return run_forward(query, key, value, mask, is_causal, resolved);
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> backward_cpu(
    const torch::Tensor& grad_out,
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask,
    const torch::Tensor& out,
    const torch::Tensor& row_max,
    const torch::Tensor& row_log_sum,
    bool is_causal,
    double scale) {
  // grad_out [B, H, Lq, Ev] -> grad_query, grad_key, grad_value shaped as query, key, value
  constexpr const char* fn = "torchattn::_scaled_dot_product_attention_backward";
  auto [mask, resolved] =
      detail::check_sdpa_args(fn, query, key, value, attn_mask, /*dropout_p=*/0.0, scale);
  const std::vector<int64_t> out_shape{query.size(0), query.size(1), query.size(2), value.size(3)};
  for (const auto& [name, t] : {std::pair<const char*, const torch::Tensor&>{"grad_output", grad_out},
                                {"output", out}}) {
    TORCH_CHECK(
        t.sizes() == torch::IntArrayRef(out_shape) && t.scalar_type() == query.scalar_type(),
        fn, ": ", name, " has shape ", torchattn::detail::shape_str(t.sizes()), " and dtype ",
        t.scalar_type(), ", expected ", torchattn::detail::shape_str(out_shape), " and ",
        query.scalar_type());
  }
  check_softmax_stats(fn, row_max, row_log_sum, query);
  if (any_empty({query, key, value})) {
    return empty_backward(grad_out, query, key, value, mask, out, row_max, row_log_sum, is_causal,
                          resolved);
  }
  auto gq = torch::empty_like(query, torch::MemoryFormat::Contiguous);
  auto gk = torch::empty_like(key, torch::MemoryFormat::Contiguous);
  auto gv = torch::empty_like(value, torch::MemoryFormat::Contiguous);
  kernels().backward(grad_out, query, key, value, mask, out, row_max, row_log_sum,
                     cpu::FlashArgs{is_causal, resolved}, gq, gk, gv);
  return {gq, gk, gv};
}

torch::Tensor sdpa_cpu(
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& value,
    const c10::optional<torch::Tensor>& attn_mask,
    double dropout_p,
    bool is_causal,
    c10::optional<double> scale) {
  // query [B, H, Lq, E], key [B, H, Lk, E], value [B, H, Lk, Ev] -> out [B, H, Lq, Ev]
  auto [mask, resolved] = detail::check_sdpa_args(
      "torchattn::scaled_dot_product_attention", query, key, value, attn_mask, dropout_p, scale);
  if (dropout_p > 0.0) {
    return detail::sdpa_math(query, key, value, mask, dropout_p, is_causal, resolved);
  }
  return std::get<0>(run_forward(query, key, value, mask, is_causal, resolved));
}

/// Leading dims of [..., L, D] as one: the batch of the kernels' [N, L, D].
int64_t leading(const torch::Tensor& t) {
  return c10::multiply_integers(t.sizes().slice(0, t.dim() - 2));
}

/// The additive scores' shape [..., Lq, Lk] for query [..., Lq, D] and key [..., Lk, D].
std::vector<int64_t> scores_shape(const torch::Tensor& query, const torch::Tensor& key) {
  auto shape = query.sizes().vec();
  shape.back() = key.size(-2);
  return shape;
}

torch::Tensor additive_scores_cpu(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& score_weight) {
  // query [..., Lq, D], key [..., Lk, D], score_weight [D] -> scores [..., Lq, Lk]
  detail::check_additive_args("torchattn::additive_attention_scores", query, key, score_weight);
  const int64_t N = leading(query), Lq = query.size(-2), Lk = key.size(-2), D = query.size(-1);
  auto scores = torch::empty({N, Lq, Lk}, query.options());
  for_capability(cpu::AVX512::additive_scores_forward, cpu::AVX2::additive_scores_forward,
                 cpu::DEFAULT::additive_scores_forward)(
      query.reshape({N, Lq, D}).contiguous(), key.reshape({N, Lk, D}).contiguous(),
      score_weight.contiguous(), scores);
  return scores.view(scores_shape(query, key));
}

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> additive_scores_backward_cpu(
    const torch::Tensor& grad_scores,
    const torch::Tensor& query,
    const torch::Tensor& key,
    const torch::Tensor& score_weight) {
  // grad_scores [..., Lq, Lk] -> grad_query [..., Lq, D], grad_key [..., Lk, D], grad_score_weight [D]
  constexpr const char* fn = "torchattn::_additive_attention_scores_backward";
  detail::check_additive_args(fn, query, key, score_weight);
  const int64_t N = leading(query), Lq = query.size(-2), Lk = key.size(-2), D = query.size(-1);
  const auto shape = scores_shape(query, key);
  TORCH_CHECK(
      grad_scores.sizes() == torch::IntArrayRef(shape) &&
          grad_scores.scalar_type() == query.scalar_type(),
      fn, ": grad_scores has shape ", torchattn::detail::shape_str(grad_scores.sizes()),
      " and dtype ", grad_scores.scalar_type(), ", expected ", torchattn::detail::shape_str(shape),
      " and ", query.scalar_type());
  auto gq = torch::empty({N, Lq, D}, query.options());
  auto gk = torch::empty({N, Lk, D}, key.options());
  auto gw = torch::empty({D}, score_weight.options());
  for_capability(cpu::AVX512::additive_scores_backward, cpu::AVX2::additive_scores_backward,
                 cpu::DEFAULT::additive_scores_backward)(
      grad_scores.reshape({N, Lq, Lk}).contiguous(), query.reshape({N, Lq, D}).contiguous(),
      key.reshape({N, Lk, D}).contiguous(), score_weight.contiguous(), gq, gk, gw);
  return {gq.view(query.sizes()), gk.view(key.sizes()), gw};
}

} // namespace

std::string kernel_capability() {
  return name_of(static_cast<Capability>(current().load()));
}

std::string set_kernel_capability(const std::string& capability) {
  const Capability asked = parse(capability, "set_kernel_capability: capability");
  TORCH_CHECK(
      static_cast<int>(asked) <= static_cast<int>(supported()),
      "set_kernel_capability: this CPU does not support ", capability, "; it supports up to ",
      name_of(supported()));
  return name_of(static_cast<Capability>(current().exchange(static_cast<int>(asked))));
}

namespace detail {
bool cpu_kernels_registered() {
  return true;
}
} // namespace detail

} // namespace torchattn::ops

TORCH_LIBRARY_IMPL(torchattn, CPU, m) {
  m.impl("scaled_dot_product_attention", TORCH_FN(torchattn::ops::sdpa_cpu));
  m.impl("_scaled_dot_product_attention_forward", TORCH_FN(torchattn::ops::forward_cpu));
  m.impl("_scaled_dot_product_attention_backward", TORCH_FN(torchattn::ops::backward_cpu));
  m.impl("additive_attention_scores", TORCH_FN(torchattn::ops::additive_scores_cpu));
  m.impl("_additive_attention_scores_backward",
         TORCH_FN(torchattn::ops::additive_scores_backward_cpu));
}
