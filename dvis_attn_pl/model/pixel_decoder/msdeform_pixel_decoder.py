"""Mask2Former's ``MSDeformAttnPixelDecoder`` (state-dict path ``sem_seg_head.pixel_decoder``).

The deformable-transformer encoder runs over the coarse backbone levels
(``DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES``, res3..res5 in the official configs), then an FPN
adds the finer levels down to ``COMMON_STRIDE`` and a 1x1 conv gives the mask features. Always runs
in the parameters' dtype (float32 normally) with autocast switched off, as the official decoder.

Keys: ``input_proj.{i}.{0,1}`` (1x1 conv + GroupNorm(32), coarsest level first),
``transformer.level_embed``, ``transformer.encoder.layers.{l}.{self_attn,norm1,linear1,linear2,norm2}``,
``adapter_{k}`` / ``layer_{k}`` (+ ``.norm``; k = 1 is the finest FPN level), ``mask_features``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.errors import UserError
from ..backbone.base import ShapeSpec
from ..conv_norm import Conv2d, get_norm
from ..position_encoding import PositionEmbeddingSine
from .ms_deform_attn import MSDeformAttn

# Fixed by the official code, not read from the config.
ENCODER_FFN_DIM = 1024
ENCODER_POINTS = 4
NUM_DECODER_LEVELS = 3  # multi-scale features handed to the transformer decoder


def reference_points(shapes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """Pixel centres of every level, normalised to [0, 1]: (1, sum H*W, 1, 2) as (x, y).

    With no padding mask all valid ratios are 1, so this equals the official encoder's points.
    """
    points = []
    for h, w in shapes:
        ys = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) / w
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        points.append(torch.stack((grid_x.reshape(-1), grid_y.reshape(-1)), -1))
    return torch.cat(points, 0)[None, :, None, :]


class MSDeformAttnEncoderLayer(nn.Module):
    """Deformable self-attention + residual + LayerNorm, then FFN (ReLU) + residual + LayerNorm."""

    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(
        self, src: torch.Tensor, pos: torch.Tensor, ref_points: torch.Tensor, shapes: list[tuple[int, int]]
    ) -> torch.Tensor:
        """``src``/``pos`` (N, Len, C) → (N, Len, C); queries carry ``pos``, values do not."""
        src = self.norm1(src + self.self_attn(src + pos, ref_points, src, shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class MSDeformAttnEncoder(nn.Module):
    """A stack of :class:`MSDeformAttnEncoderLayer` (``layers.{l}``)."""

    def __init__(self, layers: list[MSDeformAttnEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
        ref = reference_points(shapes, src.device)
        for layer in self.layers:
            src = layer(src, pos, ref, shapes)
        return src


class MSDeformAttnTransformerEncoderOnly(nn.Module):
    """Flattens the levels, adds sine positions + ``level_embed``, runs the encoder."""

    def __init__(self, d_model: int, n_heads: int, num_layers: int, d_ffn: int, n_levels: int, n_points: int):
        super().__init__()
        self.encoder = MSDeformAttnEncoder(
            [MSDeformAttnEncoderLayer(d_model, d_ffn, n_levels, n_heads, n_points) for _ in range(num_layers)]
        )
        self.level_embed = nn.Parameter(torch.empty(n_levels, d_model))
        nn.init.normal_(self.level_embed)

    def forward(self, srcs: list[torch.Tensor], pos_embeds: list[torch.Tensor]):
        """Levels (N, C, H_l, W_l) coarsest first → (memory (N, sum H_l*W_l, C), [(H_l, W_l)])."""
        shapes = [(s.shape[2], s.shape[3]) for s in srcs]
        src = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos = torch.cat(
            [
                p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1)
                for lvl, p in enumerate(pos_embeds)
            ],
            1,
        )
        return self.encoder(src, pos, shapes), shapes


class MSDeformAttnPixelDecoder(nn.Module):
    """Pixel decoder: ``forward_features(features) -> (mask_features, encoder_features, multi_scale)``."""

    def __init__(self, cfg, input_shape: dict[str, ShapeSpec]) -> None:
        super().__init__()
        head = cfg.MODEL.SEM_SEG_HEAD
        conv_dim, mask_dim, norm = head.CONVS_DIM, head.MASK_DIM, head.NORM
        missing = [f for f in head.IN_FEATURES if f not in input_shape]
        if missing:
            raise UserError(f"MODEL.SEM_SEG_HEAD.IN_FEATURES {missing} are not produced by the backbone")
        shapes = sorted(
            ((k, v) for k, v in input_shape.items() if k in head.IN_FEATURES), key=lambda kv: kv[1].stride
        )
        deform_in = list(head.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES)
        outside = [f for f in deform_in if f not in head.IN_FEATURES or f not in input_shape]
        if outside or not deform_in:
            raise UserError(
                f"MODEL.SEM_SEG_HEAD.DEFORMABLE_TRANSFORMER_ENCODER_IN_FEATURES {deform_in} must be a non-empty "
                f"subset of IN_FEATURES {list(head.IN_FEATURES)}"
            )
        if conv_dim % 32:
            raise UserError(
                f"MODEL.SEM_SEG_HEAD.CONVS_DIM {conv_dim} must be a multiple of 32 (GroupNorm(32))"
            )

        self.in_features = [k for k, _ in shapes]  # finest first
        feature_channels = [v.channels for _, v in shapes]
        deform_shapes = [(k, v) for k, v in shapes if k in deform_in]
        self.transformer_in_features = [k for k, _ in deform_shapes]  # finest first
        self.transformer_num_feature_levels = len(deform_shapes)
        self.common_stride = head.COMMON_STRIDE
        self.conv_dim = conv_dim
        self.mask_dim = mask_dim

        # One projection per encoder level, coarsest first (res5, res4, res3).
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(v.channels, conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for _, v in reversed(deform_shapes)
        )
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)
        self.transformer = MSDeformAttnTransformerEncoderOnly(
            d_model=conv_dim,
            n_heads=cfg.MODEL.MASK_FORMER.NHEADS,
            num_layers=head.TRANSFORMER_ENC_LAYERS,
            d_ffn=ENCODER_FFN_DIM,
            n_levels=self.transformer_num_feature_levels,
            n_points=ENCODER_POINTS,
        )
        self.pe_layer = PositionEmbeddingSine(conv_dim // 2, normalize=True)
        self.mask_features = Conv2d(conv_dim, mask_dim, kernel_size=1)

        # Extra FPN levels below the finest encoder level, down to the common stride.
        min_stride = min(v.stride for _, v in deform_shapes)
        self.num_fpn_levels = int(math.log2(min_stride) - math.log2(self.common_stride))
        if self.num_fpn_levels < 0 or self.num_fpn_levels > len(self.in_features):
            raise UserError(
                f"MODEL.SEM_SEG_HEAD.COMMON_STRIDE {self.common_stride} does not fit the feature strides "
                f"{[v.stride for _, v in shapes]}"
            )
        use_bias = norm == ""
        lateral, output = [], []
        for idx, in_ch in enumerate(feature_channels[: self.num_fpn_levels]):
            adapter = Conv2d(in_ch, conv_dim, kernel_size=1, bias=use_bias, norm=get_norm(norm, conv_dim))
            layer = Conv2d(
                conv_dim,
                conv_dim,
                kernel_size=3,
                padding=1,
                bias=use_bias,
                norm=get_norm(norm, conv_dim),
                activation=F.relu,
            )
            self.add_module(f"adapter_{idx + 1}", adapter)
            self.add_module(f"layer_{idx + 1}", layer)
            lateral.append(adapter)
            output.append(layer)
        # Top-down order (coarse to fine); plain lists so the modules are not registered twice.
        self._fpn = list(zip(self.in_features[: self.num_fpn_levels], lateral, output))[::-1]

    def forward_features(
        self, features: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """Backbone maps → (mask_features (N, MASK_DIM, H/cs, W/cs), encoder output at the coarsest
        level (N, C, H/32, W/32), multi-scale features [stride 32, 16, 8] each (N, C, ., .))."""
        first = features[self.transformer_in_features[-1]]
        dtype = self.mask_features.weight.dtype
        with torch.autocast(device_type=first.device.type, enabled=False):
            srcs, pos = [], []
            for idx, name in enumerate(reversed(self.transformer_in_features)):
                x = features[name].to(dtype)
                srcs.append(self.input_proj[idx](x))
                pos.append(self.pe_layer(x).to(dtype))
            memory, shapes = self.transformer(srcs, pos)
            batch = memory.shape[0]
            levels = memory.split([h * w for h, w in shapes], dim=1)
            outs = [z.transpose(1, 2).reshape(batch, -1, h, w) for z, (h, w) in zip(levels, shapes)]
            for name, adapter, layer in self._fpn:
                lateral = adapter(features[name].to(dtype))
                top = F.interpolate(outs[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
                outs.append(layer(lateral + top))
            return self.mask_features(outs[-1]), outs[0], outs[:NUM_DECODER_LEVELS]

    def forward(self, features: dict[str, torch.Tensor]):
        """Same as :meth:`forward_features`."""
        return self.forward_features(features)
