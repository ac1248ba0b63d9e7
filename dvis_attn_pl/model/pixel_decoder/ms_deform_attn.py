"""Multi-scale deformable attention (Deformable DETR), pure PyTorch, capture-aware.

Each query predicts, per head, level and point, a 2-D offset from its reference point and an
attention weight (softmax over levels x points). Values are bilinearly sampled at those
locations (``grid_sample``: zeros outside, ``align_corners=False``, grid = 2*loc - 1, exactly the
official CPU fallback) and summed with the weights.

Parameters: ``sampling_offsets``, ``attention_weights``, ``value_proj``, ``output_proj`` (official
keys). Used by the pixel decoder (3 levels, 8 heads, 4 points) and by the ViT-Adapter's injectors
and extractors (1 or 3 levels). As a capture site it emits ``sampling_locations``
(N, Len_q, heads, levels, points, 2) in [0, 1] (x, y) and ``attention_weights``
(N, Len_q, heads, levels, points).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import CaptureSite

SpatialShapes = torch.Tensor | Sequence[Sequence[int]]


def _shape_list(spatial_shapes: SpatialShapes) -> list[tuple[int, int]]:
    """(H, W) per level as Python ints (a (L, 2) tensor costs one device sync)."""
    if isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in spatial_shapes]


def deform_attn_sample(
    value: torch.Tensor,
    shapes: Sequence[tuple[int, int]],
    sampling_locations: torch.Tensor,
    attention_weights: torch.Tensor,
) -> torch.Tensor:
    """Weighted bilinear sampling: the core of multi-scale deformable attention.

    ``value`` (N, sum H_l*W_l, heads, D); ``sampling_locations`` (N, Len_q, heads, L, P, 2) in
    [0, 1]; ``attention_weights`` (N, Len_q, heads, L, P). Returns (N, Len_q, heads*D). One
    ``grid_sample`` per level; heads and points are batched.
    """
    n, _, heads, d = value.shape
    _, len_q, _, levels, points, _ = sampling_locations.shape
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    grids = (2 * sampling_locations - 1).to(dtype)
    # (N, Len_q, heads, L, P) -> (N*heads, 1, Len_q, L, P): broadcast over the channel dim D.
    weights = attention_weights.to(dtype).transpose(1, 2).reshape(n * heads, 1, len_q, levels, points)
    per_level = value.to(dtype).split([h * w for h, w in shapes], dim=1)
    # Without autograd the product can overwrite the samples: peak memory is one level's samples.
    in_place = not (torch.is_grad_enabled() and (value.requires_grad or attention_weights.requires_grad))
    out = None
    for lvl, (h, w) in enumerate(shapes):
        # (N, H*W, heads, D) -> (N*heads, D, H, W)
        v = per_level[lvl].permute(0, 2, 3, 1).reshape(n * heads, d, h, w)
        # (N, Len_q, heads, P, 2) -> (N*heads, Len_q, P, 2)
        g = grids[:, :, :, lvl].transpose(1, 2).reshape(n * heads, len_q, points, 2)
        sampled = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)
        w_l = weights[..., lvl, :]
        term = (sampled.mul_(w_l) if in_place else sampled * w_l).sum(-1)  # (N*heads, D, Len_q)
        out = term if out is None else out.add_(term)
    return out.view(n, heads * d, len_q).transpose(1, 2)


class MSDeformAttn(CaptureSite):
    """Multi-scale deformable attention with the official constructor and call signature.

    ``ratio`` is accepted for the ViT-Adapter's call (``deform_ratio``) and, as in the official
    module, does not change any width: ``value_proj`` is always ``d_model -> d_model``.
    """

    def __init__(
        self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8, n_points: int = 4, ratio: float = 1.0
    ):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        head_dim = d_model // n_heads
        if head_dim & (head_dim - 1):
            warnings.warn(f"MSDeformAttn head dim {head_dim} is not a power of 2", stacklevel=2)
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.ratio = ratio
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's init: offsets start on a ring of directions, one radius per point."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        ring = torch.stack([angles.cos(), angles.sin()], -1)
        ring = ring / ring.abs().max(-1, keepdim=True).values
        radius = torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        bias = ring.view(self.n_heads, 1, 1, 2) * radius  # (heads, 1, points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.expand(-1, self.n_levels, -1, -1).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for lin in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: SpatialShapes,
        input_level_start_index: torch.Tensor | None = None,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend ``query`` (N, Len_q, C) to ``input_flatten`` (N, sum H_l*W_l, C).

        ``reference_points`` is (N or 1, Len_q, L or 1, 2) normalised (x, y) in [0, 1], or
        (..., 4) boxes (cx, cy, w, h). ``input_spatial_shapes`` is (L, 2) (H, W), as a tensor or a
        list; ``input_level_start_index`` is implied by it and not needed.
        ``input_padding_mask`` (N, sum H_l*W_l) is True where the input is padding.
        """
        n, len_q, _ = query.shape
        shapes = _shape_list(input_spatial_shapes)
        if len(shapes) != self.n_levels:
            raise ValueError(f"MSDeformAttn has {self.n_levels} levels, got spatial shapes for {len(shapes)}")
        len_in = input_flatten.shape[1]
        if sum(h * w for h, w in shapes) != len_in:
            raise ValueError(f"spatial shapes {shapes} do not add up to the input length {len_in}")

        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(n, len_in, self.n_heads, self.d_model // self.n_heads)

        heads, levels, points = self.n_heads, self.n_levels, self.n_points
        offsets = self.sampling_offsets(query).view(n, len_q, heads, levels, points, 2)
        logits = self.attention_weights(query).view(n, len_q, heads, levels * points)
        weights = logits.softmax(-1).view(n, len_q, heads, levels, points)

        if reference_points.shape[-1] == 2:
            # offsets are in pixels of each level: normalise by (W_l, H_l)
            normalizer = torch.tensor([[w, h] for h, w in shapes], dtype=offsets.dtype, device=offsets.device)
            locations = reference_points[:, :, None, :, None, :] + offsets / normalizer[:, None, :]
        elif reference_points.shape[-1] == 4:
            centre = reference_points[:, :, None, :, None, :2]
            size = reference_points[:, :, None, :, None, 2:]
            locations = centre + offsets / points * size * 0.5
        else:
            raise ValueError(f"reference_points must end in 2 or 4 values, got {reference_points.shape[-1]}")

        if self.capture is not None:
            self.emit({"sampling_locations": locations, "attention_weights": weights})
        out = deform_attn_sample(value, shapes, locations, weights)
        return self.output_proj(out.to(value.dtype))
