// graph_attention's backward, in two passes that recompute the scores (no per-edge tensor is
// kept between them, and nothing from the forward is needed but its inputs):
//   1. by destination (the CSR's rows): each row's softmax again, with its sum and Δ in float64
//      and kept per node, then dS of each edge, the gradient of query, of edge_scale, and of
//      score_weight as partial sums over fixed blocks of rows;
//   2. by source (the CSR transposed by a stable counting sort): p from the row's statistics,
//      and the gradients of key and value.
// Recomputing the row statistics, instead of reading the forward's float32 logsumexp, keeps the
// weights of a node with thousands of edges exact to float32's rounding: an error of lse's
// last bit would scale every weight of the row alike, and its gradients add up coherently.
// Each gradient row is summed by one task in the edges' order, and the blocks' partial sums of
// score_weight in block order: nothing is added atomically, so the gradients are bit-identical
// for every thread count.
//
// With p = softmax(s), m = edge_scale (1 without), dP = dO_i · v_j and Δ_i = Σ_e p m dP (which is
// dO_i · O_i):
//   dS = p (m dP - Δ_i),  dV_j += p m dO_i,  d(edge_scale) = p dP,
//   dQ_i += dS ∂s/∂q,  dK_j += dS ∂s/∂k,  dW += dS ∂s/∂w.
//
// Compiled once per CPU capability (see ops/cpu/vectorized.h).

#include "ops/cpu/graph_attention/kernel.h"

#include "ops/cpu/vectorized.h"

#include "ops/cpu/graph_attention/score.h"

namespace torchattn::ops::cpu {
namespace CPU_CAPABILITY {
namespace {

using graph::acc_type;

// Rows per block of score_weight's partial sums: fixed, so the sum's order is too.
constexpr int64_t kRowsPerBlock = 64;
constexpr int64_t kGrainEdgeHeads = 1 << 14;

/// The edges by source: those of source j are edge[ptr[j] .. ptr[j + 1]), in increasing edge
/// order, with their destinations in dst.
struct BySource {
  std::vector<int64_t> ptr, edge, dst;
};

BySource by_source(const int64_t* row_ptr, const int64_t* col, int64_t Nd, int64_t Ns, int64_t E) {
  BySource t{std::vector<int64_t>(Ns + 1, 0), std::vector<int64_t>(E), std::vector<int64_t>(E)};
  for (int64_t e = 0; e < E; ++e) {
    ++t.ptr[col[e] + 1];
  }
  for (int64_t j = 0; j < Ns; ++j) {
    t.ptr[j + 1] += t.ptr[j];
  }
  std::vector<int64_t> next(t.ptr.begin(), t.ptr.end() - 1);
  for (int64_t i = 0; i < Nd; ++i) {
    for (int64_t e = row_ptr[i]; e < row_ptr[i + 1]; ++e) {
      const int64_t slot = next[col[e]]++;
      t.edge[slot] = e;
      t.dst[slot] = i;
    }
  }
  return t;
}

template <typename scalar_t>
struct Backward {
  using acc_t = acc_type<scalar_t>;
  const scalar_t *dout, *q, *k, *v, *edge_scale;
  const int64_t *row_ptr, *col;
  int64_t Nd, Ns, E, H, D, C;
  scalar_t *gq, *gk, *gv, *g_edge_scale;
  // Per destination and head [Nd, H]: the row max of the scores, 1 / the row sum of
  // exp(s - max) and Δ, for the second pass.
  std::vector<acc_t> row_max, inv_sum, delta;
  std::vector<double> gw_part; // score_weight's partial sums [blocks, H, D], float64

  int64_t grain(int64_t items) const {
    return std::max<int64_t>(1, kGrainEdgeHeads * items / std::max<int64_t>(1, E * H));
  }

  acc_t scale_of(int64_t e, int64_t h) const {
    return edge_scale != nullptr ? graph::widen(edge_scale[e * H + h]) : acc_t(1);
  }

  // The row's softmax p [deg, H] and dP [deg, H], its statistics, and Δ = Σ_e p m dP.
  template <typename Score>
  void row_softmax(const Score& score, int64_t i, std::vector<acc_t>& p, std::vector<acc_t>& dp) {
    const int64_t begin = row_ptr[i], deg = row_ptr[i + 1] - begin;
    const scalar_t* qi = q + i * H * D;
    const scalar_t* doi = dout + i * H * C;
    p.resize(deg * H);
    dp.resize(deg * H);
    acc_t* m = row_max.data() + i * H;
    std::fill(m, m + H, -std::numeric_limits<acc_t>::infinity());
    for (int64_t e = 0; e < deg; ++e) {
      graph::prefetch_ahead(col, begin + e, E, k, H * D, v, H * C); // the next rows' too
      const int64_t j = col[begin + e];
      for (int64_t h = 0; h < H; ++h) {
        p[e * H + h] = score(qi + h * D, k + (j * H + h) * D, h);
        m[h] = std::max(m[h], p[e * H + h]);
        dp[e * H + h] = graph::dot(doi + h * C, v + (j * H + h) * C, C);
      }
    }
    graph::exp_minus_max(p.data(), m, deg, H);
    for (int64_t h = 0; h < H; ++h) {
      double l = 0;
      for (int64_t e = 0; e < deg; ++e) {
        l += p[e * H + h];
      }
      inv_sum[i * H + h] = acc_t(1.0 / l);
      double d = 0;
      for (int64_t e = 0; e < deg; ++e) {
        p[e * H + h] *= inv_sum[i * H + h];
        d += double(p[e * H + h]) * scale_of(begin + e, h) * dp[e * H + h];
      }
      delta[i * H + h] = acc_t(d);
    }
  }

  template <typename Score>
  void destination_row(
      const Score& score, int64_t i, std::vector<acc_t>& p, std::vector<acc_t>& dp, acc_t* gqi,
      double* gw) {
    row_softmax(score, i, p, dp);
    const int64_t begin = row_ptr[i], deg = row_ptr[i + 1] - begin;
    const scalar_t* qi = q + i * H * D;
    std::fill(gqi, gqi + H * D, acc_t(0));
    for (int64_t e = 0; e < deg; ++e) {
      const scalar_t* kj = k + col[begin + e] * H * D;
      for (int64_t h = 0; h < H; ++h) {
        const acc_t pe = p[e * H + h], dpe = dp[e * H + h];
        const acc_t ds = pe * (scale_of(begin + e, h) * dpe - delta[i * H + h]);
        if (g_edge_scale != nullptr) {
          g_edge_scale[(begin + e) * H + h] = graph::narrow<scalar_t>(pe * dpe);
        }
        score.grad_query(ds, qi + h * D, kj + h * D, h, gqi + h * D);
        if constexpr (Score::kHasWeight) {
          score.grad_weight(ds, qi + h * D, kj + h * D, h, gw + h * D);
        }
      }
    }
    for (int64_t x = 0; x < H * D; ++x) {
      gq[i * H * D + x] = graph::narrow<scalar_t>(gqi[x]);
    }
  }

  template <typename Score>
  void by_destination(const Score& score) {
    const int64_t blocks = (Nd + kRowsPerBlock - 1) / kRowsPerBlock;
    row_max.assign(Nd * H, acc_t(0));
    inv_sum.assign(Nd * H, acc_t(0));
    delta.assign(Nd * H, acc_t(0));
    gw_part.assign(Score::kHasWeight ? blocks * H * D : 0, 0.0);
    at::parallel_for(0, blocks, grain(blocks), [&](int64_t b0, int64_t b1) {
      std::vector<acc_t> p, dp, gqi(H * D);
      for (int64_t b = b0; b < b1; ++b) {
        double* gw = Score::kHasWeight ? gw_part.data() + b * H * D : nullptr;
        for (int64_t i = b * kRowsPerBlock; i < std::min(Nd, (b + 1) * kRowsPerBlock); ++i) {
          destination_row(score, i, p, dp, gqi.data(), gw);
        }
      }
    });
  }

  template <typename Score>
  void source_row(
      const Score& score, const BySource& t, int64_t j, acc_t* gkj, acc_t* gvj, acc_t* pe) const {
    const scalar_t* kj = k + j * H * D;
    const scalar_t* vj = v + j * H * C;
    std::fill(gkj, gkj + H * D, acc_t(0));
    std::fill(gvj, gvj + H * C, acc_t(0));
    for (int64_t slot = t.ptr[j]; slot < t.ptr[j + 1]; ++slot) {
      graph::prefetch_ahead(t.dst.data(), slot, E, q, H * D, dout, H * C); // the next sources' too
      const int64_t e = t.edge[slot], i = t.dst[slot];
      const scalar_t* qi = q + i * H * D;
      const scalar_t* doi = dout + i * H * C;
      for (int64_t h = 0; h < H; ++h) {
        pe[h] = score(qi + h * D, kj + h * D, h) - row_max[i * H + h];
      }
      graph::exp_inplace(pe, H);
      for (int64_t h = 0; h < H; ++h) {
        const acc_t p = pe[h] * inv_sum[i * H + h];
        const acc_t dp = graph::dot(doi + h * C, vj + h * C, C);
        const acc_t m = scale_of(e, h);
        const acc_t ds = p * (m * dp - delta[i * H + h]);
        graph::axpy(p * m, doi + h * C, gvj + h * C, C);
        score.grad_key(ds, qi + h * D, kj + h * D, h, gkj + h * D);
      }
    }
    for (int64_t x = 0; x < H * D; ++x) {
      gk[j * H * D + x] = graph::narrow<scalar_t>(gkj[x]);
    }
    for (int64_t x = 0; x < H * C; ++x) {
      gv[j * H * C + x] = graph::narrow<scalar_t>(gvj[x]);
    }
  }

  template <typename Score>
  void by_source_rows(const Score& score) {
    const BySource t = by_source(row_ptr, col, Nd, Ns, E);
    at::parallel_for(0, Ns, grain(Ns), [&](int64_t j0, int64_t j1) {
      std::vector<acc_t> gkj(H * D), gvj(H * C), pe(H);
      for (int64_t j = j0; j < j1; ++j) {
        source_row(score, t, j, gkj.data(), gvj.data(), pe.data());
      }
    });
  }

  // Σ over blocks in block order, rounded once.
  void finish_weight(scalar_t* gw) const {
    const int64_t blocks = (Nd + kRowsPerBlock - 1) / kRowsPerBlock;
    for (int64_t x = 0; x < H * D; ++x) {
      double sum = 0;
      for (int64_t b = 0; b < blocks; ++b) {
        sum += gw_part[b * H * D + x];
      }
      gw[x] = graph::narrow<scalar_t>(sum);
    }
  }
};

template <typename scalar_t>
void backward_typed(
    const at::Tensor& grad_output, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& row_ptr, const at::Tensor& col_index,
    const GraphScoreArgs& args, at::Tensor& grad_query, at::Tensor& grad_key,
    at::Tensor& grad_value, at::Tensor& grad_score_weight, at::Tensor& grad_edge_scale) {
  Backward<scalar_t> bw{
      grad_output.data_ptr<scalar_t>(),
      query.data_ptr<scalar_t>(),
      key.data_ptr<scalar_t>(),
      value.data_ptr<scalar_t>(),
      args.edge_scale.defined() ? args.edge_scale.data_ptr<scalar_t>() : nullptr,
      row_ptr.data_ptr<int64_t>(),
      col_index.data_ptr<int64_t>(),
      query.size(0),
      key.size(0),
      col_index.size(0),
      query.size(1),
      query.size(2),
      value.size(2),
      grad_query.data_ptr<scalar_t>(),
      grad_key.data_ptr<scalar_t>(),
      grad_value.data_ptr<scalar_t>(),
      grad_edge_scale.defined() ? grad_edge_scale.data_ptr<scalar_t>() : nullptr,
      {},
      {},
      {},
      {}};
  graph::with_score<scalar_t>(args, bw.D, [&](const auto& score) {
    bw.by_destination(score);
    bw.by_source_rows(score);
    if constexpr (std::decay_t<decltype(score)>::kHasWeight) {
      bw.finish_weight(grad_score_weight.data_ptr<scalar_t>());
    }
  });
}

} // namespace

void graph_attention_backward(
    const at::Tensor& grad_output, const at::Tensor& query, const at::Tensor& key,
    const at::Tensor& value, const at::Tensor& row_ptr, const at::Tensor& col_index,
    const GraphScoreArgs& args, at::Tensor& grad_query, at::Tensor& grad_key,
    at::Tensor& grad_value, at::Tensor& grad_score_weight, at::Tensor& grad_edge_scale) {
  // grad_output [Nd, H, C] -> grad_query [Nd, H, D], grad_key [Ns, H, D], grad_value [Ns, H, C]
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, query.scalar_type(), "graph_attention_backward", [&] {
        backward_typed<scalar_t>(
            grad_output, query, key, value, row_ptr, col_index, args, grad_query, grad_key,
            grad_value, grad_score_weight, grad_edge_scale);
      });
}

} // namespace CPU_CAPABILITY
} // namespace torchattn::ops::cpu

#include "ops/cpu/vectorized_end.h"
