#pragma once

/// Ring attention (context parallelism) over any c10d::ProcessGroup: each of P ranks holds a
/// shard of the sequence, and exact attention over the whole sequence is computed by passing
/// key/value blocks around the ring (Liu et al., "Ring Attention with Blockwise Transformers",
/// 2023), with gradients.
///
/// Example (two processes, launched as torchrun or scripts/launch.sh launches them):
/// ```
/// auto group = torchattn::distributed::init_process_group(); // RANK, WORLD_SIZE, MASTER_*
/// // This rank's share of a sequence of N tokens: [B, H, N/P, E] each.
/// auto q = torchattn::distributed::zigzag_shard(q_full, 2, group->getRank(), group->getSize());
/// ...
/// auto [out, lse] = torchattn::distributed::ring_attention(
///     q, k, v, group,
///     torchattn::distributed::RingAttentionOptions().is_causal(true).layout("zigzag"));
/// out.sum().backward(); // dK and dV travel the ring back to their owners
/// ```

#include <torch/arg.h>
#include <torch/types.h>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>

#include <c10/util/Optional.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

namespace torchattn::distributed {

struct RingAttentionOptions {
  /// A query at global position p sees keys at positions <= p. Default: false.
  TORCH_ARG(bool, is_causal) = false;
  /// Which positions a rank's shard holds:
  /// - "contiguous": rank r holds the r-th run of the sequence, in rank order; shards may have
  ///   any lengths (their sum is N).
  /// - "zigzag": the sequence cut into 2P chunks as torch.tensor_split cuts it; rank r holds
  ///   chunks r and 2P - 1 - r, one after the other (zigzag_shard makes such a shard). With
  ///   is_causal every rank then does the same work: an early chunk (little to see) and a
  ///   late one (much to see) on every rank, where "contiguous" leaves rank 0 with one block
  ///   of work and rank P - 1 with P.
  /// Default: "contiguous".
  TORCH_ARG(std::string, layout) = "contiguous";
  /// [B, N_r] bool, true at this rank's padding keys (no query attends them); it travels the
  /// ring with its keys. A query row that sees no key gets zeros. Default: none.
  TORCH_ARG(torch::Tensor, key_padding_mask) = {};
  /// Score scale. Default: 1/√E.
  TORCH_ARG(c10::optional<double>, scale) = c10::nullopt;
};

/// Where the ring spent its time, forward and backward, for the bench: seconds in the block
/// kernels, seconds a rank waited for a transfer after its computation was done (the part not
/// hidden), and bytes sent. Passed to ring_attention, it must outlive the backward pass.
struct RingTimings {
  double compute_seconds = 0, wait_seconds = 0;
  int64_t bytes_sent = 0;
};

/// softmax(q kᵀ · scale) v over the whole sequence, for this rank's queries.
///
/// query [B, H, N_r, E], key [B, H_kv, N_r, E], value [B, H_kv, N_r, Ev] (this rank's shard;
/// H_kv divides H: grouped-query attention) -> output [B, H, N_r, Ev], lse [B, H, N_r] (the
/// logsumexp of each row's scaled scores, float32 for bfloat16/float16 inputs; -inf where a row
/// sees no key). Every rank of `group` calls it with the same options, B, H, H_kv, E, Ev and
/// dtype; N_r may differ. Gradients flow to query, key and value (not through lse).
///
/// Forward takes P steps: each computes this rank's queries against one key/value block with
/// the fused kernel while the block moves on to the next rank (send/recv overlapped with the
/// computation), and merges the partial outputs by their logsumexp. Backward takes P steps
/// again, with dK and dV travelling with their blocks and returning to their owners.
/// A rank that dies makes the others fail with the group's timeout, not hang.
std::tuple<torch::Tensor, torch::Tensor> ring_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const c10::intrusive_ptr<c10d::ProcessGroup>& group, const RingAttentionOptions& options = {},
    RingTimings* timings = nullptr);

/// This rank's "zigzag" shard of `x` along `dim`: chunks `rank` and 2P - 1 - `rank` of
/// x.tensor_split(2P, dim), concatenated.
torch::Tensor zigzag_shard(const torch::Tensor& x, int64_t dim, int64_t rank, int64_t world_size);

/// The whole tensor from the zigzag shards of all ranks, in rank order (zigzag_shard's inverse).
torch::Tensor zigzag_unshard(const std::vector<torch::Tensor>& shards, int64_t dim);

} // namespace torchattn::distributed
