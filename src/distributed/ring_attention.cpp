// Ring attention over a c10d::ProcessGroup: the schedule (which global positions a shard holds,
// which block pairs a step computes), the ring transfers, and the autograd function whose
// forward and backward each take P steps. The block computations are the fused flex kernel's
// forward and backward ops (_flex_attention_forward / _backward), whose statistics make the
// merge exact: forward merges partial outputs by logsumexp; backward hands every block the
// global logsumexp as its row maximum, so each block's P = exp(s - lse) is the global softmax.

#include <torchattn/distributed/ring_attention.h>
#include <torchattn/ops/flex_attention.h>

#include "detail/checks.h"
#include "detail/error_message.h"

#include <torch/autograd.h>
#include <torch/torch.h>

#include <chrono>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <cmath>
#include <limits>

namespace torchattn::distributed {

namespace {

using torch::Tensor;
using Group = c10::intrusive_ptr<c10d::ProcessGroup>;
using Works = std::vector<c10::intrusive_ptr<c10d::Work>>;
constexpr const char* kFn = "torchattn::distributed::ring_attention";

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

/// A run of global positions [global, global + length) held at [local, local + length) of a
/// rank's shard.
struct Segment {
  int64_t global, local, length;
};

/// Lengths of x.tensor_split(parts) along a dim of size n.
std::vector<int64_t> split_lengths(int64_t n, int64_t parts) {
  std::vector<int64_t> len(static_cast<size_t>(parts), n / parts);
  for (int64_t c = 0; c < n % parts; ++c)
    ++len[static_cast<size_t>(c)];
  return len;
}

/// The segments of every rank's shard, from the shard lengths and the layout.
std::vector<std::vector<Segment>> segments_of(
    const std::vector<int64_t>& lengths, const std::string& layout) {
  const auto P = static_cast<int64_t>(lengths.size());
  std::vector<std::vector<Segment>> segs(lengths.size());
  if (layout == "contiguous") {
    int64_t offset = 0;
    for (int64_t r = 0; r < P; ++r) {
      segs[static_cast<size_t>(r)].push_back({offset, 0, lengths[static_cast<size_t>(r)]});
      offset += lengths[static_cast<size_t>(r)];
    }
    return segs;
  }
  int64_t N = 0;
  for (int64_t n : lengths)
    N += n;
  const auto chunk = split_lengths(N, 2 * P);
  std::vector<int64_t> start(chunk.size() + 1, 0);
  for (size_t c = 0; c < chunk.size(); ++c)
    start[c + 1] = start[c] + chunk[c];
  for (int64_t r = 0; r < P; ++r) {
    const auto a = static_cast<size_t>(r), b = static_cast<size_t>(2 * P - 1 - r);
    TORCH_CHECK(
        lengths[a] == chunk[a] + chunk[b], kFn, ": rank ", r, " holds ", lengths[a],
        " positions, expected ", chunk[a] + chunk[b], " for the zigzag layout of ", N,
        " positions over ", P, " ranks (chunks ", r, " and ", 2 * P - 1 - r, " of ", 2 * P,
        ", as zigzag_shard cuts them)");
    segs[a].push_back({start[a], 0, chunk[a]});
    segs[a].push_back({start[b], chunk[a], chunk[b]});
  }
  return segs;
}

/// What one block pair computes: query rows [q0, q0 + nq) of the shard against keys
/// [k0, k0 + nk) of the block, with keys j <= i + window_right (-1: all).
struct Pair {
  int64_t q0, nq, k0, nk, window_right;
};

/// The pairs of this rank's query segments and a block's key segments; under causal, the
/// rows that see nothing and the keys no row sees are cropped, and pairs with nothing
/// visible are left out.
std::vector<Pair> pairs_of(
    const std::vector<Segment>& qs, const std::vector<Segment>& ks, bool causal) {
  std::vector<Pair> pairs;
  for (const auto& q : qs) {
    for (const auto& k : ks) {
      if (q.length == 0 || k.length == 0)
        continue;
      if (!causal) {
        pairs.push_back({q.local, q.length, k.local, k.length, -1});
        continue;
      }
      // Query i (global q.global + i) sees key j (global k.global + j) iff j <= i + d.
      const int64_t d = q.global - k.global;
      if (d + q.length - 1 < 0)
        continue; // every key is later than every query
      const int64_t i0 = std::max<int64_t>(0, -d);
      const int64_t nk = std::min(k.length, q.length - 1 + d + 1);
      const int64_t dd = d + i0; // >= 0: the offset after cropping i0 rows
      pairs.push_back({q.local + i0, q.length - i0, k.local, nk, dd >= nk - 1 ? -1 : dd});
    }
  }
  return pairs;
}

/// The pair's keys that may be attended, [B, 1, 1, nk] (true = may), from a block's padding
/// mask [B, Lk] (true = padding); none without padding.
c10::optional<Tensor> pair_mask(const Tensor& kpm, const Pair& p) {
  if (!kpm.defined())
    return c10::nullopt;
  return kpm.narrow(1, p.k0, p.nk).logical_not().view({kpm.size(0), 1, 1, p.nk});
}

/// The fused kernel's forward of one pair: (out, lse) of query rows against the block's keys.
std::tuple<Tensor, Tensor> pair_forward(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& kpm, const Pair& p,
    double scale) {
  const auto qp = q.narrow(2, p.q0, p.nq), kp = k.narrow(2, p.k0, p.nk),
             vp = v.narrow(2, p.k0, p.nk);
  const auto mask = pair_mask(kpm, p);
  auto [out, row_max, row_log_sum] = ops::_flex_attention_forward(
      qp, kp, vp, mask, c10::nullopt, "none", -1, p.window_right, c10::nullopt, c10::nullopt,
      c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt, 0.0, c10::nullopt, c10::nullopt,
      c10::nullopt, scale);
  const double inf = std::numeric_limits<double>::infinity();
  auto lse = torch::where(row_max == -inf, row_max, row_max + row_log_sum);
  return {out, lse};
}

/// Merges a partial (out_b, lse_b) into the accumulators of the same rows, by logsumexp.
void merge(Tensor out, Tensor lse, const Tensor& out_b, const Tensor& lse_b) {
  const double inf = std::numeric_limits<double>::infinity();
  const auto m = torch::maximum(lse, lse_b);
  const auto m_safe = torch::where(m == -inf, torch::zeros_like(m), m);
  const auto w = (lse - m_safe).exp(), w_b = (lse_b - m_safe).exp();
  const auto s = w + w_b;
  const auto s_safe = torch::where(s > 0, s, torch::ones_like(s));
  // In place: the [rows, Ev] tensors get no temporaries (the ring's memory is the target).
  out.mul_((w / s_safe).unsqueeze(-1))
      .addcmul_(out_b.to(out.scalar_type()), (w_b / s_safe).unsqueeze(-1));
  lse.copy_(m_safe + s.log());
}

/// The ring: sends to the next rank and receives from the previous one, every transfer
/// waited on with the group's timeout.
class Ring {
 public:
  Ring(Group group, RingTimings* timings) : group_(std::move(group)), timings_(timings) {
    rank_ = group_->getRank();
    size_ = group_->getSize();
  }
  int rank() const { return rank_; }
  int size() const { return size_; }
  int next() const { return (rank_ + 1) % size_; }
  int prev() const { return (rank_ + size_ - 1) % size_; }

  /// Posts the send of `t` to the next rank and the receive of `into` from the previous one,
  /// adding both to `works`.
  void exchange(const Tensor& t, const Tensor& into, int tag, Works& works) {
    if (t.numel() > 0) {
      std::vector<Tensor> out{t};
      works.push_back(group_->send(out, next(), tag));
      if (timings_)
        timings_->bytes_sent += static_cast<int64_t>(t.nbytes());
    }
    if (into.numel() > 0) {
      std::vector<Tensor> in{into};
      works.push_back(group_->recv(in, prev(), tag));
    }
  }

  /// Waits for the transfers of `works` and empties it; the time counts as not hidden.
  void wait(Works& works) {
    if (works.empty())
      return;
    const auto t0 = std::chrono::steady_clock::now();
    for (auto& w : works) {
      try {
        w->wait();
      } catch (const std::exception& e) {
        TORCH_CHECK(
            false, kFn, ": a transfer between rank ", rank_, " and its neighbours failed (has ",
            "another rank died?): ", detail::error_message(e));
      }
    }
    works.clear();
    if (timings_)
      timings_->wait_seconds += seconds_since(t0);
  }

  /// Every rank's int64 vector `mine` (all of the same length), by all-gather.
  std::vector<std::vector<int64_t>> all_gather(const std::vector<int64_t>& mine) {
    auto t = torch::tensor(mine, torch::kLong);
    std::vector<std::vector<Tensor>> outs(1);
    for (int r = 0; r < size_; ++r)
      outs[0].push_back(torch::empty_like(t));
    std::vector<Tensor> ins{t};
    try {
      group_->allgather(outs, ins)->wait();
    } catch (const std::exception& e) {
      TORCH_CHECK(
          false, kFn, ": the ranks could not exchange their shapes (has a rank died?): ",
          detail::error_message(e));
    }
    std::vector<std::vector<int64_t>> all;
    for (const auto& o : outs[0]) {
      const auto c = o.contiguous();
      all.emplace_back(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel());
    }
    return all;
  }

 private:
  Group group_;
  RingTimings* timings_;
  int rank_ = 0, size_ = 1;
};

/// What forward decides once and backward reuses.
struct Plan {
  std::vector<std::vector<Segment>> segs; // per rank
  std::vector<int64_t> lengths;           // per rank
  bool causal = false, padding = false;
  double scale = 1.0;
};

/// Checks this rank's arguments, and that every rank agrees on what must agree.
Plan make_plan(
    Ring& ring, const Tensor& q, const Tensor& k, const Tensor& v, const RingAttentionOptions& o) {
  const auto& kpm = o.key_padding_mask();
  TORCH_CHECK(
      o.layout() == "contiguous" || o.layout() == "zigzag", kFn, ": layout is '", o.layout(),
      "', expected 'contiguous' or 'zigzag'");
  TORCH_CHECK(
      q.defined() && k.defined() && v.defined() && q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
      kFn, ": expected 4-D query [B, H, N_r, E], key [B, H_kv, N_r, E], value [B, H_kv, N_r, Ev]");
  TORCH_CHECK(
      q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), kFn,
      ": expected CPU tensors (the ring's kernels are the CPU flex kernels)");
  TORCH_CHECK(
      k.size(2) == q.size(2) && v.size(2) == q.size(2), kFn,
      ": query, key and value hold the same positions, expected N_r equal; got ", q.size(2), ", ",
      k.size(2), " and ", v.size(2));
  if (kpm.defined()) {
    TORCH_CHECK(
        kpm.scalar_type() == torch::kBool && kpm.dim() == 2 && kpm.size(0) == q.size(0) &&
            kpm.size(1) == q.size(2),
        kFn, ": key_padding_mask has shape ", kpm.sizes(), " and dtype ", kpm.scalar_type(),
        ", expected bool [", q.size(0), ", ", q.size(2), "]");
  }
  torchattn::detail::check_fused_dtype(kFn, "query", q);
  const std::vector<int64_t> mine{
      q.size(2),
      q.size(0),
      q.size(1),
      k.size(1),
      q.size(3),
      v.size(3),
      static_cast<int64_t>(q.scalar_type()),
      o.is_causal(),
      o.layout() == "zigzag",
      kpm.defined(),
      o.scale().has_value() ? static_cast<int64_t>(std::llround(*o.scale() * 1e9)) : -1};
  const auto all = ring.all_gather(mine);
  const char* names[] = {
      "", "B", "H", "H_kv", "E", "Ev", "dtype", "is_causal", "layout", "key_padding_mask", "scale"};
  Plan plan;
  for (int r = 0; r < ring.size(); ++r) {
    const auto& theirs = all[static_cast<size_t>(r)];
    for (size_t i = 1; i < mine.size(); ++i) {
      TORCH_CHECK(
          theirs[i] == mine[i], kFn, ": rank ", r, " and rank ", ring.rank(), " disagree on ",
          names[i], " (", theirs[i], " vs ", mine[i], "); every rank must call with the same ",
          "B, H, H_kv, E, Ev, dtype and options");
    }
    plan.lengths.push_back(theirs[0]);
  }
  plan.segs = segments_of(plan.lengths, o.layout());
  plan.causal = o.is_causal();
  plan.padding = kpm.defined();
  plan.scale = o.scale().has_value() ? *o.scale() : 1.0 / std::sqrt(static_cast<double>(q.size(3)));
  return plan;
}

/// A block of keys and values, split by kv head into chunks that move on their own, and its
/// padding (as bytes; it moves with chunk 0).
struct Block {
  std::vector<Tensor> k, v;
  Tensor kpm;
};

/// A rank's own block: its keys and values split by kv head (views when B = 1; the transfers
/// need contiguous chunks).
Block own_block(const Tensor& k, const Tensor& v, const Tensor& kpm) {
  Block b;
  for (int64_t g = 0; g < k.size(1); ++g) {
    b.k.push_back(k.narrow(1, g, 1).contiguous());
    b.v.push_back(v.narrow(1, g, 1).contiguous());
  }
  b.kpm = kpm.defined() ? kpm.to(torch::kByte).contiguous() : kpm;
  return b;
}

/// t's shape with dim `dim` of size n.
std::vector<int64_t> resized_shape(const Tensor& t, int64_t dim, int64_t n) {
  auto shape = t.sizes().vec();
  shape[static_cast<size_t>(dim)] = n;
  return shape;
}

int owner_at(const Ring& ring, int step) {
  return (ring.rank() - step % ring.size() + ring.size()) % ring.size();
}

Tensor kpm_of(const Tensor& kpm_bytes) {
  return kpm_bytes.defined() ? kpm_bytes.to(torch::kBool) : kpm_bytes;
}

/// Transfers in flight, and the tensors they send that return to the pool when they finish.
struct InFlight {
  Works works;
  std::vector<Tensor> freed;
};

/// The ring's schedule of one step, chunk by chunk, which bounds what is in flight. Chunk g's
/// keys and values are posted to the next rank (and the next block's chunk g received) before
/// chunk g is computed, and waited for after chunk g + 1 is: each transfer has the compute of
/// two chunks to hide behind, and a rank holds about one block and two chunks instead of two
/// blocks. With one kv head (one chunk) a transfer is waited for after its step's compute, as
/// a whole block.
///
/// A chunk whose send has finished goes to a pool that the next receives take from: the same
/// few buffers serve every step. (Freed and allocated anew, the chunks fragment the allocator's
/// heap: glibc raises its mmap threshold past a freed chunk's size, and the heap then holds
/// about 70 MiB more at 16,384 positions per rank.)
class ChunkedStep {
 public:
  ChunkedStep(Ring& ring, const Plan& plan, int64_t chunks)
      : ring_(ring), plan_(plan), chunks_(chunks) {}

  /// Starts step `step`: the pairs of this rank's queries and the step's block to compute.
  std::vector<Pair> start(int step) {
    step_ = step;
    pass_ = step + 1 < ring_.size();
    next_ = Block{std::vector<Tensor>(chunks_), std::vector<Tensor>(chunks_), Tensor()};
    const auto& mine = plan_.segs[static_cast<size_t>(ring_.rank())];
    return pairs_of(mine, plan_.segs[static_cast<size_t>(owner_at(ring_, step))], plan_.causal);
  }

  /// Positions of the block after this step's: the one that arrives (after the last step, the
  /// rank's own, to which backward's sums return).
  int64_t n_after() const { return plan_.lengths[static_cast<size_t>(owner_at(ring_, step_ + 1))]; }

  /// Ends the step: the block that arrived is the one in hand.
  void advance(Block& cur) {
    if (pass_)
      cur = std::move(next_);
  }

  /// A tensor of `shape` and `options`: one that a finished transfer freed, or a new one.
  Tensor take(std::vector<int64_t> shape, const torch::TensorOptions& options) {
    for (auto it = pool_.begin(); it != pool_.end(); ++it) {
      if (it->sizes() == torch::IntArrayRef(shape) && it->dtype() == options.dtype()) {
        Tensor t = std::move(*it);
        pool_.erase(it);
        return t;
      }
    }
    return torch::empty(shape, options);
  }

  /// Gives a tensor that the ring allocated, and no longer reads, to the pool.
  void give(Tensor t) {
    if (t.defined())
      pool_.push_back(std::move(t));
  }

  /// Before chunk g is computed: makes sure it has arrived (one chunk: the previous step's
  /// transfer), then posts its move onward (when the block moves on). Chunks from step 1 on
  /// are the ring's own buffers, pooled once sent; step 0's are the caller's.
  void before(Block& cur, int64_t g) {
    if (chunks_ == 1)
      settle(kv_lag_);
    if (!pass_)
      return;
    const int64_t n = n_after();
    next_.k[g] = take(resized_shape(cur.k[g], 2, n), cur.k[g].options());
    next_.v[g] = take(resized_shape(cur.v[g], 2, n), cur.v[g].options());
    ring_.exchange(cur.k[g], next_.k[g], tag(g, 0), kv_now_.works);
    ring_.exchange(cur.v[g], next_.v[g], tag(g, 1), kv_now_.works);
    if (step_ > 0) {
      kv_now_.freed.push_back(cur.k[g]);
      kv_now_.freed.push_back(cur.v[g]);
    }
    if (g == 0 && cur.kpm.defined()) {
      next_.kpm = torch::empty(resized_shape(cur.kpm, 1, n), cur.kpm.options());
      ring_.exchange(cur.kpm, next_.kpm, tag(g, 2), kv_now_.works);
    }
  }

  /// After chunk g is computed: waits for the previous chunk's transfers (pooling what they
  /// sent) and drops this step's reference to chunk g.
  void after(Block& cur, int64_t g) {
    if (chunks_ > 1)
      settle(kv_lag_);
    for (auto& w : kv_now_.works)
      kv_lag_.works.push_back(std::move(w));
    for (auto& t : kv_now_.freed)
      kv_lag_.freed.push_back(std::move(t));
    kv_now_ = InFlight();
    settle(sum_lag_);
    cur.k[g] = Tensor();
    cur.v[g] = Tensor();
#if defined(__GLIBC__)
    // The pair computations' outputs and workspaces (megabytes each, freed every chunk) leave
    // whole free pages inside glibc's heap; hand them back to the system.
    malloc_trim(0);
#endif
  }

  /// Backward: posts chunk g's gradient sums to the next rank and the receive of the next
  /// block's sums into dk_into and dv_into; waited for one chunk later.
  void pass_sums(
      const Tensor& dk, const Tensor& dv, const Tensor& dk_into, const Tensor& dv_into, int64_t g) {
    ring_.exchange(dk, dk_into, tag(g, 4), sum_lag_.works);
    ring_.exchange(dv, dv_into, tag(g, 5), sum_lag_.works);
    sum_lag_.freed.push_back(dk);
    sum_lag_.freed.push_back(dv);
  }

  /// Waits for everything still in flight.
  void finish() {
    settle(kv_lag_);
    settle(sum_lag_);
  }

 private:
  /// The tag of transfer `kind` of chunk g at this step: 8 per chunk.
  int tag(int64_t g, int kind) const {
    return static_cast<int>((step_ * chunks_ + g) * 8 + kind);
  }

  void settle(InFlight& f) {
    ring_.wait(f.works);
    for (auto& t : f.freed)
      give(std::move(t));
    f.freed.clear();
  }

  Ring& ring_;
  const Plan& plan_;
  const int64_t chunks_;
  int step_ = 0;
  bool pass_ = false; // the block moves on after this step
  Block next_;        // the block arriving
  InFlight kv_now_, kv_lag_, sum_lag_;
  std::vector<Tensor> pool_;
};

void add_compute(RingTimings* timings, std::chrono::steady_clock::time_point t0) {
  if (timings)
    timings->compute_seconds += seconds_since(t0);
}

class RingAttentionFunction : public torch::autograd::Function<RingAttentionFunction> {
 public:
  static torch::autograd::variable_list forward(
      torch::autograd::AutogradContext* ctx, const Tensor& q_in, const Tensor& k_in,
      const Tensor& v_in, const Group& group, const RingAttentionOptions& options,
      RingTimings* timings) {
    Ring ring(group, timings);
    const Plan plan = make_plan(ring, q_in, k_in, v_in, options);
    const auto q = q_in.contiguous(), k = k_in.contiguous(), v = v_in.contiguous();
    const auto stats = torchattn::detail::stats_dtype(q.scalar_type());
    auto out = torch::zeros({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options().dtype(stats));
    auto lse = torch::full(
        {q.size(0), q.size(1), q.size(2)}, -std::numeric_limits<double>::infinity(),
        q.options().dtype(stats));
    const int64_t chunks = k.size(1), G = q.size(1) / chunks;
    Block cur = own_block(k, v, plan.padding ? options.key_padding_mask() : Tensor());
    ChunkedStep sched(ring, plan, chunks);
    for (int step = 0; step < ring.size(); ++step) {
      const auto pairs = sched.start(step);
      Tensor kpm; // the block's padding, which arrived with its chunk 0
      for (int64_t g = 0; g < chunks; ++g) {
        sched.before(cur, g);
        if (g == 0)
          kpm = kpm_of(cur.kpm);
        const auto t0 = std::chrono::steady_clock::now();
        const auto qg = q.narrow(1, g * G, G);
        for (const auto& p : pairs) {
          auto [out_b, lse_b] = pair_forward(qg, cur.k[g], cur.v[g], kpm, p, plan.scale);
          merge(
              out.narrow(1, g * G, G).narrow(2, p.q0, p.nq),
              lse.narrow(1, g * G, G).narrow(2, p.q0, p.nq), out_b, lse_b);
        }
        add_compute(timings, t0);
        sched.after(cur, g);
      }
      sched.advance(cur);
    }
    sched.finish();
    ctx->save_for_backward({q, k, v, out, lse});
    ctx->saved_data["group"] = c10::IValue::make_capsule(group);
    ctx->saved_data["causal"] = plan.causal;
    ctx->saved_data["scale"] = plan.scale;
    ctx->saved_data["zigzag"] = options.layout() == "zigzag";
    ctx->saved_data["lengths"] = plan.lengths;
    // The caller's RingTimings, which must outlive backward (the bench's does).
    ctx->saved_data["timings"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(timings));
    if (plan.padding)
      ctx->saved_data["kpm"] = options.key_padding_mask();
    ctx->mark_non_differentiable({lse});
    return {out.to(q.scalar_type()), lse};
  }

  static torch::autograd::variable_list backward(
      torch::autograd::AutogradContext* ctx, torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const Tensor &q = saved[0], &k = saved[1], &v = saved[2], &out = saved[3], &lse = saved[4];
    auto group = c10::static_intrusive_pointer_cast<c10d::ProcessGroup>(
        ctx->saved_data["group"].toCapsule());
    auto* timings =
        reinterpret_cast<RingTimings*>(static_cast<intptr_t>(ctx->saved_data["timings"].toInt()));
    Ring ring(group, timings);
    Plan plan;
    plan.lengths = ctx->saved_data["lengths"].toIntVector();
    plan.segs =
        segments_of(plan.lengths, ctx->saved_data["zigzag"].toBool() ? "zigzag" : "contiguous");
    plan.causal = ctx->saved_data["causal"].toBool();
    plan.scale = ctx->saved_data["scale"].toDouble();
    plan.padding = ctx->saved_data.count("kpm") > 0;
    const auto grad_out = grads[0].defined() ? grads[0].contiguous() : torch::zeros_like(out);
    const auto acc = out.scalar_type(); // float32 for low precision, else the input dtype
    auto dq = torch::zeros(q.sizes(), q.options().dtype(acc));
    const int64_t chunks = k.size(1), G = q.size(1) / chunks;
    Block cur = own_block(k, v, plan.padding ? ctx->saved_data["kpm"].toTensor() : Tensor());
    // Per chunk: the gradient sums of the block in hand from the ranks that had it before
    // (none at step 0), and those of the next block, arriving.
    std::vector<Tensor> dk_in(chunks), dv_in(chunks);
    // The sums that come back after the last step are this rank's gradients: with B = 1 they
    // arrive in place (a kv head of [1, H_kv, N_r, E] is contiguous), else they are joined.
    const bool in_place = k.size(0) == 1;
    auto dk_own = in_place ? torch::empty(k.sizes(), k.options().dtype(acc)) : Tensor();
    auto dv_own = in_place ? torch::empty(v.sizes(), v.options().dtype(acc)) : Tensor();
    const auto zero_log_sum = torch::zeros_like(lse);
    ChunkedStep sched(ring, plan, chunks);
    for (int step = 0; step < ring.size(); ++step) {
      const auto pairs = sched.start(step);
      const bool last = step + 1 == ring.size();
      Tensor kpm; // the block's padding, which arrived with its chunk 0
      for (int64_t g = 0; g < chunks; ++g) {
        sched.before(cur, g);
        if (g == 0)
          kpm = kpm_of(cur.kpm);
        const auto t0 = std::chrono::steady_clock::now();
        const auto h = [&](const Tensor& t) { return t.narrow(1, g * G, G); };
        auto dk = sched.take(cur.k[g].sizes().vec(), cur.k[g].options().dtype(acc)).zero_();
        auto dv = sched.take(cur.v[g].sizes().vec(), cur.v[g].options().dtype(acc)).zero_();
        for (const auto& p : pairs) {
          const auto rows = [&](const Tensor& t) { return h(t).narrow(2, p.q0, p.nq); };
          auto r = ops::_flex_attention_backward(
              rows(grad_out), rows(q), cur.k[g].narrow(2, p.k0, p.nk),
              cur.v[g].narrow(2, p.k0, p.nk), pair_mask(kpm, p), c10::nullopt, "none", -1,
              p.window_right, c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt, c10::nullopt,
              c10::nullopt, 0.0, c10::nullopt, c10::nullopt, c10::nullopt, rows(out),
              rows(lse).contiguous(), rows(zero_log_sum).contiguous(), plan.scale,
              {false, false, false});
          rows(dq).add_(std::get<0>(r));
          dk.narrow(2, p.k0, p.nk).add_(std::get<1>(r));
          dv.narrow(2, p.k0, p.nk).add_(std::get<2>(r));
        }
        add_compute(timings, t0);
        // The previous chunk's transfers, which include this chunk's sums from the rank before
        // (posted a step ago): add them, and pass the sums on with the block (after the last
        // step, back to the block's owner).
        sched.after(cur, g);
        if (dk_in[g].defined()) {
          dk.add_(dk_in[g]);
          dv.add_(dv_in[g]);
          sched.give(std::move(dk_in[g]));
          sched.give(std::move(dv_in[g]));
        }
        // The sums that arrive are those of the block after this one.
        const bool own = last && in_place;
        dk_in[g] = own ? dk_own.narrow(1, g, 1)
                       : sched.take(resized_shape(dk, 2, sched.n_after()), dk.options());
        dv_in[g] = own ? dv_own.narrow(1, g, 1)
                       : sched.take(resized_shape(dv, 2, sched.n_after()), dv.options());
        sched.pass_sums(dk, dv, dk_in[g], dv_in[g], g);
      }
      sched.advance(cur);
    }
    sched.finish(); // dk_in, dv_in: this rank's own block, summed over every rank
    if (!in_place) {
      dk_own = torch::cat(dk_in, 1);
      dv_own = torch::cat(dv_in, 1);
    }
    return {
        dq.to(q.scalar_type()),
        dk_own.to(k.scalar_type()),
        dv_own.to(v.scalar_type()),
        Tensor(),
        Tensor(),
        Tensor()};
  }
};

} // namespace

std::tuple<torch::Tensor, torch::Tensor> ring_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::intrusive_ptr<c10d::ProcessGroup>& group, const RingAttentionOptions& options,
    RingTimings* timings) {
  TORCH_CHECK(group, kFn, ": group is null, expected a process group");
  auto r = RingAttentionFunction::apply(query, key, value, group, options, timings);
  return {r[0], r[1]};
}

torch::Tensor zigzag_shard(const torch::Tensor& x, int64_t dim, int64_t rank, int64_t world_size) {
  TORCH_CHECK(
      world_size >= 1 && rank >= 0 && rank < world_size,
      "torchattn::distributed::zigzag_shard: rank ", rank, " of ", world_size,
      ", expected 0 <= rank < world_size");
  const auto chunks = x.tensor_split(2 * world_size, dim);
  return torch::cat(
      {chunks[static_cast<size_t>(rank)], chunks[static_cast<size_t>(2 * world_size - 1 - rank)]},
      dim);
}

torch::Tensor zigzag_unshard(const std::vector<torch::Tensor>& shards, int64_t dim) {
  const auto P = static_cast<int64_t>(shards.size());
  TORCH_CHECK(P >= 1, "torchattn::distributed::zigzag_unshard: no shards");
  int64_t N = 0;
  for (const auto& s : shards)
    N += s.size(dim);
  const auto len = split_lengths(N, 2 * P);
  std::vector<torch::Tensor> chunks(static_cast<size_t>(2 * P));
  for (int64_t r = 0; r < P; ++r) {
    const auto a = static_cast<size_t>(r), b = static_cast<size_t>(2 * P - 1 - r);
    TORCH_CHECK(
        shards[a].size(dim) == len[a] + len[b], "torchattn::distributed::zigzag_unshard: shard ", r,
        " has ", shards[a].size(dim), " positions, expected ", len[a] + len[b]);
    chunks[a] = shards[a].narrow(dim, 0, len[a]);
    chunks[b] = shards[a].narrow(dim, len[a], len[b]);
  }
  return torch::cat(chunks, dim);
}

} // namespace torchattn::distributed
