"""The set criterion of Mask2Former / DVIS-DAQ: Hungarian matching, then class CE + mask BCE + dice.

Masks are compared in full at the mask-feature resolution (the official code samples 12,544
points with importance sampling; at our sizes the whole grid is fewer points than that). Targets
are soft (the fraction of each cell the object covers). The same function serves frame-level
matching (masks (n, h, w)) and clip-level matching (masks (n, t, h, w), flattened over time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


@dataclass(frozen=True)
class LossWeights:
    """The official weights (``MODEL.MASK_FORMER.*_WEIGHT``); the matcher uses the same ones."""

    cls: float = 2.0
    mask: float = 5.0
    dice: float = 5.0
    position: float = 0.0  # the training-only position loss (``training/position.py``); not official

    @classmethod
    def from_cfg(cls, cfg) -> LossWeights:
        mf = cfg.MODEL.MASK_FORMER
        return cls(float(mf.CLASS_WEIGHT), float(mf.MASK_WEIGHT), float(mf.DICE_WEIGHT))


def _pairwise_bce(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE of every prediction (n, P) logits against every target (m, P) -> (n, m)."""
    pos = F.binary_cross_entropy_with_logits(pred, torch.ones_like(pred), reduction="none")
    neg = F.binary_cross_entropy_with_logits(pred, torch.zeros_like(pred), reduction="none")
    return (pos @ target.T + neg @ (1 - target).T) / pred.shape[1]


def _pairwise_dice(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    prob = pred.sigmoid()
    inter = 2 * prob @ target.T
    total = prob.sum(-1)[:, None] + target.sum(-1)[None, :]
    return 1 - (inter + 1) / (total + 1)


@torch.no_grad()
def hungarian_match(
    logits: torch.Tensor, masks: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor, w: LossWeights
) -> tuple[torch.Tensor, torch.Tensor]:
    """(prediction rows, target rows) of the minimum-cost assignment.

    ``logits`` (n, K+1), ``masks`` (n, ...) logits, ``labels`` (m,), ``targets`` (m, ...) soft masks.
    """
    if labels.numel() == 0 or logits.shape[0] == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    prob = logits.float().softmax(-1)[:, labels]
    pred = masks.flatten(1).float()
    tgt = targets.flatten(1).float()
    cost = -w.cls * prob + w.mask * _pairwise_bce(pred, tgt) + w.dice * _pairwise_dice(pred, tgt)
    rows, cols = linear_sum_assignment(cost.cpu().to(torch.float64).numpy())
    return torch.as_tensor(np.asarray(rows, np.int64)), torch.as_tensor(np.asarray(cols, np.int64))


def class_loss(logits: torch.Tensor, target_classes: torch.Tensor, empty_weight: torch.Tensor) -> torch.Tensor:
    """Cross entropy with the no-object class down-weighted (``empty_weight`` (K+1,))."""
    return F.cross_entropy(logits.float(), target_classes, weight=empty_weight.float())


def mask_losses(pred: torch.Tensor, target: torch.Tensor, num_objects: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(BCE, dice) of matched masks ``pred`` (n, ...) logits against ``target`` (n, ...) soft masks,
    each summed over pairs and divided by ``num_objects`` (the official normalisation)."""
    if pred.shape[0] == 0:
        zero = pred.sum() * 0.0
        return zero, zero
    p = pred.flatten(1).float()
    t = target.flatten(1).float()
    bce = F.binary_cross_entropy_with_logits(p, t, reduction="none").mean(1).sum() / num_objects
    prob = p.sigmoid()
    dice = 1 - (2 * (prob * t).sum(-1) + 1) / (prob.sum(-1) + t.sum(-1) + 1)
    return bce, dice.sum() / num_objects


def set_losses(
    logits: torch.Tensor,
    masks: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    labels: torch.Tensor,
    targets: torch.Tensor,
    empty_weight: torch.Tensor,
    num_objects: float,
) -> dict[str, torch.Tensor]:
    """``loss_ce``, ``loss_mask``, ``loss_dice`` of one set of predictions under a given matching.

    Unmatched rows are trained towards the no-object class (index K).
    """
    num_classes = logits.shape[-1] - 1
    classes = torch.full((logits.shape[0],), num_classes, dtype=torch.int64, device=logits.device)
    classes[rows.to(logits.device)] = labels[cols].to(logits.device)
    bce, dice = mask_losses(masks[rows.to(masks.device)], targets[cols].to(masks.device), num_objects)
    return {"loss_ce": class_loss(logits, classes, empty_weight), "loss_mask": bce, "loss_dice": dice}


def weighted_total(losses: dict[str, torch.Tensor], w: LossWeights) -> torch.Tensor:
    """Sum of every loss term with its weight (names end with ``ce``, ``mask``, ``dice`` or ``position``)."""
    scale = {"ce": w.cls, "mask": w.mask, "dice": w.dice, "position": w.position}
    return sum(v * scale[k.rsplit("_", 1)[-1]] for k, v in losses.items())
