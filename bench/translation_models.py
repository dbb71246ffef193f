"""The two models of examples/translation written in Python PyTorch, parameter for parameter
and name for name (so weights move between them by name), for bench/translation_bench.py.

GruSeq2Seq: Luong-style global attention over a bidirectional GRU encoder, additive score
(examples/translation/model.cpp, GruSeq2SeqImpl with --attention additive).
TransformerSeq2Seq: pre-norm Transformer on nn.MultiheadAttention (TransformerSeq2SeqImpl).
"""

import math

import torch
from torch import nn
from torch.nn import functional as F


class AdditiveAttention(nn.Module):
    """score(q, k) = v^T tanh(W_q q + W_k k), as torchattn::nn::AdditiveAttention."""

    def __init__(self, query_dim, key_dim, hidden_dim):
        super().__init__()
        self.query_proj = nn.Linear(query_dim, hidden_dim)
        self.key_proj = nn.Linear(key_dim, hidden_dim)
        self.score_proj = nn.Linear(hidden_dim, 1)

    def forward(self, query, key, value, key_padding_mask):
        # query [B, T, Dq], key [B, S, Dk], value [B, S, Dv], key_padding_mask [B, S] -> [B, T, Dv]
        energy = torch.tanh(self.query_proj(query).unsqueeze(2) + self.key_proj(key).unsqueeze(1))
        scores = self.score_proj(energy).squeeze(-1)
        scores = scores.masked_fill(key_padding_mask.unsqueeze(1), float("-inf"))
        return torch.softmax(scores, -1) @ value


class GruSeq2Seq(nn.Module):
    def __init__(self, src_vocab, tgt_vocab, embed_dim=256, hidden_dim=256, dropout=0.1):
        super().__init__()
        H = hidden_dim
        self.src_embedding = nn.Embedding(src_vocab, embed_dim, padding_idx=0)
        self.tgt_embedding = nn.Embedding(tgt_vocab, embed_dim, padding_idx=0)
        self.encoder = nn.GRU(embed_dim, H, batch_first=True, bidirectional=True)
        self.encoder_proj = nn.Linear(2 * H, H)
        self.init_proj = nn.Linear(2 * H, H)
        self.decoder = nn.GRU(embed_dim, H, batch_first=True)
        self.attention = AdditiveAttention(H, H, H)
        self.combine = nn.Linear(2 * H, H)
        self.out = nn.Linear(H, tgt_vocab)
        self.dropout = nn.Dropout(dropout)

    def encode(self, src, src_pad):
        lengths = (~src_pad).sum(1).clamp_min(1).cpu()
        x = self.dropout(self.src_embedding(src))
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, h_n = self.encoder(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=src.size(1))
        keys = self.encoder_proj(self.dropout(out))
        h0 = torch.tanh(self.init_proj(torch.cat([h_n[0], h_n[1]], -1))).unsqueeze(0)
        return keys, h0

    def forward(self, src, src_pad, tgt_in):
        keys, h0 = self.encode(src, src_pad)
        h, _ = self.decoder(self.dropout(self.tgt_embedding(tgt_in)), h0)
        context = self.attention(h, keys, keys, src_pad)
        combined = torch.tanh(self.combine(torch.cat([context, h], -1)))
        return self.out(self.dropout(combined))


class FeedForward(nn.Module):
    def __init__(self, d, ff, dropout):
        super().__init__()
        self.fc1 = nn.Linear(d, ff)
        self.fc2 = nn.Linear(ff, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ff, dropout):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ff = FeedForward(d, ff, dropout)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, src_pad):
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, key_padding_mask=src_pad, need_weights=False)[0])
        return x + self.dropout(self.ff(self.norm2(x)))


class DecoderLayer(nn.Module):
    def __init__(self, d, heads, ff, dropout):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.cross_attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ff = FeedForward(d, ff, dropout)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.norm3 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, memory, src_pad, causal):
        h = self.norm1(x)
        x = x + self.dropout(self.self_attn(h, h, h, attn_mask=causal, need_weights=False)[0])
        h = self.norm2(x)
        x = x + self.dropout(self.cross_attn(h, memory, memory, key_padding_mask=src_pad, need_weights=False)[0])
        return x + self.dropout(self.ff(self.norm3(x)))


class TransformerSeq2Seq(nn.Module):
    def __init__(self, src_vocab, tgt_vocab, d=256, heads=4, ff=512, layers=2, dropout=0.1, max_len=128):
        super().__init__()
        self.d = d
        self.src_embedding = nn.Embedding(src_vocab, d, padding_idx=0)
        self.tgt_embedding = nn.Embedding(tgt_vocab, d, padding_idx=0)
        for e in (self.src_embedding, self.tgt_embedding):
            nn.init.normal_(e.weight, 0.0, d ** -0.5)
            with torch.no_grad():
                e.weight[0].zero_()
        self.encoder = nn.ModuleList([EncoderLayer(d, heads, ff, dropout) for _ in range(layers)])
        self.decoder = nn.ModuleList([DecoderLayer(d, heads, ff, dropout) for _ in range(layers)])
        self.encoder_norm = nn.LayerNorm(d)
        self.decoder_norm = nn.LayerNorm(d)
        self.out = nn.Linear(d, tgt_vocab)
        self.dropout = nn.Dropout(dropout)
        pos = torch.arange(max_len, dtype=torch.float).unsqueeze(1)
        div = torch.exp(torch.arange(0, d, 2, dtype=torch.float) * (-math.log(10000.0) / d))
        pe = torch.zeros(max_len, d)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)
        self.register_buffer("positions", pe)

    def embed(self, emb, tokens):
        return emb(tokens) * math.sqrt(self.d) + self.positions[: tokens.size(1)]

    def forward(self, src, src_pad, tgt_in):
        x = self.dropout(self.embed(self.src_embedding, src))
        for layer in self.encoder:
            x = layer(x, src_pad)
        memory = self.encoder_norm(x)
        T = tgt_in.size(1)
        causal = torch.full((T, T), float("-inf")).triu(1)
        y = self.dropout(self.embed(self.tgt_embedding, tgt_in))
        for layer in self.decoder:
            y = layer(y, memory, src_pad, causal)
        return self.out(self.decoder_norm(y))
