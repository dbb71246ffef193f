#include <torchattn/nn/kv_cache.h>

#include "detail/checks.h"

#include <torch/torch.h>

#include <algorithm>

namespace torchattn::nn {

using torchattn::detail::shape_str;

KVCache::KVCache(int64_t capacity) : capacity_(capacity) {
  TORCH_CHECK(capacity > 0, "KVCache: capacity is ", capacity, ", expected > 0");
}

int64_t KVCache::max_length() const {
  return lengths_.empty() ? 0 : *std::max_element(lengths_.begin(), lengths_.end());
}

torch::Tensor KVCache::key() const {
  TORCH_CHECK(!empty(), "KVCache: key() of an empty cache, expected an append first");
  return key_.narrow(2, 0, max_length());
}

torch::Tensor KVCache::value() const {
  TORCH_CHECK(!empty(), "KVCache: value() of an empty cache, expected an append first");
  return value_.narrow(2, 0, max_length());
}

torch::Tensor KVCache::lengths() const {
  return torch::tensor(lengths_, torch::kLong);
}

void KVCache::clear() {
  key_ = value_ = torch::Tensor();
  lengths_.clear();
}

void KVCache::reserve(int64_t positions) {
  const int64_t have = key_.size(2);
  if (positions <= have) {
    return;
  }
  // Doubling keeps the copies amortised O(1) per appended position.
  const int64_t grown = std::max(positions, 2 * have);
  auto k = torch::empty({key_.size(0), key_.size(1), grown, key_.size(3)}, key_.options());
  auto v = torch::empty({value_.size(0), value_.size(1), grown, value_.size(3)}, value_.options());
  const int64_t used = max_length();
  k.narrow(2, 0, used).copy_(key_.narrow(2, 0, used));
  v.narrow(2, 0, used).copy_(value_.narrow(2, 0, used));
  key_ = k;
  value_ = v;
}

void KVCache::append(
    const torch::Tensor& key, const torch::Tensor& value, const torch::Tensor& counts) {
  // key [B, H_kv, T, E], value [B, H_kv, T, Ev], counts [B]
  constexpr const char* fn = "KVCache::append";
  TORCH_CHECK(
      key.defined() && value.defined() && key.dim() == 4 && value.dim() == 4 &&
          key.sizes().slice(0, 3) == value.sizes().slice(0, 3),
      fn, ": key and value have shapes ", key.defined() ? shape_str(key.sizes()) : "undefined",
      " and ", value.defined() ? shape_str(value.sizes()) : "undefined",
      ", expected [B, H_kv, T, E] and [B, H_kv, T, Ev]");
  const int64_t B = key.size(0), T = key.size(2);
  if (!empty()) {
    TORCH_CHECK(
        key.size(0) == key_.size(0) && key.size(1) == key_.size(1) && key.size(3) == key_.size(3) &&
            value.size(3) == value_.size(3) && key.scalar_type() == key_.scalar_type() &&
            key.device() == key_.device(),
        fn, ": key has shape ", shape_str(key.sizes()), " ", key.scalar_type(), ", expected [",
        key_.size(0), ", ", key_.size(1), ", T, ", key_.size(3), "] ", key_.scalar_type(),
        " like the cache");
  }
  std::vector<int64_t> n(static_cast<size_t>(B), T);
  if (counts.defined()) {
    TORCH_CHECK(
        counts.dim() == 1 && counts.size(0) == B && counts.scalar_type() == torch::kLong, fn,
        ": counts has shape ", shape_str(counts.sizes()), " ", counts.scalar_type(),
        ", expected Long [", B, "]");
    auto c = counts.to(torch::kCPU).contiguous();
    n.assign(c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + B);
    for (int64_t x : n) {
      TORCH_CHECK(x >= 0 && x <= T, fn, ": counts has ", x, ", expected counts in [0, ", T, "]");
    }
  }
  if (empty()) {
    key_ = torch::empty({B, key.size(1), capacity_, key.size(3)}, key.options());
    value_ = torch::empty({B, value.size(1), capacity_, value.size(3)}, value.options());
    lengths_.assign(static_cast<size_t>(B), 0);
  }
  int64_t needed = 0;
  for (int64_t b = 0; b < B; ++b) {
    needed = std::max(needed, lengths_[b] + n[b]);
  }
  reserve(needed);
  capacity_ = key_.size(2);
  const bool uniform =
      std::all_of(n.begin(), n.end(), [&](int64_t x) { return x == n[0]; }) &&
      std::all_of(lengths_.begin(), lengths_.end(), [&](int64_t x) { return x == lengths_[0]; });
  torch::NoGradGuard no_grad;
  if (uniform) {
    key_.narrow(2, lengths_[0], n[0]).copy_(key.narrow(2, 0, n[0]));
    value_.narrow(2, lengths_[0], n[0]).copy_(value.narrow(2, 0, n[0]));
  } else {
    for (int64_t b = 0; b < B; ++b) {
      if (n[b] > 0) {
        key_[b].narrow(1, lengths_[b], n[b]).copy_(key[b].narrow(1, 0, n[b]));
        value_[b].narrow(1, lengths_[b], n[b]).copy_(value[b].narrow(1, 0, n[b]));
      }
    }
  }
  for (int64_t b = 0; b < B; ++b) {
    lengths_[b] += n[b];
  }
}

void KVCache::reorder(const torch::Tensor& rows) {
  constexpr const char* fn = "KVCache::reorder";
  TORCH_CHECK(!empty(), fn, ": the cache is empty, expected an append first");
  TORCH_CHECK(
      rows.defined() && rows.dim() == 1 && rows.scalar_type() == torch::kLong, fn,
      ": rows has shape ", rows.defined() ? shape_str(rows.sizes()) : "undefined",
      ", expected Long [B']");
  auto r = rows.to(torch::kCPU).contiguous();
  const int64_t B = batch_size(), Bn = r.size(0);
  const int64_t* src = r.data_ptr<int64_t>();
  for (int64_t b = 0; b < Bn; ++b) {
    TORCH_CHECK(
        src[b] >= 0 && src[b] < B, fn, ": rows has ", src[b], ", expected rows in [0, ", B, ")");
  }
  std::vector<int64_t> lengths(static_cast<size_t>(Bn));
  for (int64_t b = 0; b < Bn; ++b) {
    lengths[b] = lengths_[src[b]];
  }
  torch::NoGradGuard no_grad;
  const int64_t used = max_length();
  if (Bn != B) {
    // A new batch (beams expanding): gather every row into a fresh buffer.
    auto k = torch::empty({Bn, key_.size(1), key_.size(2), key_.size(3)}, key_.options());
    auto v = torch::empty({Bn, value_.size(1), value_.size(2), value_.size(3)}, value_.options());
    k.narrow(2, 0, used).copy_(key_.narrow(2, 0, used).index_select(0, r.to(key_.device())));
    v.narrow(2, 0, used).copy_(value_.narrow(2, 0, used).index_select(0, r.to(key_.device())));
    key_ = k;
    value_ = v;
  } else {
    std::vector<int64_t> dst, from;
    for (int64_t b = 0; b < B; ++b) {
      if (src[b] != b) {
        dst.push_back(b);
        from.push_back(src[b]);
      }
    }
    if (!dst.empty()) {
      // Gathered first, so that a row read after another was overwritten is still the old one.
      auto d = torch::tensor(dst, torch::kLong).to(key_.device());
      auto f = torch::tensor(from, torch::kLong).to(key_.device());
      auto k = key_.narrow(2, 0, used).index_select(0, f);
      auto v = value_.narrow(2, 0, used).index_select(0, f);
      key_.narrow(2, 0, used).index_copy_(0, d, k);
      value_.narrow(2, 0, used).index_copy_(0, d, v);
    }
  }
  lengths_ = std::move(lengths);
}

} // namespace torchattn::nn
