"""Multi-head attention with the official parameter names and an opt-in weights path.

:class:`MultiheadAttention` holds exactly the state of ``torch.nn.MultiheadAttention`` with equal
q/k/v widths (``in_proj_weight``, ``in_proj_bias``, ``out_proj.weight``, ``out_proj.bias``), takes
the same ``(L, N, E)`` inputs (``batch_first=False``) and returns only the attended output. It runs
``scaled_dot_product_attention`` (no weights materialised); when a capture asks for its weights it
also computes them the way ``F.multi_head_attention_forward`` does and emits them, leaving the
output untouched.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .capture import CaptureSite


def additive_mask(mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Turn a boolean "True = blocked" mask into an additive float mask (float masks pass through)."""
    if mask is None or mask.dtype != torch.bool:
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))


class MultiheadAttention(CaptureSite):
    """Drop-in for ``nn.MultiheadAttention(embed_dim, num_heads)`` at inference, capture-aware."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.out_proj.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # (L, N, E) -> (N, H, L, D)
        length, batch, _ = x.shape
        return x.reshape(length, batch, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def _combined_mask(
        self,
        attn_mask: torch.Tensor | None,
        key_padding_mask: torch.Tensor | None,
        batch: int,
        q_len: int,
        k_len: int,
        dtype: torch.dtype,
    ) -> torch.Tensor | None:
        """One additive mask of shape broadcastable to (N, H, L, S), or None."""
        mask = additive_mask(attn_mask, dtype)
        if mask is not None:
            if mask.dim() == 2:
                mask = mask.view(1, 1, q_len, k_len)
            else:  # (N*H, L, S), the layout nn.MultiheadAttention takes
                mask = mask.view(batch, self.num_heads, q_len, k_len)
        if key_padding_mask is not None:
            pad = additive_mask(key_padding_mask, dtype).view(batch, 1, 1, k_len)
            mask = pad if mask is None else mask + pad
        return mask

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend ``query`` (L, N, E) to ``key``/``value`` (S, N, E); returns (L, N, E)."""
        q_len, batch, embed = query.shape
        k_len = key.shape[0]
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._split_heads(F.linear(query, w_q, b_q))
        k = self._split_heads(F.linear(key, w_k, b_k))
        v = self._split_heads(F.linear(value, w_v, b_v))
        mask = self._combined_mask(attn_mask, key_padding_mask, batch, q_len, k_len, q.dtype)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        if self.capture is not None:
            # The weights are computed beside the fused output, exactly as F.multi_head_attention_forward
            # computes them, so capturing never changes what the model predicts.
            scores = (q * (1.0 / math.sqrt(self.head_dim))) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            weights = scores.softmax(dim=-1)
            self.emit({"weights": weights if self.capture.per_head else weights.mean(dim=1)})
        out = out.permute(2, 0, 1, 3).reshape(q_len, batch, embed)
        return self.out_proj(out)
