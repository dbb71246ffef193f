#include "model.h"

#include "speedups/fused_gru.h"
#include "speedups/fused_loss.h"
#include "speedups/speedups.h"
#include "text.h"

#include <torchattn/torchattn.h>

#include <torch/nn/modules/container/any.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/embedding.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/modules/rnn.h>
#include <torch/nn/utils/rnn.h>

#include <cmath>
#include <sstream>
#include <stdexcept>

namespace translate {
namespace {

namespace tnn = torchattn::nn;
using torch::Tensor;

int64_t to_int(const std::string& key, const std::string& v) {
  try {
    size_t used = 0;
    const long long x = std::stoll(v, &used);
    if (used == v.size())
      return x;
  } catch (const std::exception&) {
  }
  throw std::runtime_error(
      "model option '" + printable(key) + "': '" + printable(v) + "' is not an integer");
}

double to_double(const std::string& key, const std::string& v) {
  try {
    size_t used = 0;
    const double x = std::stod(v, &used);
    if (used == v.size())
      return x;
  } catch (const std::exception&) {
  }
  throw std::runtime_error(
      "model option '" + printable(key) + "': '" + printable(v) + "' is not a number");
}

// Dropout, active when its module is in training mode. Speed-up: translate::dropout draws
// the mask in parallel (speedups/fused_loss.h); torch::dropout otherwise.
struct Dropout {
  double p = 0;
  const torch::nn::Module* owner = nullptr;
  Tensor operator()(const Tensor& x) const {
    return speedups().dropout ? translate::dropout(x, p, owner->is_training())
                              : torch::dropout(x, p, owner->is_training());
  }
};

// ---- GRU encoder-decoder with attention (Luong et al. 2015, global attention) ----------

struct GruState : DecoderState {
  Tensor keys;    // [B, S, H]
  Tensor src_pad; // [B, S]
  Tensor hidden;  // [1, B, H]
  void select(const Tensor& index) override {
    keys = keys.index_select(0, index);
    src_pad = src_pad.index_select(0, index);
    hidden = hidden.index_select(1, index);
  }
};

class GruSeq2SeqImpl : public Seq2SeqImpl {
 public:
  explicit GruSeq2SeqImpl(const ModelOptions& o) : Seq2SeqImpl(o) {
    const int64_t E = o.embed_dim, H = o.hidden_dim;
    src_emb = register_module(
        "src_embedding",
        torch::nn::Embedding(torch::nn::EmbeddingOptions(o.src_vocab, E).padding_idx(0)));
    tgt_emb = register_module(
        "tgt_embedding",
        torch::nn::Embedding(torch::nn::EmbeddingOptions(o.tgt_vocab, E).padding_idx(0)));
    encoder = register_module(
        "encoder",
        torch::nn::GRU(torch::nn::GRUOptions(E, H).batch_first(true).bidirectional(true)));
    forward_params_ = gru_params(*encoder, "");
    reverse_params_ = gru_params(*encoder, "_reverse");
    enc_proj = register_module("encoder_proj", torch::nn::Linear(2 * H, H));
    init_proj = register_module("init_proj", torch::nn::Linear(2 * H, H));
    decoder =
        register_module("decoder", torch::nn::GRU(torch::nn::GRUOptions(E, H).batch_first(true)));
    decoder_params_ = gru_params(*decoder, "");
    if (o.attention == "dot") {
      attention = torch::nn::AnyModule(tnn::DotProductAttention());
    } else if (o.attention == "scaled") {
      attention = torch::nn::AnyModule(tnn::ScaledDotProductAttention());
    } else if (o.attention == "cosine") {
      attention = torch::nn::AnyModule(tnn::CosineAttention(
          tnn::CosineAttentionOptions().temperature(10.0).learnable(true).max_temperature(100.0)));
    } else if (o.attention == "additive") {
      attention = torch::nn::AnyModule(tnn::AdditiveAttention(H, H, H));
    } else {
      attention = torch::nn::AnyModule(tnn::GeneralAttention(H, H));
    }
    register_module("attention", attention.ptr());
    combine = register_module("combine", torch::nn::Linear(2 * H, H));
    out = register_module("out", torch::nn::Linear(H, o.tgt_vocab));
    dropout = Dropout{o.dropout, this};
  }

  // src [B, S], src_pad [B, S] -> (keys [B, S, H], initial hidden [1, B, H])
  std::pair<Tensor, Tensor> run_encoder(const Tensor& src, const Tensor& src_pad) {
    const Tensor x = dropout(src_emb(src));
    auto [outputs, final_state] =
        speedups().gru ? run_encoder_fused(x, src_pad) : run_encoder_packed(x, src_pad);
    const Tensor keys = enc_proj(dropout(outputs));
    return {keys, torch::tanh(init_proj(final_state)).unsqueeze(0)};
  }

  // The bidirectional GRU as PyTorch users write it: on a packed sequence, so that padding
  // never reaches the real tokens. x [B, S, E] -> (outputs [B, S, 2H], zero at padding;
  // final states [B, 2H])
  std::pair<Tensor, Tensor> run_encoder_packed(const Tensor& x, const Tensor& src_pad) {
    namespace rnn = torch::nn::utils::rnn;
    const Tensor lengths = src_pad.logical_not().sum(1).clamp_min(1);
    auto [packed, h_n] = encoder->forward_with_packed_input(
        rnn::pack_padded_sequence(x, lengths, /*batch_first=*/true, /*enforce_sorted=*/false));
    const Tensor outputs = std::get<0>(
        rnn::pad_packed_sequence(packed, /*batch_first=*/true, 0.0, /*total_length=*/x.size(1)));
    return {outputs, torch::cat({h_n[0], h_n[1]}, -1)};
  }

  // Speed-up (speedups/fused_gru.h): the same bidirectional GRU from the padded batch. Each
  // direction is one fused call that projects the inputs of all steps in one matmul (a packed
  // call projects step by step). The backward direction reads every sentence reversed within
  // its length, so padding stays behind the real tokens and never reaches them; outputs at
  // padding are zero, as pad_packed_sequence makes them.
  std::pair<Tensor, Tensor> run_encoder_fused(const Tensor& x, const Tensor& src_pad) {
    const int64_t B = x.size(0), S = x.size(1), H = options.hidden_dim;
    const Tensor lengths = src_pad.logical_not().sum(1, /*keepdim=*/true).clamp_min(1); // [B, 1]
    const Tensor pos =
        torch::arange(S, src_pad.options().dtype(torch::kLong)).unsqueeze(0).expand({B, S});
    const Tensor reverse = torch::where(pos < lengths, lengths - 1 - pos, pos); // its own inverse
    const Tensor last = (lengths - 1).unsqueeze(-1).expand({B, 1, H});
    const Tensor x_rev = x.gather(1, reverse.unsqueeze(-1).expand_as(x));
    const Tensor h0 = torch::zeros({B, H}, x.options());
    const Tensor fwd = run_gru(x, h0, forward_params_);
    const Tensor bwd_rev = run_gru(x_rev, h0, reverse_params_);
    const Tensor bwd = bwd_rev.gather(1, reverse.unsqueeze(-1).expand_as(bwd_rev));
    const Tensor outputs = torch::cat({fwd, bwd}, -1).masked_fill(src_pad.unsqueeze(-1), 0.0);
    // Final states: the forward direction after the last real token, the backward one after
    // the first (the last step of its reversed pass).
    return {outputs, torch::cat({fwd.gather(1, last), bwd_rev.gather(1, last)}, -1).squeeze(1)};
  }

  // One direction's parameters in run_gru's order (suffix "" or "_reverse").
  static std::vector<Tensor> gru_params(const torch::nn::GRUImpl& gru, const std::string& suffix) {
    const auto params = gru.named_parameters();
    std::vector<Tensor> out;
    for (const char* name : {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}) {
      out.push_back(params[name + suffix]);
    }
    return out;
  }

  // input [B, T, E], h0 [B, H] -> outputs [B, T, H]: one GRU direction, its inputs projected
  // for all steps in one matmul; params are weight_ih, weight_hh, bias_ih, bias_hh.
  static Tensor run_gru(const Tensor& input, const Tensor& h0, const std::vector<Tensor>& params) {
    return gru_sequence(torch::linear(input, params[0], params[2]), h0, params[1], params[3]);
  }

  // decoder outputs [B, T, H] -> (output layer input [B, T, H], weights [B, T, S] or undefined)
  std::pair<Tensor, Tensor> attend_encoder(
      const Tensor& h, const Tensor& keys, const Tensor& src_pad, bool need_weights) {
    auto [context, weights] = attention.forward<std::tuple<Tensor, Tensor>>(
        h, keys, keys, Tensor(), src_pad, need_weights, false);
    const Tensor combined = torch::tanh(combine(torch::cat({context, h}, -1)));
    return {dropout(combined), weights};
  }

  Tensor features(const Tensor& src, const Tensor& src_pad, const Tensor& tgt_in) override {
    auto [keys, h0] = run_encoder(src, src_pad);
    const Tensor x = dropout(tgt_emb(tgt_in));
    // Speed-up (speedups/fused_gru.h): the decoder's recurrence as one fused call.
    const Tensor h =
        speedups().gru ? run_gru(x, h0[0], decoder_params_) : std::get<0>(decoder(x, h0));
    return attend_encoder(h, keys, src_pad, /*need_weights=*/false).first;
  }

  torch::nn::Linear output_layer() const override { return out; }

  AttentionMaps attention_maps(const Tensor& src, const Tensor& tgt_in) override {
    const Tensor src_pad = torch::zeros_like(src, torch::kBool);
    auto [keys, h0] = run_encoder(src, src_pad);
    const Tensor h = std::get<0>(decoder(tgt_emb(tgt_in), h0));
    AttentionMaps m;
    m.cross.push_back(attend_encoder(h, keys, src_pad, /*need_weights=*/true).second); // [1, T, S]
    return m;
  }

  std::unique_ptr<DecoderState> encode(const Tensor& src, const Tensor& src_pad) override {
    auto state = std::make_unique<GruState>();
    std::tie(state->keys, state->hidden) = run_encoder(src, src_pad);
    state->src_pad = src_pad;
    return state;
  }

  Tensor step(DecoderState& s, const Tensor& tokens, Tensor* attn) override {
    auto& state = static_cast<GruState&>(s);
    auto [h, hidden] = decoder(tgt_emb(tokens.unsqueeze(1)), state.hidden);
    state.hidden = hidden;
    auto [features, weights] = attend_encoder(h, state.keys, state.src_pad, attn != nullptr);
    if (attn)
      *attn = weights.squeeze(1);
    return torch::log_softmax(out(features).squeeze(1), -1);
  }

  torch::nn::Embedding src_emb = nullptr, tgt_emb = nullptr;
  torch::nn::GRU encoder = nullptr, decoder = nullptr;
  torch::nn::Linear enc_proj = nullptr, init_proj = nullptr, combine = nullptr, out = nullptr;
  torch::nn::AnyModule attention;
  Dropout dropout;

 private:
  // The encoder's parameters per direction (w_ih, w_hh, b_ih, b_hh), shared with `encoder`.
  std::vector<Tensor> forward_params_, reverse_params_, decoder_params_;
};

// ---- Transformer (pre-norm, Vaswani et al. 2017; Xiong et al. 2020) ----------------------

struct FeedForwardImpl : torch::nn::Module {
  FeedForwardImpl(int64_t d, int64_t ff, double p) {
    fc1 = register_module("fc1", torch::nn::Linear(d, ff));
    fc2 = register_module("fc2", torch::nn::Linear(ff, d));
    dropout = Dropout{p, this};
  }
  Tensor forward(const Tensor& x) { return fc2(dropout(torch::relu(fc1(x)))); }
  torch::nn::Linear fc1 = nullptr, fc2 = nullptr;
  Dropout dropout;
};
TORCH_MODULE(FeedForward);

// Packed sequences: x_q [T, d] and x_kv [S, d] hold sentences back to back, the sentence s at
// rows [cu_q[s], cu_q[s + 1]) and [cu_k[s], cu_k[s + 1]); each attends only to its own rows
// (causally, for the decoder's self-attention) through torchattn's varlen attention, with
// m's projections -> [T, d].
Tensor varlen_attention(
    tnn::MultiheadAttention& m, const Tensor& x_q, const Tensor& x_kv, const Tensor& cu_q,
    const Tensor& cu_k, bool causal) {
  const int64_t d = x_q.size(1), H = m->options.num_heads();
  const auto w = m->in_proj_weight.chunk(3, 0);
  const auto b = m->in_proj_bias.chunk(3, 0);
  const Tensor q = torch::linear(x_q, w[0], b[0]).view({x_q.size(0), H, d / H});
  const Tensor k = torch::linear(x_kv, w[1], b[1]).view({x_kv.size(0), H, d / H});
  const Tensor v = torch::linear(x_kv, w[2], b[2]).view({x_kv.size(0), H, d / H});
  auto options = tnn::functional::FlexAttentionFuncOptions();
  if (causal)
    options.causal("top_left");
  const Tensor out = tnn::functional::flex_attention_varlen(q, k, v, cu_q, cu_k, options).output;
  return m->out_proj(out.reshape({x_q.size(0), d}));
}

tnn::MultiheadAttention make_mha(const ModelOptions& o) {
  // No dropout on the attention weights (as fairseq's default), so that training runs
  // torchattn's fused kernel; dropout stays on the residual branches and feed-forward.
  return tnn::MultiheadAttention(
      tnn::MultiheadAttentionOptions(o.hidden_dim, o.heads).batch_first(true));
}

struct EncoderLayerImpl : torch::nn::Module {
  explicit EncoderLayerImpl(const ModelOptions& o) {
    self_attn = register_module("self_attn", make_mha(o));
    ff = register_module("ff", FeedForward(o.hidden_dim, o.ff_dim, o.dropout));
    norm1 =
        register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden_dim})));
    norm2 =
        register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden_dim})));
    dropout = Dropout{o.dropout, this};
  }
  // x [B, S, d] -> [B, S, d]; the self-attention weights [B, heads, S, S] appended to
  // `weights` when given
  Tensor forward(Tensor x, const Tensor& src_pad, std::vector<Tensor>* weights = nullptr) {
    const Tensor h = norm1(x);
    auto [a, w] = self_attn(
        h, h, h, src_pad, /*need_weights=*/weights != nullptr, Tensor(),
        /*average_attn_weights=*/false);
    if (weights)
      weights->push_back(w);
    x = x + dropout(a);
    return x + dropout(ff(norm2(x)));
  }
  // Packed: x [S, d], the sentences at cu [N + 1] -> [S, d]
  Tensor forward_packed(Tensor x, const Tensor& cu) {
    const Tensor h = norm1(x);
    x = x + dropout(varlen_attention(self_attn, h, h, cu, cu, /*causal=*/false));
    return x + dropout(ff(norm2(x)));
  }
  tnn::MultiheadAttention self_attn = nullptr;
  FeedForward ff = nullptr;
  torch::nn::LayerNorm norm1 = nullptr, norm2 = nullptr;
  Dropout dropout;
};
TORCH_MODULE(EncoderLayer);

struct DecoderLayerImpl : torch::nn::Module {
  explicit DecoderLayerImpl(const ModelOptions& o) {
    self_attn = register_module("self_attn", make_mha(o));
    cross_attn = register_module("cross_attn", make_mha(o));
    ff = register_module("ff", FeedForward(o.hidden_dim, o.ff_dim, o.dropout));
    for (int i = 0; i < 3; ++i) {
      norms.push_back(register_module(
          "norm" + std::to_string(i + 1),
          torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden_dim}))));
    }
    dropout = Dropout{o.dropout, this};
  }
  // x [B, T, d], memory [B, S, d] -> [B, T, d]; with `maps`, the self- and cross-attention
  // weights [B, heads, T, T] and [B, heads, T, S] appended to its decoder_self and cross
  Tensor forward(
      Tensor x, const Tensor& memory, const Tensor& src_pad, AttentionMaps* maps = nullptr) {
    const bool keep = maps != nullptr;
    Tensor h = norms[0](x);
    auto [a, w] = self_attn(
        h, h, h, Tensor(), /*need_weights=*/keep, Tensor(), /*average_attn_weights=*/false,
        /*is_causal=*/true);
    x = x + dropout(a);
    h = norms[1](x);
    auto [c, cw] = cross_attn(
        h, memory, memory, src_pad, /*need_weights=*/keep, Tensor(),
        /*average_attn_weights=*/false);
    if (keep) {
      maps->decoder_self.push_back(w);
      maps->cross.push_back(cw);
    }
    x = x + dropout(c);
    return x + dropout(ff(norms[2](x)));
  }
  // Packed: x [T, d] at cu_tgt, memory [S, d] at cu_src -> [T, d]
  Tensor forward_packed(
      Tensor x, const Tensor& memory, const Tensor& cu_tgt, const Tensor& cu_src) {
    Tensor h = norms[0](x);
    x = x + dropout(varlen_attention(self_attn, h, h, cu_tgt, cu_tgt, /*causal=*/true));
    h = norms[1](x);
    x = x + dropout(varlen_attention(cross_attn, h, memory, cu_tgt, cu_src, /*causal=*/false));
    return x + dropout(ff(norms[2](x)));
  }
  // One token: x [B, 1, d] -> [B, 1, d]; cross-attention weights [B, 1, S] when asked.
  Tensor step(
      Tensor x, tnn::MultiheadAttentionCache& self_cache, tnn::MultiheadAttentionCache& cross_cache,
      const Tensor& src_pad, Tensor* weights) {
    Tensor h = norms[0](x);
    x = x + std::get<0>(self_attn->forward_step(h, self_cache));
    h = norms[1](x);
    auto [c, w] = cross_attn->forward_step(h, cross_cache, src_pad, weights != nullptr);
    if (weights)
      *weights = w;
    x = x + c;
    return x + ff(norms[2](x));
  }
  tnn::MultiheadAttention self_attn = nullptr, cross_attn = nullptr;
  FeedForward ff = nullptr;
  std::vector<torch::nn::LayerNorm> norms;
  Dropout dropout;
};
TORCH_MODULE(DecoderLayer);

struct TransformerState : DecoderState {
  Tensor src_pad;
  std::vector<tnn::MultiheadAttentionCache> self_caches, cross_caches;
  int64_t position = 0;
  void select(const Tensor& index) override {
    src_pad = src_pad.index_select(0, index);
    for (auto* caches : {&self_caches, &cross_caches}) {
      for (auto& c : *caches) {
        c.reorder(index);
      }
    }
  }
};

class TransformerSeq2SeqImpl : public Seq2SeqImpl {
 public:
  explicit TransformerSeq2SeqImpl(const ModelOptions& o) : Seq2SeqImpl(o) {
    const int64_t d = o.hidden_dim;
    src_emb = register_module(
        "src_embedding",
        torch::nn::Embedding(torch::nn::EmbeddingOptions(o.src_vocab, d).padding_idx(0)));
    tgt_emb = register_module(
        "tgt_embedding",
        torch::nn::Embedding(torch::nn::EmbeddingOptions(o.tgt_vocab, d).padding_idx(0)));
    for (auto* e : {&src_emb, &tgt_emb}) {
      torch::NoGradGuard no_grad;
      (*e)->weight.normal_(0.0, std::pow(static_cast<double>(d), -0.5));
      (*e)->weight[0].zero_();
    }
    // ModuleLists, so that parameters are named encoder.0.self_attn.in_proj_weight, ... as in
    // Python (bench/translation_models.py).
    torch::nn::ModuleList encoder_list, decoder_list;
    for (int64_t i = 0; i < o.layers; ++i) {
      encoder.push_back(EncoderLayer(o));
      decoder.push_back(DecoderLayer(o));
      encoder_list->push_back(encoder.back());
      decoder_list->push_back(decoder.back());
    }
    register_module("encoder", encoder_list);
    register_module("decoder", decoder_list);
    enc_norm =
        register_module("encoder_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    dec_norm =
        register_module("decoder_norm", torch::nn::LayerNorm(torch::nn::LayerNormOptions({d})));
    if (o.tie_embeddings) {
      // Not registered: its weight is the target embedding's, its bias is `out_bias`.
      out = torch::nn::Linear(torch::nn::LinearOptions(d, o.tgt_vocab).bias(false));
      out->weight = tgt_emb->weight;
      out->bias = register_parameter("out_bias", torch::zeros({o.tgt_vocab}));
    } else {
      out = register_module("out", torch::nn::Linear(d, o.tgt_vocab));
    }
    dropout = Dropout{o.dropout, this};
    // Sinusoidal positions [max_len, d].
    const Tensor pos = torch::arange(o.max_len, torch::kFloat).unsqueeze(1);
    const Tensor div = torch::exp(
        torch::arange(0, d, 2, torch::kFloat) * (-std::log(10000.0) / static_cast<double>(d)));
    Tensor pe = torch::zeros({o.max_len, d});
    pe.index_put_(
        {torch::indexing::Slice(), torch::indexing::Slice(0, torch::indexing::None, 2)},
        torch::sin(pos * div));
    pe.index_put_(
        {torch::indexing::Slice(), torch::indexing::Slice(1, torch::indexing::None, 2)},
        torch::cos(pos * div));
    positions = register_buffer("positions", pe);
  }

  Tensor embed(torch::nn::Embedding emb, const Tensor& tokens, int64_t offset) {
    const int64_t L = tokens.size(1);
    TORCH_CHECK(
        offset + L <= options.max_len, "translate: a sentence of ", offset + L,
        " tokens is longer than the model's max_len ", options.max_len);
    const double scale = std::sqrt(static_cast<double>(options.hidden_dim));
    return emb(tokens) * scale + positions.narrow(0, offset, L);
  }

  Tensor run_encoder(const Tensor& src, const Tensor& src_pad) {
    Tensor x = dropout(embed(src_emb, src, 0));
    for (auto& layer : encoder)
      x = layer(x, src_pad);
    return enc_norm(x);
  }

  Tensor features(const Tensor& src, const Tensor& src_pad, const Tensor& tgt_in) override {
    const Tensor memory = run_encoder(src, src_pad);
    Tensor x = dropout(embed(tgt_emb, tgt_in, 0));
    for (auto& layer : decoder)
      x = layer(x, memory, src_pad);
    return dec_norm(x);
  }

  torch::nn::Linear output_layer() const override { return out; }

  // tokens [N] at positions [N] -> [N, d]
  Tensor embed_packed(torch::nn::Embedding emb, const Tensor& tokens, const Tensor& pos) {
    const double scale = std::sqrt(static_cast<double>(options.hidden_dim));
    return emb(tokens) * scale + positions.index_select(0, pos);
  }

  Tensor features_packed(const PackedBatch& b) override {
    TORCH_CHECK(
        b.src_pos.numel() == 0 || b.src_pos.max().item<int64_t>() < options.max_len,
        "translate: a packed sentence is longer than the model's max_len ", options.max_len);
    Tensor x = dropout(embed_packed(src_emb, b.src, b.src_pos));
    for (auto& layer : encoder)
      x = layer->forward_packed(x, b.cu_src);
    const Tensor memory = enc_norm(x);
    Tensor y = dropout(embed_packed(tgt_emb, b.tgt_in, b.tgt_pos));
    for (auto& layer : decoder)
      y = layer->forward_packed(y, memory, b.cu_tgt, b.cu_src);
    return dec_norm(y);
  }

  AttentionMaps attention_maps(const Tensor& src, const Tensor& tgt_in) override {
    const Tensor src_pad = torch::zeros_like(src, torch::kBool);
    AttentionMaps m;
    Tensor x = embed(src_emb, src, 0);
    for (auto& layer : encoder)
      x = layer(x, src_pad, &m.encoder_self);
    const Tensor memory = enc_norm(x);
    Tensor y = embed(tgt_emb, tgt_in, 0);
    for (auto& layer : decoder)
      y = layer(y, memory, src_pad, &m);
    for (auto* maps : {&m.encoder_self, &m.decoder_self, &m.cross}) {
      for (auto& w : *maps)
        w = w.squeeze(0); // one sentence: [heads, rows, columns]
    }
    return m;
  }

  std::unique_ptr<DecoderState> encode(const Tensor& src, const Tensor& src_pad) override {
    auto state = std::make_unique<TransformerState>();
    const Tensor memory = run_encoder(src, src_pad);
    state->src_pad = src_pad;
    state->self_caches.resize(decoder.size());
    for (auto& layer : decoder) {
      state->cross_caches.push_back(layer->cross_attn->project_memory(memory, memory));
    }
    return state;
  }

  Tensor step(DecoderState& s, const Tensor& tokens, Tensor* attn) override {
    auto& state = static_cast<TransformerState&>(s);
    Tensor x = embed(tgt_emb, tokens.unsqueeze(1), state.position++);
    for (size_t i = 0; i < decoder.size(); ++i) {
      const bool last = i + 1 == decoder.size();
      Tensor w;
      x = decoder[i]->step(
          x, state.self_caches[i], state.cross_caches[i], state.src_pad,
          last && attn ? &w : nullptr);
      if (last && attn)
        *attn = w.squeeze(1);
    }
    return torch::log_softmax(out(dec_norm(x)).squeeze(1), -1);
  }

  torch::nn::Embedding src_emb = nullptr, tgt_emb = nullptr;
  std::vector<EncoderLayer> encoder;
  std::vector<DecoderLayer> decoder;
  torch::nn::LayerNorm enc_norm = nullptr, dec_norm = nullptr;
  torch::nn::Linear out = nullptr;
  Dropout dropout;
  Tensor positions;
};

} // namespace

Tensor Seq2SeqImpl::features_packed(const PackedBatch& /*batch*/) {
  throw std::invalid_argument(
      "packed batches need the Transformer; the " + options.kind + " model pads its batches");
}

std::map<std::string, std::string> ModelOptions::to_map() const {
  auto num = [](double x) {
    std::ostringstream s;
    s.precision(17);
    s << x;
    return s.str();
  };
  return {
      {"kind", kind},
      {"attention", attention},
      {"src_vocab", std::to_string(src_vocab)},
      {"tgt_vocab", std::to_string(tgt_vocab)},
      {"embed_dim", std::to_string(embed_dim)},
      {"hidden_dim", std::to_string(hidden_dim)},
      {"layers", std::to_string(layers)},
      {"heads", std::to_string(heads)},
      {"ff_dim", std::to_string(ff_dim)},
      {"dropout", num(dropout)},
      {"max_len", std::to_string(max_len)},
      {"tokenizer", tokenizer},
      {"tie_embeddings", tie_embeddings ? "1" : "0"}};
}

ModelOptions ModelOptions::from_map(const std::map<std::string, std::string>& m) {
  ModelOptions o;
  for (const auto& [k, v] : m) {
    if (k == "kind")
      o.kind = v;
    else if (k == "attention")
      o.attention = v;
    else if (k == "src_vocab")
      o.src_vocab = to_int(k, v);
    else if (k == "tgt_vocab")
      o.tgt_vocab = to_int(k, v);
    else if (k == "embed_dim")
      o.embed_dim = to_int(k, v);
    else if (k == "hidden_dim")
      o.hidden_dim = to_int(k, v);
    else if (k == "layers")
      o.layers = to_int(k, v);
    else if (k == "heads")
      o.heads = to_int(k, v);
    else if (k == "ff_dim")
      o.ff_dim = to_int(k, v);
    else if (k == "dropout")
      o.dropout = to_double(k, v);
    else if (k == "max_len")
      o.max_len = to_int(k, v);
    else if (k == "tokenizer")
      o.tokenizer = v;
    else if (k == "tie_embeddings") {
      if (v != "0" && v != "1")
        throw std::runtime_error(
            "bad value '" + printable(v) + "' for 'tie_embeddings', expected 0 or 1");
      o.tie_embeddings = v == "1";
    } else
      throw std::runtime_error("unknown model option '" + printable(k) + "'");
  }
  o.validate();
  return o;
}

void ModelOptions::validate() const {
  auto fail = [](const std::string& what) { throw std::runtime_error("model options: " + what); };
  if (kind != "gru" && kind != "transformer")
    fail("kind is '" + kind + "', expected gru or transformer");
  if (attention != "dot" && attention != "scaled" && attention != "cosine" &&
      attention != "additive" && attention != "general") {
    fail("attention is '" + attention + "', expected dot, scaled, cosine, additive or general");
  }
  if (tokenizer != "words" && tokenizer != "sentencepiece")
    fail("tokenizer is '" + printable(tokenizer) + "', expected words or sentencepiece");
  if (src_vocab < 5 || tgt_vocab < 5)
    fail("the vocabularies must hold more than the 4 special tokens");
  if (embed_dim <= 0 || hidden_dim <= 0 || layers <= 0 || heads <= 0 || ff_dim <= 0 ||
      max_len <= 0) {
    fail("dimensions, layers, heads and max_len must be positive");
  }
  if (kind == "transformer" && hidden_dim % heads != 0) {
    fail(
        "hidden_dim " + std::to_string(hidden_dim) + " is not divisible by heads " +
        std::to_string(heads));
  }
  if (!(dropout >= 0 && dropout < 1))
    fail("dropout must be in [0, 1)");
  if (tie_embeddings && kind != "transformer")
    fail("tie_embeddings needs the Transformer");
}

std::shared_ptr<Seq2SeqImpl> make_model(const ModelOptions& options) {
  options.validate();
  if (options.kind == "gru")
    return std::make_shared<GruSeq2SeqImpl>(options);
  return std::make_shared<TransformerSeq2SeqImpl>(options);
}

} // namespace translate
