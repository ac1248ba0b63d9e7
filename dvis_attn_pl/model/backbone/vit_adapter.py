"""DINOv2 ViT-Adapter backbone (``MODEL.BACKBONE.NAME: D2VitAdapterDinoV2``).

Computation (official ``DinoV2ViTAdapter`` with ``InteractionBlockWithCls_Efficient``), for a
(B, 3, H, W) input with H, W multiples of 32 and D the ViT width:

1. Spatial prior module: ``c1`` (stride 4 map) and tokens ``c2, c3, c4`` (strides 8/16/32), each
   plus its row of ``level_embed``; ``c = cat(c2, c3, c4)``.
2. ViT tokens: patch embedding (patch 16), class token, position embedding resized bicubically
   from the stored 37x37 grid to (H/16, W/16).
3. For each interaction i: ViT blocks ``interaction_indexes[i][0] .. [i][-1]`` on [cls; patches];
   then the extractor (and, in the last interaction, two extra extractors) update ``c`` by
   deformable attention to the patch tokens. The patch tokens of each interaction are kept.
4. ``c`` is split back into maps at strides 8/16/32; ``c1 += up(c2)`` (2x2 transposed conv);
   the four kept ViT maps are resized (x4, x2, x1, x0.5, bilinear) and added; BatchNorm each.

Output ``{"res2": stride 4, "res3": 8, "res4": 16, "res5": 32}``, all with D channels.

Sizes come from ``MODEL.VIT_ADAPTER.{EMBED_DIM, DEPTH, NUM_HEADS, DEFORM_NUM_HEADS, CONV_INPLANE,
INTERACTION_INDEXES}`` (from the ``NAME`` preset when unset). Hard-coded as in the official code
(``get_models`` / ``get_adapter_args('vitl')``), see the constants below. ``VIT_WEIGHT`` is never
read: the official code loads DINOv2 weights while building, but a trained DVIS-DAQ checkpoint
already contains every backbone weight, so pass the full checkpoint to ``load_state_dict``.
``WITH_CP`` (activation checkpointing) only matters for training and is accepted and ignored;
``FREEZE_VIT`` turns off gradients of the ViT parameters as the official code does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ...config.defaults import VIT_PRESETS
from ...utils.errors import UserError
from .adapter_modules import (
    InteractionBlock,
    SpatialPriorModule,
    level_reference_points,
    prior_shapes,
)
from .base import Backbone, ShapeSpec, register_backbone
from .dinov2_vit import DinoV2ViT

__all__ = ["ViTAdapter", "ViTAdapterSizes", "build_vit_adapter_backbone", "vit_adapter_sizes"]

_log = logging.getLogger(__name__)

# --- Values the official code hard-codes (backbones.get_models, adapter.get_adapter_args) ---------
PATCH_SIZE = 16  # DINOv2 /14 kernels are interpolated to 16 when pretraining weights are loaded
PRETRAIN_SIZE = 592  # img_size: position-embedding grid 592 // 16 = 37 per side
MLP_RATIO = 4.0  # ffn_layer "mlp", biases on qkv / proj / ffn
LAYER_SCALE_INIT = 1e-5  # init_values: non-zero, so ls1/ls2 exist
N_POINTS = 4  # deformable sampling points per head
DEFORM_RATIO = 0.5  # passed to MSDeformAttn, which (officially too) changes no width
WITH_CFFN = True  # extractors have a ConvFFN
CFFN_RATIO = 0.25  # ConvFFN hidden width = D * 0.25
ADD_VIT_FEATURE = True  # the kept ViT maps are added to the outputs
USE_EXTRA_EXTRACTOR = True  # two extra extractors in the last interaction
# Not needed at inference: drop_path_rate 0 (no DropPath), the injector's init_values 1e-6 (the
# efficient interaction block has no injector), block_chunks 0 (flat ``blocks.{i}`` keys).

OUT_FEATURES = ("res2", "res3", "res4", "res5")
OUT_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}


@dataclass(frozen=True)
class ViTAdapterSizes:
    """The configurable sizes of the ViT-Adapter."""

    embed_dim: int
    depth: int
    num_heads: int
    deform_num_heads: int
    conv_inplane: int
    interaction_indexes: tuple[tuple[int, int], ...]

    def validate(self) -> None:
        """Raise ``UserError`` naming the ``MODEL.VIT_ADAPTER`` key whose value cannot work."""
        prefix = "MODEL.VIT_ADAPTER"
        if self.embed_dim % self.num_heads:
            raise UserError(
                f"{prefix}.EMBED_DIM {self.embed_dim} is not divisible by NUM_HEADS {self.num_heads}"
            )
        if self.embed_dim % self.deform_num_heads:
            raise UserError(
                f"{prefix}.EMBED_DIM {self.embed_dim} is not divisible by DEFORM_NUM_HEADS {self.deform_num_heads}"
            )
        if len(self.interaction_indexes) != 4:
            raise UserError(
                f"{prefix}.INTERACTION_INDEXES must have 4 [first, last] groups (one per output level), "
                f"got {len(self.interaction_indexes)}"
            )
        for first, last in self.interaction_indexes:
            if not 0 <= first <= last < self.depth:
                raise UserError(
                    f"{prefix}.INTERACTION_INDEXES entry [{first}, {last}] is outside the {self.depth} ViT blocks"
                )


def vit_adapter_sizes(cfg) -> ViTAdapterSizes:
    """Read the sizes from ``cfg.MODEL.VIT_ADAPTER``; unset (None/missing) keys come from the NAME preset."""
    node = cfg.MODEL.VIT_ADAPTER
    name = node.get("NAME", "vitl")
    preset = VIT_PRESETS.get(name, {})

    def value(key: str):
        got = node.get(key, None)
        if got is None:
            got = preset.get(key)
        if got is None:
            raise UserError(f"MODEL.VIT_ADAPTER.{key} is not set and NAME {name!r} has no preset for it")
        return got

    indexes = value("INTERACTION_INDEXES")
    try:
        pairs = tuple((int(group[0]), int(group[-1])) for group in indexes)
    except (TypeError, IndexError, ValueError):
        raise UserError(
            f"MODEL.VIT_ADAPTER.INTERACTION_INDEXES must be a list of [first, last] pairs, got {indexes!r}"
        ) from None
    sizes = ViTAdapterSizes(
        embed_dim=int(value("EMBED_DIM")),
        depth=int(value("DEPTH")),
        num_heads=int(value("NUM_HEADS")),
        deform_num_heads=int(value("DEFORM_NUM_HEADS")),
        conv_inplane=int(value("CONV_INPLANE")),
        interaction_indexes=pairs,
    )
    sizes.validate()
    return sizes


class ViTAdapter(Backbone):
    """DINOv2 ViT + adapter; ``forward(images) -> {"res2".."res5"}``. Key names as the official model."""

    def __init__(self, sizes: ViTAdapterSizes, freeze_vit: bool = True) -> None:
        super().__init__()
        sizes.validate()
        dim = sizes.embed_dim
        self.interaction_indexes = sizes.interaction_indexes
        self.level_embed = nn.Parameter(torch.zeros(3, dim))
        self.spm = SpatialPriorModule(sizes.conv_inplane, dim)
        last = len(sizes.interaction_indexes) - 1
        self.interactions = nn.Sequential(
            *(
                InteractionBlock(
                    dim,
                    sizes.deform_num_heads,
                    N_POINTS,
                    DEFORM_RATIO,
                    WITH_CFFN,
                    CFFN_RATIO,
                    extra_extractor=USE_EXTRA_EXTRACTOR and i == last,
                )
                for i in range(len(sizes.interaction_indexes))
            )
        )
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.norm1 = nn.BatchNorm2d(dim)
        self.norm2 = nn.BatchNorm2d(dim)
        self.norm3 = nn.BatchNorm2d(dim)
        self.norm4 = nn.BatchNorm2d(dim)
        self.vit_module = DinoV2ViT(
            dim,
            sizes.depth,
            sizes.num_heads,
            patch_size=PATCH_SIZE,
            pretrain_size=PRETRAIN_SIZE,
            mlp_ratio=MLP_RATIO,
            layer_scale_init=LAYER_SCALE_INIT,
        )
        if freeze_vit:
            self.vit_module.requires_grad_(False)

    @property
    def embed_dim(self) -> int:
        return self.vit_module.embed_dim

    @property
    def size_divisibility(self) -> int:
        return 32

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {name: ShapeSpec(channels=self.embed_dim, stride=OUT_STRIDES[name]) for name in OUT_FEATURES}

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B, 3, H, W) normalised images, H and W multiples of 32 -> ``{"res2".."res5"}``."""
        if images.dim() != 4:
            raise ValueError(f"ViT-Adapter takes (B, 3, H, W) images, got shape {tuple(images.shape)}")
        image_h, image_w = images.shape[-2:]
        if image_h % 32 or image_w % 32:
            raise ValueError(f"ViT-Adapter input size {image_h}x{image_w} is not a multiple of 32")
        batch = images.shape[0]
        level_shapes = prior_shapes(image_h, image_w)
        reference_points = level_reference_points(level_shapes, images.device)

        c1, c2, c3, c4 = self.spm(images)
        prior = torch.cat([c + self.level_embed[i] for i, c in enumerate((c2, c3, c4))], dim=1)

        tokens, grid_h, grid_w = self.vit_module.tokens(images)
        vit_shape = (grid_h, grid_w)
        dim = tokens.shape[-1]
        vit_maps = []
        for (first, last), interaction in zip(self.interaction_indexes, self.interactions):
            blocks = list(self.vit_module.blocks[first : last + 1])
            tokens, prior = interaction(tokens, prior, blocks, reference_points, vit_shape, level_shapes)
            vit_maps.append(tokens[:, 1:].transpose(1, 2).reshape(batch, dim, grid_h, grid_w))

        p2, p3, p4 = (
            part.transpose(1, 2).reshape(batch, dim, h, w)
            for part, (h, w) in zip(prior.split([h * w for h, w in level_shapes], dim=1), level_shapes)
        )
        p1 = self.up(p2) + c1
        if ADD_VIT_FEATURE:
            x1, x2, x3, x4 = vit_maps
            p1 = p1 + F.interpolate(x1, scale_factor=4, mode="bilinear", align_corners=False)
            p2 = p2 + F.interpolate(x2, scale_factor=2, mode="bilinear", align_corners=False)
            p3 = p3 + x3
            p4 = p4 + F.interpolate(x4, scale_factor=0.5, mode="bilinear", align_corners=False)
        norms = (self.norm1, self.norm2, self.norm3, self.norm4)
        return {name: norm(p) for name, norm, p in zip(OUT_FEATURES, norms, (p1, p2, p3, p4))}


@register_backbone("D2VitAdapterDinoV2")
def build_vit_adapter_backbone(cfg) -> ViTAdapter:
    """Build the ViT-Adapter from ``cfg.MODEL.VIT_ADAPTER`` (no weights are loaded here)."""
    node = cfg.MODEL.VIT_ADAPTER
    if node.get("VIT_WEIGHT"):
        _log.info(
            "MODEL.VIT_ADAPTER.VIT_WEIGHT (%s) is not loaded: the trained checkpoint holds the backbone weights",
            node.get("VIT_WEIGHT"),
        )
    return ViTAdapter(vit_adapter_sizes(cfg), freeze_vit=bool(node.get("FREEZE_VIT", True)))
