"""DeepFM (Guo et al. 2017) for Criteo-shaped click-through data.

Criteo rows have 13 dense (integer-count) features and 26 categorical fields. Here every
categorical field has the same vocabulary, `FIELD_VOCAB` = 1000 (hashed ids), so one `high` bounds
every sparse input. All fields share one embedding table; a fixed per-field offset buffer maps
field f's id i to row f * 1000 + i. That keeps the graph to one large embedding lookup, the
memory-bound op recsys partitioning cares about, and stays traceable by torch.fx.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_SPARSE = 26
NUM_DENSE = 13
FIELD_VOCAB = 1000
EMBED_DIM = 10


class DeepFM(nn.Module):
    """y = sigmoid(y_FM + y_DNN), with FM and DNN sharing the field embeddings (paper Eq. 1)."""

    def __init__(
        self,
        num_sparse: int = NUM_SPARSE,
        num_dense: int = NUM_DENSE,
        field_vocab: int = FIELD_VOCAB,
        embed_dim: int = EMBED_DIM,
        hidden: tuple[int, ...] = (400, 400, 400),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        rows = num_sparse * field_vocab
        self.register_buffer("offsets", torch.arange(num_sparse, dtype=torch.int64) * field_vocab)
        self.embedding = nn.Embedding(rows, embed_dim)  # second-order factors v_i, shared with the DNN
        self.linear_sparse = nn.Embedding(rows, 1)  # first-order weights w_i for one-hot features
        self.linear_dense = nn.Linear(num_dense, 1)  # first-order weights for dense features, plus bias
        layers: list[nn.Module] = []
        width = num_sparse * embed_dim + num_dense
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.dnn = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Embedding):
                nn.init.normal_(m.weight, 0, 0.01)
            elif isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, sparse: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        idx = sparse + self.offsets  # (B, F) rows in the shared table
        emb = self.embedding(idx)  # (B, F, K)
        first = self.linear_sparse(idx).sum(dim=1) + self.linear_dense(dense)  # (B, 1)
        # FM pairwise term: sum_{i<j} <v_i, v_j> = 0.5 * sum_k ((sum_i v_ik)^2 - sum_i v_ik^2).
        square_of_sum = emb.sum(dim=1).pow(2)
        sum_of_square = emb.pow(2).sum(dim=1)
        second = 0.5 * (square_of_sum - sum_of_square).sum(dim=1, keepdim=True)  # (B, 1)
        deep = self.dnn(torch.cat([emb.flatten(1), dense], dim=1))  # (B, 1)
        return torch.sigmoid(first + second + deep)


def deepfm() -> DeepFM:
    """DeepFM with 26 x 1000-id fields, 13 dense features, k = 10, DNN 400-400-400."""
    return DeepFM()
