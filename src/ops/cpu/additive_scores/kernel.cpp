// The fused additive (Bahdanau) score: scores_ij = sum_d w_d tanh(q_id + k_jd), without the
// [N, Lq, Lk, D] energy tensor that the composite of ATen ops writes, reads and keeps for
// backward. Backward recomputes each energy where it needs it, so the op's memory is that of
// its inputs and outputs.
//
// This file is compiled once per CPU capability (see ops/cpu/vectorized.h); tanh is
// Vectorized::tanh, the same Sleef function (1 ulp) that ATen's tanh uses on this capability.

#include "ops/cpu/additive_scores/kernel.h"

#include <ATen/Functions.h>

#include "ops/cpu/vectorized.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

// Query rows per task of the forward: about this many tanh evaluations, so that small inputs
// stay on one thread.
constexpr int64_t kForwardGrainElements = 1 << 15;

// sum_d w_d tanh(q_d + k_d)
template <typename scalar_t>
scalar_t energy_dot(const scalar_t* q, const scalar_t* k, const scalar_t* w, int64_t D) {
  using Vec = Vectorized<scalar_t>;
  Vec acc(scalar_t(0));
  int64_t d = 0;
  for (; d + Vec::size() <= D; d += Vec::size()) {
    acc = at::vec::fmadd(Vec::loadu(w + d), (Vec::loadu(q + d) + Vec::loadu(k + d)).tanh(), acc);
  }
  scalar_t lanes[Vec::size()];
  acc.store(lanes);
  scalar_t sum = 0;
  for (const scalar_t lane : lanes) {
    sum += lane;
  }
  for (; d < D; ++d) {
    sum += w[d] * std::tanh(q[d] + k[d]);
  }
  return sum;
}

// With t = tanh(q_d + k_d) and u = g w_d (1 - t^2): dq_d += u, dk_d += u, dw_d += g t.
template <typename scalar_t>
void energy_backward(
    const scalar_t* q, const scalar_t* k, const scalar_t* w, scalar_t g, scalar_t* dq, scalar_t* dk,
    scalar_t* dw, int64_t D) {
  using Vec = Vectorized<scalar_t>;
  const Vec gv(g), one(scalar_t(1));
  int64_t d = 0;
  for (; d + Vec::size() <= D; d += Vec::size()) {
    const Vec t = (Vec::loadu(q + d) + Vec::loadu(k + d)).tanh();
    const Vec u = gv * Vec::loadu(w + d) * (one - t * t);
    (Vec::loadu(dq + d) + u).store(dq + d);
    (Vec::loadu(dk + d) + u).store(dk + d);
    at::vec::fmadd(gv, t, Vec::loadu(dw + d)).store(dw + d);
  }
  for (; d < D; ++d) {
    const scalar_t t = std::tanh(q[d] + k[d]);
    const scalar_t u = g * w[d] * (scalar_t(1) - t * t);
    dq[d] += u;
    dk[d] += u;
    dw[d] += g * t;
  }
}

template <typename scalar_t>
void forward_impl(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& weight, at::Tensor& scores) {
  // query [N, Lq, D], key [N, Lk, D], weight [D] -> scores [N, Lq, Lk]
  const int64_t Lq = query.size(1), Lk = key.size(1), D = query.size(2);
  const scalar_t* q = query.data_ptr<scalar_t>();
  const scalar_t* k = key.data_ptr<scalar_t>();
  const scalar_t* w = weight.data_ptr<scalar_t>();
  scalar_t* s = scores.data_ptr<scalar_t>();
  const int64_t grain = std::max<int64_t>(1, kForwardGrainElements / std::max<int64_t>(1, Lk * D));
  at::parallel_for(0, query.size(0) * Lq, grain, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const scalar_t* kb = k + (r / Lq) * Lk * D;
      for (int64_t j = 0; j < Lk; ++j) {
        s[r * Lk + j] = energy_dot(q + r * D, kb + j * D, w, D);
      }
    }
  });
}

template <typename scalar_t>
void backward_impl(
    const at::Tensor& grad_scores, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& weight, at::Tensor& grad_query, at::Tensor& grad_key,
    at::Tensor& grad_weight) {
  // grad_scores [N, Lq, Lk] -> grad_query [N, Lq, D], grad_key [N, Lk, D], grad_weight [D]
  const int64_t N = query.size(0), Lq = query.size(1), Lk = key.size(1), D = query.size(2);
  // A task is one batch entry's block of query rows, and it owns that block's grad_key sum.
  // With fewer entries than twice the threads, the rows are split into blocks whose grad_key
  // partials are added afterwards; grad_weight has one partial per task.
  const int64_t threads = at::get_num_threads();
  const int64_t blocks = N == 0 || N >= 2 * threads
                             ? 1
                             : std::max<int64_t>(1, std::min(Lq, (2 * threads + N - 1) / N));
  const int64_t rows = (Lq + blocks - 1) / blocks;
  const int64_t tasks = N * blocks;
  at::Tensor key_partials =
      blocks == 1 ? grad_key.zero_() : at::zeros({N, blocks, Lk, D}, key.options());
  at::Tensor weight_partials = at::zeros({tasks, D}, weight.options());
  grad_query.zero_();
  const scalar_t* g = grad_scores.data_ptr<scalar_t>();
  const scalar_t* q = query.data_ptr<scalar_t>();
  const scalar_t* k = key.data_ptr<scalar_t>();
  const scalar_t* w = weight.data_ptr<scalar_t>();
  scalar_t* dq = grad_query.data_ptr<scalar_t>();
  scalar_t* dk = key_partials.data_ptr<scalar_t>();
  scalar_t* dw = weight_partials.data_ptr<scalar_t>();
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / blocks;
      const int64_t row_end = std::min(Lq, (task % blocks + 1) * rows);
      for (int64_t i = (task % blocks) * rows; i < row_end; ++i) {
        const int64_t r = b * Lq + i;
        for (int64_t j = 0; j < Lk; ++j) {
          const scalar_t gij = g[r * Lk + j];
          if (gij == scalar_t(0)) {
            continue; // a masked score, or one that does not reach the loss
          }
          energy_backward(
              q + r * D, k + (b * Lk + j) * D, w, gij, dq + r * D, dk + (task * Lk + j) * D,
              dw + task * D, D);
        }
      }
    }
  });
  if (blocks > 1) {
    grad_key.copy_(key_partials.sum(1));
  }
  grad_weight.copy_(weight_partials.sum(0));
}

/// bfloat16 and float16: in float32 (tanh, products and sums), each result rounded once.
bool is_low_precision(const at::Tensor& t) {
  return t.scalar_type() == at::kBFloat16 || t.scalar_type() == at::kHalf;
}

at::Tensor float_like(const at::Tensor& t) {
  return t.new_empty(t.sizes(), t.options().dtype(at::kFloat));
}

} // namespace

void additive_scores_forward(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& weight, at::Tensor& scores) {
  if (is_low_precision(query)) {
    at::Tensor s32 = float_like(scores);
    forward_impl<float>(query.to(at::kFloat), key.to(at::kFloat), weight.to(at::kFloat), s32);
    scores.copy_(s32);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "additive_scores_forward", [&] {
    forward_impl<scalar_t>(query, key, weight, scores);
  });
}

void additive_scores_backward(
    const at::Tensor& grad_scores, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& weight, at::Tensor& grad_query, at::Tensor& grad_key,
    at::Tensor& grad_weight) {
  if (is_low_precision(query)) {
    at::Tensor gq = float_like(grad_query), gk = float_like(grad_key), gw = float_like(grad_weight);
    backward_impl<float>(
        grad_scores.to(at::kFloat), query.to(at::kFloat), key.to(at::kFloat), weight.to(at::kFloat),
        gq, gk, gw);
    grad_query.copy_(gq);
    grad_key.copy_(gk);
    grad_weight.copy_(gw);
    return;
  }
  AT_DISPATCH_FLOATING_TYPES(query.scalar_type(), "additive_scores_backward", [&] {
    backward_impl<scalar_t>(grad_scores, query, key, weight, grad_query, grad_key, grad_weight);
  });
}

} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu

#include "ops/cpu/vectorized_end.h"
