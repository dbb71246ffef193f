#include "packed.h"

#include <algorithm>
#include <numeric>

namespace translate {

PackedBatch make_packed_batch(
    const std::vector<EncodedPair>& pairs, const std::vector<size_t>& indices) {
  std::vector<int64_t> src, src_pos, tin, tout, tgt_pos, cu_src{0}, cu_tgt{0};
  for (size_t i : indices) {
    const auto& p = pairs[i];
    for (size_t j = 0; j < p.src.size(); ++j) {
      src.push_back(p.src[j]);
      src_pos.push_back(static_cast<int64_t>(j));
    }
    tin.push_back(Vocab::kBos);
    for (size_t j = 0; j < p.tgt.size(); ++j) {
      tin.push_back(p.tgt[j]);
      tout.push_back(p.tgt[j]);
    }
    tout.push_back(Vocab::kEos);
    for (size_t j = 0; j <= p.tgt.size(); ++j)
      tgt_pos.push_back(static_cast<int64_t>(j));
    cu_src.push_back(static_cast<int64_t>(src.size()));
    cu_tgt.push_back(static_cast<int64_t>(tin.size()));
  }
  auto t = [](const std::vector<int64_t>& v) { return torch::tensor(v, torch::kLong); };
  PackedBatch b;
  b.src = t(src);
  b.src_pos = t(src_pos);
  b.tgt_in = t(tin);
  b.tgt_out = t(tout);
  b.tgt_pos = t(tgt_pos);
  b.cu_src = t(cu_src);
  b.cu_tgt = t(cu_tgt);
  b.target_tokens = static_cast<int64_t>(tout.size());
  return b;
}

std::vector<std::vector<size_t>> packed_batches(
    const std::vector<EncodedPair>& pairs, int64_t max_tokens, std::mt19937_64& rng) {
  std::vector<size_t> order(pairs.size());
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<std::vector<size_t>> batches;
  std::vector<size_t> current;
  int64_t src = 0, tgt = 0;
  for (size_t i : order) {
    const auto s = static_cast<int64_t>(pairs[i].src.size());
    const auto t = static_cast<int64_t>(pairs[i].tgt.size()) + 1;
    if (!current.empty() && std::max(src + s, tgt + t) > max_tokens) {
      batches.push_back(std::move(current));
      current.clear();
      src = tgt = 0;
    }
    current.push_back(i);
    src += s;
    tgt += t;
  }
  if (!current.empty())
    batches.push_back(std::move(current));
  return batches;
}

std::pair<double, double> padding_fraction(
    const std::vector<EncodedPair>& pairs, const std::vector<std::vector<size_t>>& batches) {
  double src_all = 0, src_real = 0, tgt_all = 0, tgt_real = 0;
  for (const auto& b : batches) {
    size_t s_max = 0, t_max = 0;
    for (size_t i : b) {
      s_max = std::max(s_max, pairs[i].src.size());
      t_max = std::max(t_max, pairs[i].tgt.size() + 1);
      src_real += static_cast<double>(pairs[i].src.size());
      tgt_real += static_cast<double>(pairs[i].tgt.size() + 1);
    }
    src_all += static_cast<double>(s_max * b.size());
    tgt_all += static_cast<double>(t_max * b.size());
  }
  return {
      src_all > 0 ? 1.0 - src_real / src_all : 0.0, tgt_all > 0 ? 1.0 - tgt_real / tgt_all : 0.0};
}

} // namespace translate
