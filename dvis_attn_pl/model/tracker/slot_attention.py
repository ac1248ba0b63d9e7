"""The tracker's slot branch: single-pass slot attention and the layer that wraps it.

The slot branch lets the live track queries compete with a few learned background slots for the
current frame's segmenter queries (the "disappearance" side of the DAQ tracker). Only the official
inference behaviour is implemented: one attention pass, no GRU/MLP refinement.
"""

from __future__ import annotations

import torch
from torch import nn

from ..attention import MultiheadAttention
from ..capture import CaptureSite
from ..layers import with_pos


class SlotAttention(CaptureSite):
    """One pass of slot attention (keys ``norm_inputs``, ``project_q.{0,1}``, ``project_k``).

    Attention logits between inputs and slots are normalised with a softmax over the *slots*, a
    small ``eps`` is added, and the result is renormalised over the *inputs*, so every slot takes a
    weighted mean of the inputs. With a capture request the site emits
    ``{"weights": (B, inputs, slots)}`` (the renormalised weights).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.dim = dim
        self.eps = eps
        self.scale = dim**-0.5
        self.norm_inputs = nn.LayerNorm(dim)
        self.project_q = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim, bias=False))
        self.project_k = nn.Linear(dim, dim, bias=False)

    def forward(self, values: torch.Tensor, keys_in: torch.Tensor, slots: torch.Tensor) -> torch.Tensor:
        """``values``/``keys_in`` (B, N, C) inputs, ``slots`` (B, M, C) -> updates (M, B, C)."""
        k = self.project_k(self.norm_inputs(keys_in))
        q = self.project_q(slots)
        logits = torch.einsum("bnc,bmc->bnm", k, q) * self.scale
        weights = logits.softmax(dim=-1) + self.eps
        weights = weights / weights.sum(dim=1, keepdim=True)
        if self.capture is not None:
            self.emit({"weights": weights})
        updates = torch.einsum("bnm,bnc->bmc", weights, values)
        return updates.transpose(0, 1)


class SlotCrossAttentionLayer(nn.Module):
    """Cross-attention to the frame queries followed by slot attention, residual and LayerNorm.

    Keys: ``multihead_attn.*``, ``norm.*``, ``slot_attn.*`` (post-norm form only, as used by every
    official config).
    """

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.multihead_attn = MultiheadAttention(d_model, nhead)
        self.norm = nn.LayerNorm(d_model)
        self.slot_attn = SlotAttention(d_model)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        query_pos: torch.Tensor | None = None,
        slot_query: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``tgt`` (L, N, C) attends to ``memory`` (S, N, C); ``slot_query`` (L, N, C) seeds the slots."""
        if slot_query is None:
            slot_query = tgt
        attended = self.multihead_attn(with_pos(tgt, query_pos), memory, memory)
        updates = self.slot_attn(
            attended.transpose(0, 1), (tgt + attended).transpose(0, 1), slot_query.transpose(0, 1)
        )
        return self.norm(tgt + updates)
