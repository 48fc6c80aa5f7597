"""A temporal BERT-style head: attention over the backbone's time steps.

The R(2+1)D-BERT family (Kalfaoglu et al. 2020, and DarkLight / R(2+1)D-GCN+BERT that
build on it) replaces the backbone's temporal average pool by a learned CLS token that
attends over one feature vector per time step. Spatial positions are still averaged.

The R(2+1)D backbones halve time in layer2..4, so a clip of T frames gives T / 8 steps: at 16 frames
2, at 8 a single one, over which attention is the identity. The configuration refuses a `_bert`
model below 16 frames (`BERT_MIN_FRAMES` in pipeline/config.py); the head itself runs at any length.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def default_heads(dim: int) -> int:
    """Heads of width >= 32 where possible, at most 8 (512 -> 8, 128 -> 4, 64 -> 2)."""
    for heads in (8, 4, 2):
        if dim % heads == 0 and dim // heads >= 32:
            return heads
    return 1


class TemporalBERTHead(nn.Module):
    """(N, L, C) per-time-step features -> (N, C) CLS feature."""

    def __init__(self, dim: int, heads: int | None = None, ff_mult: int = 2,
                 dropout: float = 0.1, max_len: int = 64):
        super().__init__()
        self.dim = dim
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        # One slot for CLS plus max_len time steps; longer inputs interpolate (see _positions).
        self.pos = nn.Parameter(torch.zeros(1, max_len + 1, dim))
        self.encoder = nn.TransformerEncoderLayer(
            dim, heads or default_heads(dim), dim_feedforward=ff_mult * dim, dropout=dropout,
            activation="gelu", batch_first=True, norm_first=True)
        # Pre-norm layers leave the residual stream un-normalised; normalise what fc sees.
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.cls, std=0.02)
        nn.init.normal_(self.pos, std=0.02)

    def _positions(self, n: int) -> torch.Tensor:
        """Embeddings for CLS + n - 1 steps; beyond max_len the learned table is stretched."""
        if n <= self.pos.shape[1]:
            return self.pos[:, :n]
        steps = F.interpolate(self.pos[:, 1:].transpose(1, 2), size=n - 1, mode="linear",
                              align_corners=True).transpose(1, 2)
        return torch.cat([self.pos[:, :1], steps], dim=1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        x = self.encoder(x + self._positions(x.shape[1]))
        return self.norm(x[:, 0])
