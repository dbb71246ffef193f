#include <torchattn/nn/functional/flex_attention.h>

#include <torchattn/ops/flex_attention.h>

#include "detail/checks.h"
#include "detail/flex_args.h"
#include "detail/optional_tensor.h"
#include "ops/flex_attention_params.h"

#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <cmath>

namespace torchattn::nn::functional {

namespace {

using detail::optional_tensor;

/// Calls `call` with the op's modifier arguments from the options, in schema order, then
/// scale and enable_gqa.
template <typename Call>
auto with_modifiers(const FlexAttentionFuncOptions& o, Call&& call) {
  const auto& bm = o.block_mask();
  return call(
      optional_tensor(o.attn_mask()), optional_tensor(o.bias()), c10::string_view(o.causal()),
      o.window_left(), o.window_right(), optional_tensor(o.q_doc_ids()),
      optional_tensor(o.kv_doc_ids()), optional_tensor(o.prefix_lengths()),
      bm ? optional_tensor(bm->kinds) : c10::nullopt,
      bm ? optional_tensor(bm->index) : c10::nullopt,
      bm ? optional_tensor(bm->masks) : c10::nullopt, o.softcap(),
      optional_tensor(o.alibi_slopes()), optional_tensor(o.position_bias()),
      optional_tensor(o.position_buckets()), o.scale(), o.enable_gqa());
}

} // namespace

double BlockMask::density() const {
  return kinds.numel() == 0 ? 0.0 : kinds.ne(0).to(torch::kDouble).mean().item<double>();
}

FlexAttentionOutput flex_attention(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const FlexAttentionFuncOptions& options) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], value [B, H_kv, Lk, Ev]
  //   -> output [B, H, Lq, Ev], lse [B, H, Lq], weights [B, H, Lq, Lk]
  if (!options.need_weights()) {
    auto [out, lse] = with_modifiers(options, [&](auto&&... args) {
      return torchattn::ops::flex_attention(query, key, value, args...);
    });
    return {out, lse, {}};
  }
  // The same modifiers as the op's call above, as one value for the math path.
  const auto flex = with_modifiers(options, [](TORCHATTN_FLEX_PARAMS, c10::optional<double>, bool) {
    return TORCHATTN_FLEX_ARGS_VALUE;
  });
  const auto checked = detail::check_flex_args(
      "torchattn::nn::functional::flex_attention", query, key, value, flex, options.scale(),
      options.enable_gqa());
  auto [out, lse, weights] = detail::math_flex_attention(query, key, value, flex, checked);
  return {out, lse, weights};
}

torch::Tensor flex_attention_weights(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& lse,
    const torch::Tensor& rows, const FlexAttentionFuncOptions& options) {
  // query [B, H, Lq, E], key [B, H_kv, Lk, E], lse [B, H, Lq], rows [R] -> [B, H, R, Lk]
  return with_modifiers(options, [&](auto&&... args) {
    return torchattn::ops::flex_attention_weights(query, key, lse, rows, args...);
  });
}

FlexAttentionOutput flex_attention_varlen(
    const torch::Tensor& query, const torch::Tensor& key, const torch::Tensor& value,
    const torch::Tensor& cu_seqlens_q, const torch::Tensor& cu_seqlens_k,
    const FlexAttentionFuncOptions& options) {
  // query [T, H, E], key [Tk, H_kv, E], value [Tk, H_kv, Ev] -> output [T, H, Ev], lse [H, T]
  constexpr const char* fn = "torchattn::nn::functional::flex_attention_varlen";
  for (const auto& [name, t] :
       {std::pair<const char*, const torch::Tensor&>{"query", query},
        {"key", key},
        {"value", value}}) {
    TORCH_CHECK(
        t.defined() && t.dim() == 3, fn, ": ", name, " has shape ",
        t.defined() ? detail::shape_str(t.sizes()) : "undefined",
        ", expected 3 dims [T, heads, features]");
  }
  TORCH_CHECK(
      !options.q_doc_ids().defined() && !options.kv_doc_ids().defined(), fn,
      ": options hold document ids, expected none (cu_seqlens define the documents)");
  auto doc_ids = [&](const char* name, const torch::Tensor& cu, int64_t T) {
    TORCH_CHECK(
        cu.defined() && cu.dim() == 1 && cu.size(0) >= 1 && cu.scalar_type() == torch::kLong, fn,
        ": ", name, " has shape ", cu.defined() ? detail::shape_str(cu.sizes()) : "undefined",
        ", expected Long [S + 1]");
    TORCH_CHECK(
        cu[0].item<int64_t>() == 0 && cu[-1].item<int64_t>() == T &&
            (cu.size(0) == 1 || cu.diff().ge(0).all().item<bool>()),
        fn, ": ", name, " is ", cu, " expected non-decreasing offsets from 0 to ", T);
    // Token t belongs to sequence s where cu[s] <= t < cu[s + 1].
    return torch::searchsorted(
               cu, torch::arange(T, cu.options()), /*out_int32=*/false,
               /*right=*/true) -
           1;
  };
  const bool aligned = options.causal() != "none" || options.window_left() >= 0 ||
                       options.window_right() >= 0 || options.prefix_lengths().defined();
  TORCH_CHECK(
      !aligned ||
          (cu_seqlens_q.sizes() == cu_seqlens_k.sizes() && cu_seqlens_q.equal(cu_seqlens_k)),
      fn, ": causal masks, windows and prefixes need cu_seqlens_q equal to cu_seqlens_k");
  auto opts = options;
  opts.q_doc_ids(doc_ids("cu_seqlens_q", cu_seqlens_q, query.size(0)));
  opts.kv_doc_ids(doc_ids("cu_seqlens_k", cu_seqlens_k, key.size(0)));
  auto as_heads = [](const torch::Tensor& t) { return t.transpose(0, 1).unsqueeze(0); };
  auto r = flex_attention(as_heads(query), as_heads(key), as_heads(value), opts);
  r.output = r.output.squeeze(0).transpose(0, 1);
  r.lse = r.lse.squeeze(0);
  if (r.weights.defined()) {
    r.weights = r.weights.squeeze(0);
  }
  return r;
}

BlockMask create_block_mask(
    const MaskMod& mask_mod, int64_t B, int64_t H, int64_t Lq, int64_t Lk, int64_t block_size) {
  constexpr const char* fn = "torchattn::nn::functional::create_block_mask";
  TORCH_CHECK(static_cast<bool>(mask_mod), fn, ": mask_mod is empty, expected a callable");
  TORCH_CHECK(
      B >= 1 && H >= 1 && Lq >= 0 && Lk >= 0 && block_size >= 1, fn, ": got B=", B, ", H=", H,
      ", Lq=", Lq, ", Lk=", Lk, ", block_size=", block_size,
      ", expected B, H, block_size >= 1 and lengths >= 0");
  const int64_t S = block_size;
  const int64_t nqb = (Lq + S - 1) / S, nkb = (Lk + S - 1) / S;
  auto dense = torch::empty({B, H, nqb, nkb, S, S}, torch::kBool);
  bool* d = dense.data_ptr<bool>();
  // Each (b, h, query block) row of blocks is one task; padding past Lq or Lk is false.
  at::parallel_for(0, B * H * nqb, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / (H * nqb), h = task / nqb % H, qb = task % nqb;
      for (int64_t kb = 0; kb < nkb; ++kb) {
        bool* blk = d + (task * nkb + kb) * S * S;
        for (int64_t r = 0; r < S; ++r) {
          for (int64_t c = 0; c < S; ++c) {
            const int64_t q = qb * S + r, kv = kb * S + c;
            blk[r * S + c] = q < Lq && kv < Lk && mask_mod(b, h, q, kv);
          }
        }
      }
    }
  });
  return block_mask_from_dense(
      dense.permute({0, 1, 2, 4, 3, 5})
          .reshape({B, H, nqb * S, nkb * S})
          .narrow(2, 0, Lq)
          .narrow(3, 0, Lk),
      block_size);
}

BlockMask block_mask_from_dense(const torch::Tensor& mask, int64_t block_size) {
  constexpr const char* fn = "torchattn::nn::functional::block_mask_from_dense";
  TORCH_CHECK(
      mask.defined() && mask.dim() == 4 && mask.scalar_type() == torch::kBool, fn,
      ": mask has shape ", mask.defined() ? detail::shape_str(mask.sizes()) : "undefined",
      ", expected a 4-D Bool [B, H, Lq, Lk]");
  TORCH_CHECK(block_size >= 1, fn, ": block_size is ", block_size, ", expected >= 1");
  const int64_t S = block_size, B = mask.size(0), H = mask.size(1);
  const int64_t Lq = mask.size(2), Lk = mask.size(3);
  const int64_t nqb = (Lq + S - 1) / S, nkb = (Lk + S - 1) / S;
  // Padded to whole blocks; padding counts as allowed for "full" (the kernel never reads it)
  // and as not allowed for "empty".
  auto pad = [&](bool value) {
    auto p = torch::full({B, H, nqb * S, nkb * S}, value, torch::kBool);
    p.narrow(2, 0, Lq).narrow(3, 0, Lk).copy_(mask);
    return p.view({B, H, nqb, S, nkb, S}).permute({0, 1, 2, 4, 3, 5});
  };
  auto as_true = pad(true), as_false = pad(false);
  auto full = as_true.all(-1).all(-1);
  auto empty = as_false.any(-1).any(-1).logical_not();
  BlockMask bm;
  bm.block_size = S;
  bm.Lq = Lq;
  bm.Lk = Lk;
  bm.kinds = torch::where(full, 2, torch::where(empty, 0, 1)).to(torch::kByte).contiguous();
  auto partial = bm.kinds.eq(1);
  bm.index = torch::full_like(bm.kinds, -1, torch::kLong);
  const int64_t P = partial.sum().item<int64_t>();
  bm.index.masked_scatter_(partial, torch::arange(P, torch::kLong));
  bm.masks = as_false.reshape({B, H, nqb, nkb, S, S}).index({partial}).contiguous();
  return bm;
}

MaskMod and_masks(std::vector<MaskMod> mods) {
  return [mods = std::move(mods)](int64_t b, int64_t h, int64_t q, int64_t kv) {
    return std::all_of(mods.begin(), mods.end(), [&](const MaskMod& m) { return m(b, h, q, kv); });
  };
}

MaskMod or_masks(std::vector<MaskMod> mods) {
  return [mods = std::move(mods)](int64_t b, int64_t h, int64_t q, int64_t kv) {
    return std::any_of(mods.begin(), mods.end(), [&](const MaskMod& m) { return m(b, h, q, kv); });
  };
}

torch::Tensor alibi_slopes(int64_t num_heads) {
  TORCH_CHECK(
      num_heads >= 1, "torchattn::nn::functional::alibi_slopes: num_heads is ", num_heads,
      ", expected >= 1");
  // Press et al.: for a power of two n, slopes 2^(-8/n), 2^(-16/n), ...; otherwise those of
  // the largest power of two below, then every other slope of twice that.
  auto pow2_slopes = [](int64_t n) {
    std::vector<double> s;
    const double start = std::pow(2.0, -8.0 / static_cast<double>(n));
    for (int64_t i = 0; i < n; ++i) {
      s.push_back(std::pow(start, static_cast<double>(i + 1)));
    }
    return s;
  };
  const int64_t closest = int64_t(1) << static_cast<int>(std::floor(std::log2(num_heads)));
  auto slopes = pow2_slopes(closest);
  if (closest != num_heads) {
    const auto extra = pow2_slopes(2 * closest);
    for (int64_t i = 0; i < num_heads - closest; ++i) {
      slopes.push_back(extra[static_cast<size_t>(2 * i)]);
    }
  }
  return torch::tensor(slopes, torch::kDouble).to(torch::kFloat);
}

torch::Tensor t5_position_buckets(
    int64_t Lq, int64_t Lk, int64_t num_buckets, int64_t max_distance, bool bidirectional) {
  constexpr const char* fn = "torchattn::nn::functional::t5_position_buckets";
  TORCH_CHECK(
      num_buckets >= (bidirectional ? 4 : 2) &&
          max_distance > num_buckets / (bidirectional ? 4 : 2),
      fn, ": num_buckets ", num_buckets, " and max_distance ", max_distance,
      ", expected at least 4 (2 unidirectional) buckets and max_distance above the exact range");
  // HuggingFace's T5Attention._relative_position_bucket, op for op (float32 logs), so that
  // the buckets match theirs exactly.
  auto relative = torch::arange(-(Lq - 1), Lk, torch::kLong); // memory - query = j - i
  auto buckets = torch::zeros_like(relative);
  int64_t n = num_buckets;
  if (bidirectional) {
    n /= 2;
    buckets = buckets + relative.gt(0).to(torch::kLong) * n;
    relative = relative.abs();
  } else {
    relative = -torch::clamp_max(relative, 0);
  }
  const int64_t max_exact = n / 2;
  auto is_small = relative.lt(max_exact);
  auto large = max_exact + (torch::log(relative.to(torch::kFloat) / max_exact) /
                            std::log(static_cast<double>(max_distance) / max_exact) *
                            static_cast<double>(n - max_exact))
                               .to(torch::kLong);
  large = torch::clamp_max(large, n - 1);
  return buckets + torch::where(is_small, relative, large);
}

torch::Tensor clipped_position_buckets(int64_t Lq, int64_t Lk, int64_t max_distance) {
  TORCH_CHECK(
      max_distance >= 0, "torchattn::nn::functional::clipped_position_buckets: max_distance is ",
      max_distance, ", expected >= 0");
  return torch::arange(-(Lq - 1), Lk, torch::kLong).clamp(-max_distance, max_distance) +
         max_distance;
}

} // namespace torchattn::nn::functional
