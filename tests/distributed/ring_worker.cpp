// One rank of the ring attention tests, started by a launcher (scripts/launch.sh or torchrun)
// with RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT. Every rank draws the same whole
// sequence from the same seed, computes the reference on it (the attention formula in float64
// with autograd, written out here: GQA by repeating kv heads, causal by global position,
// padding by key), and checks its own shard of ring_attention's output and of the gradients
// of query, key and value against the reference's shard: within 1e-5 in float32 and 1e-10 in
// float64 (relative to the largest reference value), and 3e-2 in bfloat16.
//
//   torchattn_ring_worker               the sweep; exits 1 on the first mismatch
//   torchattn_ring_worker --die RANK    rank RANK exits at once; the others must fail with an
//                                       error within the group's timeout (--timeout S, 10 s)
//   torchattn_ring_worker --stall RANK  rank RANK stops answering (sleeps past the timeout
//                                       without closing its connections); the same

#include <torchattn/distributed/process_group.h>
#include <torchattn/distributed/ring_attention.h>

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <unistd.h>

namespace {

namespace dist = torchattn::distributed;
using torch::Tensor;

struct Case {
  int64_t B, H, Hkv, N, E, Ev;
  bool causal;
  std::string layout;
  bool padding;
  torch::ScalarType dtype;
  bool uneven = false; // contiguous: shard lengths differ between ranks
};

/// The formula on the whole sequence, float64: softmax(q kᵀ scale, masked) v; zeros on a row
/// that sees no key.
Tensor reference(
    const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& pad, bool causal) {
  const int64_t H = q.size(1), Hkv = k.size(1), N = q.size(2);
  const auto kk = k.repeat_interleave(H / Hkv, 1), vv = v.repeat_interleave(H / Hkv, 1);
  auto s = q.matmul(kk.transpose(-2, -1)) / std::sqrt(static_cast<double>(q.size(3)));
  auto allowed = torch::ones({q.size(0), 1, N, N}, torch::kBool);
  if (causal)
    allowed = allowed & torch::ones({N, N}, torch::kBool).tril();
  if (pad.defined())
    allowed = allowed & pad.logical_not().view({q.size(0), 1, 1, N});
  s = s.masked_fill(allowed.logical_not(), -std::numeric_limits<double>::infinity());
  const auto dead = allowed.logical_not().all(-1, true);
  const auto p = torch::softmax(s.masked_fill(dead, 0.0), -1).masked_fill(dead, 0.0);
  return p.matmul(vv);
}

/// This rank's positions of the whole sequence, along dim 2 (or 1 for the padding mask).
std::vector<int64_t> shard_lengths(const Case& c, int world) {
  std::vector<int64_t> len(static_cast<size_t>(world), c.N / world);
  len.back() += c.N % world;
  if (c.uneven) { // e.g. N = 50, P = 2: 17 and 33
    len[0] -= 8;
    len.back() += 8;
  }
  return len;
}

Tensor shard(const Tensor& x, int64_t dim, const Case& c, int rank, int world) {
  if (c.layout == "zigzag")
    return dist::zigzag_shard(x, dim, rank, world);
  const auto len = shard_lengths(c, world);
  int64_t start = 0;
  for (int r = 0; r < rank; ++r)
    start += len[static_cast<size_t>(r)];
  return x.narrow(dim, start, len[static_cast<size_t>(rank)]);
}

double rel_err(const Tensor& got, const Tensor& want) {
  const double scale = std::max(want.abs().max().item<double>(), 1e-30);
  return (got.to(torch::kDouble) - want).abs().max().item<double>() / scale;
}

bool run_case(const Case& c, const c10::intrusive_ptr<c10d::ProcessGroup>& group, int idx) {
  const int rank = group->getRank(), world = group->getSize();
  torch::manual_seed(1000 + idx);
  const auto q = torch::randn({c.B, c.H, c.N, c.E}, torch::kDouble);
  const auto k = torch::randn({c.B, c.Hkv, c.N, c.E}, torch::kDouble);
  const auto v = torch::randn({c.B, c.Hkv, c.N, c.Ev}, torch::kDouble);
  const auto grad = torch::randn({c.B, c.H, c.N, c.Ev}, torch::kDouble);
  // Padding: random keys, and the whole of the first shard's keys for batch row 0 (so that
  // row 0's first queries see nothing under causal attention).
  Tensor pad;
  if (c.padding) {
    pad = torch::rand({c.B, c.N}).lt(0.3);
    pad.index_put_({0, torch::indexing::Slice(0, c.N / (2 * world))}, true);
  }
  // The reference, with its gradients by autograd in float64.
  const auto rq = q.clone().requires_grad_(), rk = k.clone().requires_grad_(),
             rv = v.clone().requires_grad_();
  const auto ref = reference(rq, rk, rv, pad, c.causal);
  ref.backward(grad);

  // This rank's shard, in the case's dtype.
  auto mine = [&](const Tensor& x) { return shard(x, 2, c, rank, world).to(c.dtype); };
  const auto sq = mine(q).requires_grad_(), sk = mine(k).requires_grad_(),
             sv = mine(v).requires_grad_();
  auto opts = dist::RingAttentionOptions().is_causal(c.causal).layout(c.layout);
  if (pad.defined())
    opts.key_padding_mask(shard(pad, 1, c, rank, world));
  auto [out, lse] = dist::ring_attention(sq, sk, sv, group, opts);
  out.backward(mine(grad));

  const double tol = c.dtype == torch::kDouble ? 1e-10 : c.dtype == torch::kFloat ? 1e-5 : 3e-2;
  const double errs[] = {
      rel_err(out, shard(ref, 2, c, rank, world)),
      rel_err(sq.grad(), shard(rq.grad(), 2, c, rank, world)),
      rel_err(sk.grad(), shard(rk.grad(), 2, c, rank, world)),
      rel_err(sv.grad(), shard(rv.grad(), 2, c, rank, world))};
  const bool ok = errs[0] <= tol && errs[1] <= tol && errs[2] <= tol && errs[3] <= tol &&
                  out.scalar_type() == c.dtype;
  std::printf(
      "rank %d case %d: %s B=%ld H=%ld/%ld N=%ld E=%ld Ev=%ld %s %s%s%s: out %.2g dq %.2g dk %.2g "
      "dv %.2g (tol %.0e) %s\n",
      rank, idx, c10::toString(c.dtype), static_cast<long>(c.B), static_cast<long>(c.H),
      static_cast<long>(c.Hkv), static_cast<long>(c.N), static_cast<long>(c.E),
      static_cast<long>(c.Ev), c.causal ? "causal" : "full", c.layout.c_str(),
      c.padding ? " padded" : "", c.uneven ? " uneven" : "", errs[0], errs[1], errs[2], errs[3],
      tol, ok ? "ok" : "FAILED");
  return ok;
}

int sweep(const c10::intrusive_ptr<c10d::ProcessGroup>& group) {
  std::vector<Case> cases;
  for (auto dtype : {torch::kFloat, torch::kDouble}) {
    for (bool causal : {false, true}) {
      for (const char* layout : {"contiguous", "zigzag"}) {
        cases.push_back({2, 4, 4, 64, 16, 16, causal, layout, false, dtype});
        // GQA, head dims with tails, N not divisible by 2P, padding.
        cases.push_back({2, 4, 2, 53, 20, 12, causal, layout, true, dtype});
      }
      cases.push_back({1, 2, 1, 50, 8, 8, causal, "contiguous", true, dtype, /*uneven=*/true});
      // B = 1 with several kv heads: chunks of one kv head each, whose gradient sums arrive in
      // place; with uneven shards, sums of a block of another length arrive beside it.
      cases.push_back({1, 6, 3, 50, 8, 8, causal, "contiguous", true, dtype, /*uneven=*/true});
    }
  }
  // bfloat16 runs too (float32 statistics and merge; each block's output rounded once): within
  // a few bfloat16 ulps of the float64 formula.
  cases.push_back({2, 4, 2, 53, 32, 32, true, "zigzag", true, torch::kBFloat16});
  bool ok = true;
  for (size_t i = 0; i < cases.size(); ++i)
    ok = run_case(cases[i], group, static_cast<int>(i)) && ok;
  return ok ? 0 : 1;
}

/// Rank `die` leaves at once (or, with `stall`, stops answering until past the timeout); every
/// other rank must get an error within the timeout that says a rank may have died, not hang.
int die_test(
    const c10::intrusive_ptr<c10d::ProcessGroup>& group, int die, bool stall, double timeout) {
  if (group->getRank() == die) {
    std::printf("rank %d: %s\n", die, stall ? "stalling" : "exiting without a word");
    std::fflush(stdout);
    if (stall)
      std::this_thread::sleep_for(std::chrono::duration<double>(timeout + 8));
    _exit(0);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const auto q = torch::randn({1, 2, 64, 16});
  try {
    for (int i = 0; i < 100; ++i)
      dist::ring_attention(q, q, q, group);
  } catch (const std::exception& e) {
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("rank %d: failed after %.1f s: %.300s\n", group->getRank(), s, e.what());
    // In time, and saying what happened (not some later check tripping on missing data).
    return s <= timeout + 5 && std::strstr(e.what(), "died") != nullptr ? 0 : 1;
  }
  std::printf("rank %d: no error although rank %d died\n", group->getRank(), die);
  return 1;
}

} // namespace

int main(int argc, char** argv) {
  int die = -1;
  bool stall = false;
  double timeout = 10;
  for (int i = 1; i < argc; ++i) {
    if ((std::strcmp(argv[i], "--die") == 0 || std::strcmp(argv[i], "--stall") == 0) &&
        i + 1 < argc) {
      stall = std::strcmp(argv[i], "--stall") == 0;
      die = std::atoi(argv[++i]);
    } else if (std::strcmp(argv[i], "--timeout") == 0 && i + 1 < argc)
      timeout = std::atof(argv[++i]);
    else {
      std::fprintf(stderr, "usage: %s [--die RANK | --stall RANK] [--timeout SECONDS]\n", argv[0]);
      return 2;
    }
  }
  try {
    const auto env = dist::launch_env();
    const auto group = dist::init_process_group(
        env, std::chrono::milliseconds(static_cast<int64_t>(timeout * 1000)));
    return die >= 0 ? die_test(group, die, stall, timeout) : sweep(group);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "torchattn_ring_worker: %s\n", e.what());
    return 1;
  }
}
