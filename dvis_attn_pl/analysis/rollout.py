"""Temporal attention rollout over the refiner's time self-attention, batched over instances.

Given per-layer frame-to-frame attention ``A_k`` (T x T, rows = querying frame) of each instance,
rollout composes the layers: ``T_k = rownorm(A_k + I)`` (default) or ``(A_k + I) / 2`` (residual
form), ``R = T_L ... T_1`` (last layer leftmost). A readout turns ``R`` into one importance value
per frame: the column mean (how much every frame is drawn on, the original tool's choice), a chosen
frame's row, or ``a^T R`` weighted by the refiner's temporal pooling weights ``a`` (the way the
classifier itself pools frames).

Everything runs on the tensors' device with batched matrix products: instances are the batch.
"""

from __future__ import annotations

import torch

RESIDUALS = ("identity", "half", "none")
HEAD_FUSIONS = ("mean", "max", "min")
READOUTS = ("column_mean", "row", "activation")


def fuse_heads(attn: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """(B, L, H, T, T) per-head weights -> (B, L, T, T)."""
    if how not in HEAD_FUSIONS:
        raise ValueError(f"head fusion {how!r} is not one of {HEAD_FUSIONS}")
    if how == "mean":
        return attn.mean(dim=2)
    if how == "max":
        return attn.amax(dim=2)
    return attn.amin(dim=2)


def discard_lowest(attn: torch.Tensor, ratio: float) -> torch.Tensor:
    """Zero the lowest ``ratio`` fraction of each row (ties at the cut-off are kept)."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"discard ratio must be in [0, 1), got {ratio}")
    n_drop = int(attn.shape[-1] * ratio)
    if n_drop == 0:
        return attn
    cutoff = attn.kthvalue(n_drop, dim=-1, keepdim=True).values
    return torch.where(attn > cutoff, attn, torch.zeros_like(attn))


def _row_normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)


def mask_padding(attn: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Remove padded frames from the attention graph.

    ``attn`` is (B, L, T, T) and ``valid`` (B, T) bool. Columns of padded frames are zeroed and
    rows renormalised over valid frames; rows of padded frames become zero, so after the residual
    step they carry only the identity and never feed valid frames.
    """
    v = valid.to(attn.dtype)
    kept = attn * v[:, None, None, :]
    kept = _row_normalise(kept) * v[:, None, :, None]
    return kept


def temporal_rollout(
    attn: torch.Tensor,
    *,
    residual: str = "identity",
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    start_layer: int = 0,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Roll out attention over layers.

    ``attn``: (B, L, T, T) head-averaged or (B, L, H, T, T) per-head weights, rows summing to one.
    ``residual``: ``"identity"`` -> rownorm(A + I), ``"half"`` -> (A + I) / 2, ``"none"`` -> A.
    ``start_layer``: layers before it are skipped. ``valid``: (B, T) bool, False for padding frames.
    Returns R (B, T, T) = T_L ... T_start, computed in float32 (float64 stays float64).
    """
    if residual not in RESIDUALS:
        raise ValueError(f"residual {residual!r} is not one of {RESIDUALS}")
    if attn.dim() == 5:
        attn = fuse_heads(attn, head_fusion)
    if attn.dim() != 4 or attn.shape[-1] != attn.shape[-2]:
        raise ValueError(f"expected (B, L, T, T) attention, got shape {tuple(attn.shape)}")
    num_layers = attn.shape[1]
    if not 0 <= start_layer < num_layers:
        raise ValueError(f"start layer {start_layer} out of range for {num_layers} layers")
    if attn.dtype not in (torch.float32, torch.float64):
        attn = attn.float()
    attn = attn[:, start_layer:]
    if discard_ratio:
        attn = discard_lowest(attn, discard_ratio)
    if valid is not None:
        attn = mask_padding(attn, valid.to(attn.device, torch.bool))
    eye = torch.eye(attn.shape[-1], dtype=attn.dtype, device=attn.device)

    def step(layer: torch.Tensor) -> torch.Tensor:  # one layer's (B, T, T) transition, formed when used
        if residual == "identity":
            return _row_normalise(layer + eye)
        if residual == "half":
            return (layer + eye) / 2
        return layer

    result = step(attn[:, 0])
    for k in range(1, attn.shape[1]):  # loop over layers only (L <= ~6)
        result = torch.bmm(step(attn[:, k]), result)
    return result


def rollout_readout(
    rollout: torch.Tensor,
    mode: str = "column_mean",
    *,
    frame: int | None = None,
    activation: torch.Tensor | None = None,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-frame importance (B, T) from a rollout (B, T, T).

    ``column_mean``: mean over querying frames (valid ones only, if ``valid`` is given);
    ``row``: the row of ``frame``; ``activation``: ``a^T R`` with pooling weights ``a`` (B, T).
    """
    if mode == "column_mean":
        if valid is None:
            return rollout.mean(dim=1)
        w = valid.to(rollout.dtype)
        return (rollout * w[:, :, None]).sum(dim=1) / w.sum(dim=1, keepdim=True).clamp_min(1)
    if mode == "row":
        if frame is None or not -rollout.shape[1] <= frame < rollout.shape[1]:
            raise ValueError(f"row readout needs a frame index within the video, got {frame}")
        return rollout[:, frame]
    if mode == "activation":
        if activation is None or activation.shape != rollout.shape[:2]:
            raise ValueError("activation readout needs pooling weights of shape (B, T)")
        return torch.bmm(activation.to(rollout.dtype)[:, None, :], rollout)[:, 0]
    raise ValueError(f"readout {mode!r} is not one of {READOUTS}")
