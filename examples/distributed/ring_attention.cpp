// Ring attention across processes: every rank holds one zigzag shard of a causal sequence,
// computes exact attention over the whole of it with ring_attention, and backpropagates.
// Each rank also computes the whole sequence in one process, to show that the two agree.
//
//   scripts/launch.sh 2 build/examples/distributed/torchattn-ring-attention
//   torchrun --no-python --nproc-per-node 2 build/examples/distributed/torchattn-ring-attention

#include <torchattn/distributed/process_group.h>
#include <torchattn/distributed/ring_attention.h>
#include <torchattn/torchattn.h>

#include <cstdio>

int main() {
  try {
    // [readme: ring]
    namespace dist = torchattn::distributed;
    auto group = dist::init_process_group(); // RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    const int rank = group->getRank(), world = group->getSize();

    // The same sequence on every rank (same seed): 1 x 8 heads x 4096 positions x 64.
    torch::manual_seed(0);
    auto q_all = torch::randn({1, 8, 4096, 64}), k_all = torch::randn_like(q_all),
         v_all = torch::randn_like(q_all);
    // This rank's share: chunks rank and 2P - 1 - rank of 2P (even causal work per rank).
    auto q = dist::zigzag_shard(q_all, 2, rank, world).requires_grad_();
    auto k = dist::zigzag_shard(k_all, 2, rank, world).requires_grad_();
    auto v = dist::zigzag_shard(v_all, 2, rank, world).requires_grad_();
    auto [out, lse] = dist::ring_attention(
        q, k, v, group, dist::RingAttentionOptions().is_causal(true).layout("zigzag"));
    out.sum().backward(); // q.grad, k.grad, v.grad: this rank's share of the gradients
    // [readme: end]

    // The whole sequence in one process, sharded the same way.
    auto [whole, whole_lse] = torchattn::ops::flex_attention(
        q_all, k_all, v_all, {}, {}, "top_left", -1, -1, {}, {}, {}, {}, {}, {}, 0.0, {}, {}, {},
        {}, false);
    const double diff =
        (out - dist::zigzag_shard(whole, 2, rank, world)).abs().max().item<double>();
    std::printf(
        "rank %d of %d: %ld of 4096 positions, max |ring - whole| = %.2g\n", rank, world,
        static_cast<long>(q.size(2)), diff);
    return diff < 1e-4 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "torchattn-ring-attention: %s\n", e.what());
    return 1;
  }
}
