// graph_attention's forward: one destination node at a time (a row of the CSR), every head at
// once. Its edges' scores go to a buffer of the row's size (degree × H, reused by the thread),
// their softmax follows with the row's maxima, and the weighted sum of the sources' values is
// accumulated in acc_t; the row's logsumexp is an output of its own. Rows are independent, so the
// result does not depend on how they are shared out between threads.
//
// Compiled once per CPU capability (see ops/cpu/vectorized.h).

#include "ops/cpu/graph_attention/kernel.h"

#include "ops/cpu/vectorized.h"

#include "ops/cpu/graph_attention/score.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

using graph::acc_type;

// Edge-heads per task, so that small graphs stay on one thread.
constexpr int64_t kGrainEdgeHeads = 1 << 14;

template <typename scalar_t>
struct ForwardRows {
  using acc_t = acc_type<scalar_t>;
  const scalar_t *q, *k, *v, *edge_scale;
  const int64_t *row_ptr, *col;
  int64_t H, D, C;
  scalar_t* out;
  acc_type<scalar_t>* lse; // float32 for bfloat16/float16, as the op allocates it
  scalar_t* weights;       // null unless asked
  int64_t E = 0;           // edges

  // The row's scores, then their exp(s - max) in place; the maxima and sums per head.
  template <typename Score>
  void softmax_row(
      const Score& score, int64_t i, std::vector<acc_t>& p, std::vector<acc_t>& m,
      std::vector<acc_t>& l) const {
    const int64_t begin = row_ptr[i], deg = row_ptr[i + 1] - begin;
    p.resize(deg * H);
    std::fill(m.begin(), m.end(), -std::numeric_limits<acc_t>::infinity());
    std::fill(l.begin(), l.end(), acc_t(0));
    const scalar_t* qi = q + i * H * D;
    for (int64_t e = 0; e < deg; ++e) {
      graph::prefetch_ahead(col, begin + e, E, k, H * D, v, H * C); // the next rows' too
      const scalar_t* kj = k + col[begin + e] * H * D;
      for (int64_t h = 0; h < H; ++h) {
        const acc_t s = score(qi + h * D, kj + h * D, h);
        p[e * H + h] = s;
        m[h] = std::max(m[h], s);
      }
    }
    graph::exp_minus_max(p.data(), m.data(), deg, H);
    for (int64_t e = 0; e < deg; ++e) {
      for (int64_t h = 0; h < H; ++h) {
        l[h] += p[e * H + h];
      }
    }
  }

  // out_i = Σ_e p_e edge_scale_e v_j / l, lse_i = m + log l, weights_e = p_e edge_scale_e / l.
  void finish_row(
      int64_t i, const std::vector<acc_t>& p, const std::vector<acc_t>& m,
      const std::vector<acc_t>& l, std::vector<acc_t>& acc) const {
    const int64_t begin = row_ptr[i], deg = row_ptr[i + 1] - begin;
    std::fill(acc.begin(), acc.end(), acc_t(0));
    for (int64_t e = 0; e < deg; ++e) {
      const scalar_t* vj = v + col[begin + e] * H * C;
      for (int64_t h = 0; h < H; ++h) {
        acc_t c = p[e * H + h];
        if (edge_scale != nullptr) {
          c *= graph::widen(edge_scale[(begin + e) * H + h]);
        }
        graph::axpy(c, vj + h * C, acc.data() + h * C, C);
      }
    }
    for (int64_t h = 0; h < H; ++h) {
      const acc_t inv = deg > 0 ? acc_t(1) / l[h] : acc_t(0);
      for (int64_t c = 0; c < C; ++c) {
        out[(i * H + h) * C + c] = graph::narrow<scalar_t>(acc[h * C + c] * inv);
      }
      lse[i * H + h] = deg > 0 ? m[h] + std::log(l[h]) : m[h];
      if (weights != nullptr) {
        for (int64_t e = 0; e < deg; ++e) {
          acc_t w = p[e * H + h] * inv;
          if (edge_scale != nullptr) {
            w *= graph::widen(edge_scale[(begin + e) * H + h]);
          }
          weights[(begin + e) * H + h] = graph::narrow<scalar_t>(w);
        }
      }
    }
  }

  template <typename Score>
  void run(const Score& score, int64_t Nd) const {
    const int64_t grain = std::max<int64_t>(1, kGrainEdgeHeads * Nd / std::max<int64_t>(1, E * H));
    at::parallel_for(0, Nd, grain, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> p, m(H), l(H), acc(H * C);
      for (int64_t i = begin; i < end; ++i) {
        softmax_row(score, i, p, m, l);
        finish_row(i, p, m, l, acc);
      }
    });
  }
};

template <typename scalar_t>
void forward_typed(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    const at::Tensor& row_ptr, const at::Tensor& col_index, const GraphScoreArgs& args,
    at::Tensor& output, at::Tensor& lse, at::Tensor& weights) {
  using acc_t = acc_type<scalar_t>;
  const int64_t H = query.size(1), D = query.size(2), C = value.size(2);
  ForwardRows<scalar_t> rows{
      query.data_ptr<scalar_t>(),
      key.data_ptr<scalar_t>(),
      value.data_ptr<scalar_t>(),
      args.edge_scale.defined() ? args.edge_scale.data_ptr<scalar_t>() : nullptr,
      row_ptr.data_ptr<int64_t>(),
      col_index.data_ptr<int64_t>(),
      H,
      D,
      C,
      output.data_ptr<scalar_t>(),
      lse.data_ptr<acc_t>(),
      weights.defined() ? weights.data_ptr<scalar_t>() : nullptr,
      col_index.size(0)};
  graph::with_score<scalar_t>(args, D, [&](const auto& score) { rows.run(score, query.size(0)); });
}

} // namespace

void graph_attention_forward(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value,
    const at::Tensor& row_ptr, const at::Tensor& col_index, const GraphScoreArgs& args,
    at::Tensor& output, at::Tensor& lse, at::Tensor& weights) {
  // query [Nd, H, D], key [Ns, H, D], value [Ns, H, C] -> output [Nd, H, C], lse [Nd, H]
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, query.scalar_type(), "graph_attention_forward", [&] {
        forward_typed<scalar_t>(query, key, value, row_ptr, col_index, args, output, lse, weights);
      });
}

} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu

#include "ops/cpu/vectorized_end.h"
