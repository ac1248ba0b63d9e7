"""Transformer building blocks shared by the segmenter decoder, the tracker and the refiner.

Key names follow the official Mask2Former/DVIS classes (``self_attn``/``multihead_attn``, ``norm``,
``linear1``/``linear2``, ``layers.{i}``), so their state dicts load unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import MultiheadAttention


def with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    """``x + pos``, or ``x`` when there is no positional term."""
    return x if pos is None else x + pos


class SelfAttentionLayer(nn.Module):
    """Self-attention + residual + LayerNorm (post-norm, or pre-norm when ``normalize_before``)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(
        self,
        tgt: torch.Tensor,
        tgt_mask: torch.Tensor | None = None,
        tgt_key_padding_mask: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``tgt`` is (L, N, E); positions are added to queries and keys, not values."""
        if self.normalize_before:
            normed = self.norm(tgt)
            q = k = with_pos(normed, query_pos)
            out = self.self_attn(q, k, normed, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask)
            return tgt + self.dropout(out)
        q = k = with_pos(tgt, query_pos)
        out = self.self_attn(q, k, tgt, attn_mask=tgt_mask, key_padding_mask=tgt_key_padding_mask)
        return self.norm(tgt + self.dropout(out))


class CrossAttentionLayer(nn.Module):
    """Cross-attention + residual + LayerNorm (post-norm, or pre-norm when ``normalize_before``)."""

    def __init__(self, d_model: int, nhead: int, dropout: float = 0.0, normalize_before: bool = False):
        super().__init__()
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.normalize_before = normalize_before

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        memory_mask: torch.Tensor | None = None,
        memory_key_padding_mask: torch.Tensor | None = None,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Queries ``tgt`` (L, N, E) attend to ``memory`` (S, N, E); ``pos`` is added to keys only."""
        query = self.norm(tgt) if self.normalize_before else tgt
        out = self.multihead_attn(
            with_pos(query, query_pos),
            with_pos(memory, pos),
            memory,
            attn_mask=memory_mask,
            key_padding_mask=memory_key_padding_mask,
        )
        if self.normalize_before:
            return tgt + self.dropout(out)
        return self.norm(tgt + self.dropout(out))


class FFNLayer(nn.Module):
    """Two-layer feed-forward block + residual + LayerNorm."""

    def __init__(
        self, d_model: int, dim_feedforward: int = 2048, dropout: float = 0.0, normalize_before: bool = False
    ):
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.normalize_before = normalize_before

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """Apply the block to ``tgt`` of any leading shape (..., E)."""
        x = self.norm(tgt) if self.normalize_before else tgt
        out = self.linear2(self.dropout(F.relu(self.linear1(x))))
        if self.normalize_before:
            return tgt + self.dropout(out)
        return self.norm(tgt + self.dropout(out))


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (keys ``layers.{i}.weight/bias``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the layers on ``x`` (..., input_dim)."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == last else F.relu(layer(x))
        return x
