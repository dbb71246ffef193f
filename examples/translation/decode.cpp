#include "decode.h"

#include <torch/autograd.h>

#include <algorithm>
#include <cmath>
#include <numeric>

namespace translate {

using torch::Tensor;

std::vector<Hypothesis> greedy_decode(
    Seq2SeqImpl& model, const Tensor& src, const Tensor& src_pad, int64_t max_len,
    bool keep_attention) {
  torch::NoGradGuard no_grad;
  const int64_t B = src.size(0);
  auto state = model.encode(src, src_pad);
  Tensor tokens = torch::full({B}, Vocab::kBos, torch::kLong);
  Tensor finished = torch::zeros({B}, torch::kBool);
  std::vector<Tensor> steps, attentions, log_probs;
  for (int64_t t = 0; t < max_len; ++t) {
    Tensor attn;
    const Tensor logp = model.step(*state, tokens, keep_attention ? &attn : nullptr);
    auto [best, next] = logp.max(-1);
    next = next.masked_fill(finished, Vocab::kPad);
    steps.push_back(next);
    log_probs.push_back(best.masked_fill(finished, 0.0));
    if (keep_attention)
      attentions.push_back(attn);
    finished = finished.logical_or(next.eq(Vocab::kEos));
    tokens = next;
    if (finished.all().item<bool>())
      break;
  }
  const Tensor all = torch::stack(steps, 1); // [B, T]
  const Tensor lp = torch::stack(log_probs, 1).sum(1).to(torch::kDouble);
  const Tensor att = keep_attention ? torch::stack(attentions, 1) : Tensor(); // [B, T, S]
  std::vector<Hypothesis> out(B);
  auto acc = all.accessor<int64_t, 2>();
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = 0; t < all.size(1); ++t) {
      const int64_t id = acc[b][t];
      if (id == Vocab::kPad)
        break;
      out[b].tokens.push_back(id);
      if (id == Vocab::kEos)
        break;
    }
    out[b].log_prob = lp[b].item<double>();
    if (keep_attention)
      out[b].attention = att[b].narrow(0, 0, static_cast<int64_t>(out[b].tokens.size()));
  }
  return out;
}

namespace {

struct Beam {
  std::vector<int64_t> tokens;
  std::vector<Tensor> attention;
  double log_prob = 0;
};

/// One sentence's search: its live beams, the finished ones, and whether it is done.
struct Search {
  std::vector<Beam> alive = std::vector<Beam>(1);
  std::vector<Beam> finished;
  bool done = false;
};

/// Advances one sentence by a step from its rows `logp` [n, V] (and `attn` [n, S]); returns
/// the rows (of logp) its surviving beams came from.
std::vector<int64_t> advance(
    Search& s, const Tensor& logp, const Tensor& attn, int64_t beam, bool keep_attention) {
  const int64_t V = logp.size(1);
  std::vector<double> prior;
  for (auto& b : s.alive)
    prior.push_back(b.log_prob);
  const Tensor scores = logp + torch::tensor(prior, torch::kDouble).unsqueeze(1);
  const int64_t k = std::min<int64_t>(2 * beam, scores.numel());
  auto [top, idx] = scores.flatten().topk(k);
  std::vector<Beam> next;
  std::vector<int64_t> origin;
  for (int64_t c = 0; c < k && static_cast<int64_t>(next.size()) < beam; ++c) {
    const int64_t flat = idx[c].item<int64_t>();
    const int64_t from = flat / V, token = flat % V;
    Beam b = s.alive[from];
    b.tokens.push_back(token);
    b.log_prob = top[c].item<double>();
    if (keep_attention)
      b.attention.push_back(attn[from]);
    if (token == Vocab::kEos) {
      s.finished.push_back(std::move(b));
      if (static_cast<int64_t>(s.finished.size()) >= beam)
        break;
    } else {
      next.push_back(std::move(b));
      origin.push_back(from);
    }
  }
  if (static_cast<int64_t>(s.finished.size()) >= beam) {
    s.alive.clear();
    origin.clear();
  } else {
    s.alive = std::move(next);
  }
  s.done = s.alive.empty();
  return origin;
}

/// The best finished (or, at max_len, live) hypothesis by log_prob / length^alpha.
Hypothesis best_of(Search& s, double alpha, bool keep_attention) {
  for (auto& b : s.alive)
    s.finished.push_back(std::move(b));
  auto normalised = [&](const Beam& b) {
    return b.log_prob / std::pow(static_cast<double>(std::max<size_t>(b.tokens.size(), 1)), alpha);
  };
  const auto best = std::max_element(
      s.finished.begin(), s.finished.end(),
      [&](const Beam& a, const Beam& b) { return normalised(a) < normalised(b); });
  Hypothesis h;
  h.tokens = best->tokens;
  h.log_prob = best->log_prob;
  if (keep_attention && !best->attention.empty())
    h.attention = torch::stack(best->attention);
  return h;
}

} // namespace

std::vector<Hypothesis> beam_search_batch(
    Seq2SeqImpl& model, const Tensor& src, int64_t beam, int64_t max_len, double alpha,
    bool keep_attention) {
  TORCH_CHECK(src.dim() == 2, "beam_search_batch: src must be [N, S], got ", src.sizes());
  TORCH_CHECK(beam >= 1, "beam_search: beam must be at least 1, got ", beam);
  torch::NoGradGuard no_grad;
  const int64_t N = src.size(0);
  auto state = model.encode(src, src.eq(Vocab::kPad));
  std::vector<Search> searches(static_cast<size_t>(N));
  for (int64_t t = 0; t < max_len; ++t) {
    // The state's rows: the live beams of every sentence that is not done, in order.
    std::vector<int64_t> last;
    for (const auto& s : searches)
      for (const auto& b : s.alive)
        last.push_back(b.tokens.empty() ? Vocab::kBos : b.tokens.back());
    if (last.empty())
      break;
    Tensor attn;
    const Tensor logp =
        model.step(*state, torch::tensor(last, torch::kLong), keep_attention ? &attn : nullptr)
            .to(torch::kDouble);
    std::vector<int64_t> rows;
    int64_t row = 0;
    for (auto& s : searches) {
      const auto n = static_cast<int64_t>(s.alive.size());
      if (n == 0)
        continue;
      for (int64_t from : advance(
               s, logp.narrow(0, row, n), keep_attention ? attn.narrow(0, row, n) : Tensor(), beam,
               keep_attention))
        rows.push_back(row + from);
      row += n;
    }
    if (!rows.empty())
      state->select(torch::tensor(rows, torch::kLong));
  }
  std::vector<Hypothesis> out;
  for (auto& s : searches)
    out.push_back(best_of(s, alpha, keep_attention));
  return out;
}

Hypothesis beam_search(
    Seq2SeqImpl& model, const Tensor& src, int64_t beam, int64_t max_len, double alpha,
    bool keep_attention) {
  TORCH_CHECK(
      src.dim() == 2 && src.size(0) == 1, "beam_search: src must be [1, S], got ", src.sizes());
  return beam_search_batch(model, src, beam, max_len, alpha, keep_attention)[0];
}

std::vector<Translator::Result> Translator::translate(
    const std::vector<std::string>& sentences, const Options& o) const {
  torch::NoGradGuard no_grad;
  model->eval();
  std::vector<Result> results(sentences.size());
  std::vector<size_t> order;
  for (size_t i = 0; i < sentences.size(); ++i) {
    results[i].source_tokens = tok.src.encode(sentences[i]);
    auto& toks = results[i].source_tokens;
    if (static_cast<int64_t>(toks.size()) > options.max_len)
      toks.resize(options.max_len);
    if (!toks.empty())
      order.push_back(i);
  }
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return results[a].source_tokens.size() < results[b].source_tokens.size();
  });
  const bool need_attention = o.keep_attention || o.copy_unknown;
  auto finish = [&](size_t i, Hypothesis h) {
    Result& r = results[i];
    for (size_t t = 0; t < h.tokens.size(); ++t) {
      const int64_t id = h.tokens[t];
      if (id == Vocab::kEos)
        break;
      if (id == Vocab::kUnk && o.copy_unknown && h.attention.defined()) {
        const int64_t s = h.attention[static_cast<int64_t>(t)]
                              .narrow(0, 0, static_cast<int64_t>(r.source_tokens.size()))
                              .argmax()
                              .item<int64_t>();
        r.tokens.push_back(r.source_tokens[s]);
      } else {
        r.tokens.push_back(tgt_vocab.token(id));
      }
    }
    r.text = tok.tgt.decode(r.tokens);
    if (o.keep_attention && h.attention.defined()) {
      r.attention =
          h.attention.narrow(1, 0, static_cast<int64_t>(r.source_tokens.size())).contiguous();
    }
  };
  // Room for a translation twice as long as its source, plus some.
  auto max_out = [&](size_t src_len) {
    return std::min<int64_t>(options.max_len - 1, 2 * static_cast<int64_t>(src_len) + 10);
  };
  if (o.beam <= 1) {
    constexpr size_t kBatch = 64;
    for (size_t start = 0; start < order.size(); start += kBatch) {
      const size_t end = std::min(order.size(), start + kBatch);
      const auto S = static_cast<int64_t>(results[order[end - 1]].source_tokens.size());
      Tensor src = torch::zeros({static_cast<int64_t>(end - start), S}, torch::kLong);
      for (size_t j = start; j < end; ++j) {
        const auto ids = src_vocab.encode(results[order[j]].source_tokens);
        src[static_cast<int64_t>(j - start)]
            .narrow(0, 0, static_cast<int64_t>(ids.size()))
            .copy_(torch::tensor(ids, torch::kLong));
      }
      auto hyps = greedy_decode(*model, src, src.eq(Vocab::kPad), max_out(S), need_attention);
      for (size_t j = start; j < end; ++j)
        finish(order[j], std::move(hyps[j - start]));
    }
  } else {
    // Sentences of one source length decode together (no padding, so each equals its own
    // search): every step is one batch of all their live beams.
    constexpr size_t kSentences = 16;
    for (size_t start = 0; start < order.size();) {
      const size_t len = results[order[start]].source_tokens.size();
      size_t end = start;
      while (end < order.size() && end - start < kSentences &&
             results[order[end]].source_tokens.size() == len)
        ++end;
      std::vector<Tensor> rows;
      for (size_t j = start; j < end; ++j)
        rows.push_back(
            torch::tensor(src_vocab.encode(results[order[j]].source_tokens), torch::kLong));
      auto hyps = beam_search_batch(
          *model, torch::stack(rows), o.beam, max_out(len), o.alpha, need_attention);
      for (size_t j = start; j < end; ++j)
        finish(order[j], std::move(hyps[j - start]));
      start = end;
    }
  }
  return results;
}

} // namespace translate
