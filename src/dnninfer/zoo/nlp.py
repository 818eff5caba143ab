"""A small BERT encoder (Devlin et al. 2019) for sequence classification.

Four layers of hidden 256 (BERT-mini sized) keep CPU tests fast while giving transformer-shaped
graphs: embeddings, per-layer Q/K/V matmuls, softmax, feed-forward, LayerNorm, pooler.
Attention is written as explicit matmuls (no `nn.MultiheadAttention`) and every shape is fixed at
build time, so `torch.fx.symbolic_trace` sees each op as its own node and no `size()` calls appear.
Module names follow Hugging Face's `BertModel` (embeddings, encoder.layer.N.attention.self.query ...).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class BertEmbeddings(nn.Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout."""

    def __init__(
        self, vocab_size: int, hidden: int, max_positions: int, type_vocab: int, dropout: float
    ) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Positions 0..S-1 from a cumulative sum rather than arange(size): no size() node for fx.
        position_ids = torch.cumsum(torch.ones_like(input_ids), dim=1) - 1
        token_type_ids = torch.zeros_like(input_ids)  # single-segment input
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(position_ids)
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Scaled dot-product attention, softmax(Q K^T / sqrt(d)) V (Vaswani et al. 2017, Eq. 1)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        assert hidden % heads == 0, "hidden must divide into heads"
        self.heads = heads
        self.head_dim = hidden // heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # (B, S, H) -> (B, heads, S, head_dim); unflatten needs no runtime sizes.
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._split_heads(self.query(x))
        k = self._split_heads(self.key(x))
        v = self._split_heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-2, -1)) * self.scale
        probs = self.dropout(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v)
        return ctx.transpose(1, 2).flatten(2)  # (B, S, H)


class BertAttention(nn.Module):
    """Self-attention plus output projection, residual and LayerNorm (post-norm, as in BERT)."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.self = BertSelfAttention(hidden, heads, dropout)
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(x + self.dropout(self.dense(self.self(x))))


class BertLayer(nn.Module):
    """One encoder layer: attention, then GELU feed-forward with residual and LayerNorm."""

    def __init__(self, hidden: int, heads: int, intermediate: int, dropout: float) -> None:
        super().__init__()
        self.attention = BertAttention(hidden, heads, dropout)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.act = nn.GELU()
        self.output = nn.Linear(intermediate, hidden)
        self.dropout = nn.Dropout(dropout)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention(x)
        h = self.output(self.act(self.intermediate(x)))
        return self.LayerNorm(x + self.dropout(h))


class BertEncoderClassifier(nn.Module):
    """BERT encoder + tanh pooler on the first ([CLS]) token + linear classifier."""

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden: int = 256,
        layers: int = 4,
        heads: int = 4,
        intermediate: int = 1024,
        max_positions: int = 512,
        type_vocab: int = 2,
        num_classes: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.embeddings = BertEmbeddings(vocab_size, hidden, max_positions, type_vocab, dropout)
        self.encoder = nn.Sequential(
            *[BertLayer(hidden, heads, intermediate, dropout) for _ in range(layers)]
        )
        self.pooler = nn.Linear(hidden, hidden)
        self.pooler_act = nn.Tanh()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)
        # BERT's init: N(0, 0.02) for weights and embeddings, zero biases.
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0, 0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        x = self.encoder(self.embeddings(input_ids))
        pooled = self.pooler_act(self.pooler(x[:, 0]))
        return self.classifier(self.dropout(pooled))


def bert_encoder() -> BertEncoderClassifier:
    """4-layer, 256-wide, 4-head BERT with a 2-class head (about 11.2M parameters, 7.8M in embeddings)."""
    return BertEncoderClassifier()
