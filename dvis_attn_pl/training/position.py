"""A training-only auxiliary loss: each matched query regresses its object's position.

DVIS-DAQ's refiner sees only per-frame instance queries, with no position encoding. The official
losses never ask a query to carry *where* its object is (the mask comes from the query's dot
product with the pixel features), and a model trained on them alone encodes position so weakly
that the refiner cannot read a trajectory from its inputs (``docs/training.md``, "What the refiner
can see"). This head asks the segmenter's queries and the tracker's outputs to carry the centroid of
their matched object's mask. It lives in the training module, not in the model: the exported
weights keep the official keys, and inference never runs it.
"""

from __future__ import annotations

import torch
from torch import nn


class PositionHead(nn.Linear):
    """``nn.Linear(C, 2)``: a query (..., C) -> its object's centroid (x, y) as a fraction of the mask grid."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, 2)


def mask_centroids(masks: torch.Tensor) -> torch.Tensor:
    """Centroids (n, 2) as (x, y) fractions of the grid of soft masks ``masks`` (n, h, w); 0.5 where empty."""
    n, h, w = masks.shape
    m = masks.float()
    mass = m.sum(dim=(1, 2))
    xs = (torch.arange(w, device=m.device, dtype=m.dtype) + 0.5) / w
    ys = (torch.arange(h, device=m.device, dtype=m.dtype) + 0.5) / h
    cx = (m.sum(dim=1) * xs).sum(dim=1)
    cy = (m.sum(dim=2) * ys).sum(dim=1)
    centre = torch.stack([cx, cy], dim=1) / mass.clamp(min=1e-6)[:, None]
    return torch.where(mass[:, None] > 0, centre, torch.full_like(centre, 0.5))


def position_loss(
    head: nn.Module, queries: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor, cols: torch.Tensor,
    num_objects: float,
) -> torch.Tensor:
    """L1 between ``head(queries[rows])`` and the centroids of ``targets[cols]`` (n, h, w), summed over
    pairs and divided by ``num_objects`` (the normalisation of the mask losses)."""
    if rows.numel() == 0:
        return sum(p.sum() for p in head.parameters()) * 0.0 + queries.sum() * 0.0
    pred = head(queries[rows.to(queries.device)].float())
    goal = mask_centroids(targets[cols.to(targets.device)]).to(pred.device)
    return (pred - goal).abs().sum() / num_objects
