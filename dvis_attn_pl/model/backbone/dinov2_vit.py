"""The DINOv2 vision transformer inside the ViT-Adapter (``backbone.vit_module.*``).

State-dict layout (DINOv2 names, ``block_chunks=0`` so blocks are a flat list)::

    patch_embed.proj.{weight,bias}      Conv2d(3, D, 16, stride 16)
    cls_token (1,1,D)  pos_embed (1, 1+G*G, D)  mask_token (1,D)
    blocks.{i}.norm1 / attn.qkv / attn.proj / ls1.gamma / norm2 / mlp.fc1 / mlp.fc2 / ls2.gamma
    norm.{weight,bias}

``mask_token`` and the final ``norm`` are part of the checkpoint but unused by the adapter (it
takes the un-normalised block outputs). Nothing is loaded at construction: the official code
``torch.load``s ``MODEL.VIT_ADAPTER.VIT_WEIGHT`` (DINOv2 ViT-L/14, patch kernel interpolated to
16x16) while building; a trained DVIS-DAQ checkpoint already holds the final weights, so here the
full checkpoint is loaded afterwards with ``load_state_dict``.

Each block's self-attention is a :class:`~dvis_attn_pl.model.capture.CaptureSite`: it always runs the fused
``scaled_dot_product_attention``; when captured it also computes ``softmax(q*scale @ k^T)`` and emits it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import CaptureSite

# DINOv2 LayerNorms (blocks, final norm) and the adapter's LayerNorms all use eps 1e-6.
LAYER_NORM_EPS = 1e-6


def vit_layer_norm(dim: int) -> nn.LayerNorm:
    """The LayerNorm DINOv2 and the adapter use everywhere (eps 1e-6)."""
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


class PatchEmbed(nn.Module):
    """Non-overlapping ``patch_size`` convolution: (B,3,H,W) -> (B, H/p * W/p, D) and the grid (H/p, W/p)."""

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        height, width = images.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(
                f"ViT input size {height}x{width} is not a multiple of the patch size {self.patch_size}"
            )
        grid = self.proj(images)
        grid_h, grid_w = grid.shape[-2:]
        return grid.flatten(2).transpose(1, 2), grid_h, grid_w


class LayerScale(nn.Module):
    """Per-channel scale ``x * gamma`` (DINOv2 layer scale)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTSelfAttention(CaptureSite):
    """DINOv2 multi-head self-attention over (B, N, D) tokens with a fused ``qkv`` projection.

    Without a capture request: SDPA. With one: ``softmax((q * head_dim**-0.5) @ k^T)`` (the
    order of operations of DINOv2's non-xFormers path) and ``emit({"weights": ...})`` with
    (B, N, N) head-averaged or (B, heads, N, N) per-head weights.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"ViT embed dim {dim} is not divisible by its {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        # (B, N, 3D) -> (3, B, heads, N, head_dim)
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        if self.capture is not None:  # weights on the side: the output stays bit-identical
            weights = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
            self.emit({"weights": weights if self.capture.per_head else weights.mean(dim=1)})
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class ViTBlock(nn.Module):
    """Pre-norm transformer block with layer scale: ``x += ls1(attn(norm1 x)); x += ls2(mlp(norm2 x))``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, layer_scale_init: float) -> None:
        super().__init__()
        self.norm1 = vit_layer_norm(dim)
        self.attn = ViTSelfAttention(dim, num_heads)
        self.ls1 = LayerScale(dim, layer_scale_init)
        self.norm2 = vit_layer_norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2ViT(nn.Module):
    """DINOv2 ViT trunk: patch embedding, class token, interpolated position embedding, blocks.

    ``pretrain_size`` fixes the stored position-embedding grid (``pretrain_size // patch_size``
    per side; 592 // 16 = 37 for the released models). :meth:`tokens` embeds an image batch;
    the adapter then runs ``blocks`` itself, group by group.
    """

    def __init__(
        self,
        embed_dim: int,
        depth: int,
        num_heads: int,
        *,
        patch_size: int = 16,
        pretrain_size: int = 592,
        mlp_ratio: float = 4.0,
        layer_scale_init: float = 1e-5,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = patch_size
        self.pos_grid = pretrain_size // patch_size
        self.patch_embed = PatchEmbed(patch_size, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.pos_grid**2, embed_dim))
        self.blocks = nn.ModuleList(
            ViTBlock(embed_dim, num_heads, mlp_ratio, layer_scale_init) for _ in range(depth)
        )
        self.norm = vit_layer_norm(embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))

    def position_embedding(self, image_h: int, image_w: int, dtype: torch.dtype) -> torch.Tensor:
        """(1, 1 + h*w, D) position embedding for an ``image_h`` x ``image_w`` input.

        As DINOv2: the stored table is returned as is when the input is square with the stored
        number of patches; otherwise the patch part is resized bicubically (in float32) with
        the scale factors ``(n + 0.1) / grid`` (the +0.1 guards the floor of the output size),
        which is also what the resampling coordinates are derived from.
        """
        grid_h, grid_w = image_h // self.patch_size, image_w // self.patch_size
        stored = self.pos_embed
        if grid_h * grid_w == self.pos_grid**2 and image_h == image_w:
            return stored
        table = stored.float()
        cls_pos, patch_pos = table[:, :1], table[:, 1:]
        side = math.sqrt(patch_pos.shape[1])
        patch_pos = patch_pos.reshape(1, self.pos_grid, self.pos_grid, -1).permute(0, 3, 1, 2)
        resized = F.interpolate(
            patch_pos,
            scale_factor=((grid_h + 0.1) / side, (grid_w + 0.1) / side),
            mode="bicubic",
        )
        if tuple(resized.shape[-2:]) != (grid_h, grid_w):
            raise RuntimeError(
                f"position embedding resized to {tuple(resized.shape[-2:])}, wanted {(grid_h, grid_w)}"
            )
        resized = resized.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat((cls_pos, resized), dim=1).to(dtype)

    def tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Embed (B,3,H,W) into (B, 1 + h*w, D) tokens (class token first) and the grid (h, w)."""
        patches, grid_h, grid_w = self.patch_embed(images)
        cls = self.cls_token.expand(patches.shape[0], -1, -1)
        x = torch.cat((cls, patches), dim=1)
        pos = self.position_embedding(images.shape[-2], images.shape[-1], x.dtype)
        return x + pos, grid_h, grid_w
