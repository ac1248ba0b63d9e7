"""ViT-Adapter pieces: the spatial prior module and the extractor interactions.

Key layout (under ``backbone.``)::

    spm.stem.{0,3,6}      3x3 convs (no bias), stem.{1,4,7} BatchNorm, then ReLU/max-pool
    spm.conv{2,3,4}.0/.1  stride-2 3x3 conv (no bias) + BatchNorm
    spm.fc{1..4}          1x1 convs to the ViT width
    interactions.{i}.extractor.{query_norm,feat_norm,attn,ffn,ffn_norm}
    interactions.{last}.extra_extractors.{0,1}.*
      attn = MSDeformAttn (1 level), ffn = ConvFFN: fc1, dwconv.dwconv (3x3 depth-wise), fc2

The official DVIS-DAQ adapter uses the "efficient" interaction block: **no injector** (the ViT
tokens are not updated from the spatial prior), only extractors that let the spatial-prior tokens
(strides 8/16/32 concatenated) attend to the ViT patch tokens (stride 16) with deformable
attention. The official BatchNorms are ``SyncBatchNorm``; in eval they are plain batch norms with
running statistics, so ``nn.BatchNorm2d`` (same keys, ``num_batches_tracked`` included) is used.
"""

from __future__ import annotations

import torch
from torch import nn

from ..pixel_decoder.ms_deform_attn import MSDeformAttn
from .dinov2_vit import vit_layer_norm

# Spatial-prior token levels, as strides of the input image (the ViT grid has stride 16).
PRIOR_STRIDES = (8, 16, 32)


def level_reference_points(shapes: list[tuple[int, int]], device: torch.device | None = None) -> torch.Tensor:
    """Pixel-centre reference points of every cell of every level, (1, sum H*W, 1, 2) as (x, y) in [0, 1]."""
    points = []
    for h, w in shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), dim=-1))
    return torch.cat(points, dim=0)[None, :, None, :]


def prior_shapes(image_h: int, image_w: int) -> list[tuple[int, int]]:
    """(H, W) of the spatial-prior levels (strides 8, 16, 32) for an input of the given size."""
    return [(image_h // s, image_w // s) for s in PRIOR_STRIDES]


class DWConv(nn.Module):
    """3x3 depth-wise conv applied separately to each of the three prior levels of a token sequence."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
        batch, _, dim = x.shape
        out = []
        for part, (h, w) in zip(x.split([h * w for h, w in shapes], dim=1), shapes):
            grid = part.transpose(1, 2).reshape(batch, dim, h, w)
            out.append(self.dwconv(grid).flatten(2).transpose(1, 2))
        return torch.cat(out, dim=1)


class ConvFFN(nn.Module):
    """``fc2(GELU(dwconv(fc1(x))))`` over the concatenated prior tokens."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DWConv(hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
        return self.fc2(self.act(self.dwconv(self.fc1(x), shapes)))


class Extractor(nn.Module):
    """Prior tokens attend (deformably, one level) to the ViT tokens, then a ConvFFN; both residual."""

    def __init__(
        self, dim: int, num_heads: int, n_points: int, deform_ratio: float, with_cffn: bool, cffn_ratio: float
    ) -> None:
        super().__init__()
        self.query_norm = vit_layer_norm(dim)
        self.feat_norm = vit_layer_norm(dim)
        self.attn = MSDeformAttn(
            d_model=dim, n_levels=1, n_heads=num_heads, n_points=n_points, ratio=deform_ratio
        )
        self.with_cffn = with_cffn
        if with_cffn:
            self.ffn = ConvFFN(dim, int(dim * cffn_ratio))
            self.ffn_norm = vit_layer_norm(dim)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        feat: torch.Tensor,
        feat_shape: tuple[int, int],
        query_shapes: list[tuple[int, int]],
    ) -> torch.Tensor:
        """``query`` (B, sum prior H*W, D); ``feat`` (B, h*w, D) ViT patch tokens on ``feat_shape``."""
        attended = self.attn(self.query_norm(query), reference_points, self.feat_norm(feat), [feat_shape])
        query = query + attended
        if self.with_cffn:
            query = query + self.ffn(self.ffn_norm(query), query_shapes)
        return query


class InteractionBlock(nn.Module):
    """One adapter stage: run a group of ViT blocks (class token included), then the extractor(s)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        n_points: int,
        deform_ratio: float,
        with_cffn: bool,
        cffn_ratio: float,
        extra_extractor: bool,
    ) -> None:
        super().__init__()
        args = (dim, num_heads, n_points, deform_ratio, with_cffn, cffn_ratio)
        self.extractor = Extractor(*args)
        self.extra_extractors = nn.Sequential(Extractor(*args), Extractor(*args)) if extra_extractor else None

    def forward(
        self,
        tokens: torch.Tensor,
        prior: torch.Tensor,
        blocks: list[nn.Module],
        reference_points: torch.Tensor,
        vit_shape: tuple[int, int],
        prior_level_shapes: list[tuple[int, int]],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``tokens`` (B, 1 + h*w, D) with the class token first; ``prior`` (B, sum H*W, D).

        Returns the updated tokens and prior tokens.
        """
        for block in blocks:
            tokens = block(tokens)
        patches = tokens[:, 1:]
        extractors = [self.extractor] + (
            list(self.extra_extractors) if self.extra_extractors is not None else []
        )
        for extractor in extractors:
            prior = extractor(prior, reference_points, patches, vit_shape, prior_level_shapes)
        return tokens, prior


def _conv_bn_relu(in_ch: int, out_ch: int, stride: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel_size=3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    ]


class SpatialPriorModule(nn.Module):
    """Small conv stem giving maps at strides 4, 8, 16, 32, each projected to the ViT width.

    Returns ``c1`` as a (B, D, H/4, W/4) map and ``c2..c4`` as token sequences (B, H_l*W_l, D).
    """

    def __init__(self, inplanes: int, embed_dim: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            *_conv_bn_relu(3, inplanes, 2),
            *_conv_bn_relu(inplanes, inplanes, 1),
            *_conv_bn_relu(inplanes, inplanes, 1),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        self.conv2 = nn.Sequential(*_conv_bn_relu(inplanes, 2 * inplanes, 2))
        self.conv3 = nn.Sequential(*_conv_bn_relu(2 * inplanes, 4 * inplanes, 2))
        self.conv4 = nn.Sequential(*_conv_bn_relu(4 * inplanes, 4 * inplanes, 2))
        self.fc1 = nn.Conv2d(inplanes, embed_dim, kernel_size=1)
        self.fc2 = nn.Conv2d(2 * inplanes, embed_dim, kernel_size=1)
        self.fc3 = nn.Conv2d(4 * inplanes, embed_dim, kernel_size=1)
        self.fc4 = nn.Conv2d(4 * inplanes, embed_dim, kernel_size=1)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        f1 = self.stem(images)
        f2 = self.conv2(f1)
        f3 = self.conv3(f2)
        f4 = self.conv4(f3)
        c1 = self.fc1(f1)
        c2, c3, c4 = (
            fc(f).flatten(2).transpose(1, 2) for fc, f in ((self.fc2, f2), (self.fc3, f3), (self.fc4, f4))
        )
        return c1, c2, c3, c4
