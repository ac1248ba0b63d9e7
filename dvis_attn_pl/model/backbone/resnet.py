"""detectron2's ResNet (depths 18/34/50/101/152) with its state-dict layout.

Keys: ``stem.conv1.weight`` + ``stem.conv1.norm.*``, then ``res{2..5}.{block}.conv{1,2[,3]}`` and
``res{s}.0.shortcut`` (each with ``.norm.*``). No conv has a bias. Built from ``MODEL.RESNETS.*``
under the registry name ``build_resnet_backbone``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...utils.errors import UserError
from ..conv_norm import NORM_NAMES, Conv2d, FrozenBatchNorm2d, get_norm
from .base import Backbone, ShapeSpec, register_backbone

__all__ = [
    "BasicBlock",
    "BottleneckBlock",
    "BasicStem",
    "ResNet",
    "build_resnet_backbone",
    "FrozenBatchNorm2d",
]

BLOCKS_PER_STAGE: dict[int, tuple[int, int, int, int]] = {
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
    50: (3, 4, 6, 3),
    101: (3, 4, 23, 3),
    152: (3, 8, 36, 3),
}
STAGE_NAMES = ("res2", "res3", "res4", "res5")


def _conv(
    in_ch: int, out_ch: int, kernel: int, norm: str, stride: int = 1, dilation: int = 1, groups: int = 1
):
    """Bias-free conv with ``same``-style padding and a norm child."""
    return Conv2d(
        in_ch,
        out_ch,
        kernel_size=kernel,
        stride=stride,
        padding=dilation * (kernel // 2),
        dilation=dilation,
        groups=groups,
        bias=False,
        norm=get_norm(norm, out_ch),
    )


class _Block(nn.Module):
    """Residual block base: ``stride`` and ``out_channels`` describe its output."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.shortcut = (
            _conv(in_channels, out_channels, 1, norm, stride) if in_channels != out_channels else None
        )

    def _residual(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(out + identity)


class BasicBlock(_Block):
    """Two 3x3 convs (ResNet-18/34); the stride sits in the first."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1, norm: str = "BN") -> None:
        super().__init__(in_channels, out_channels, stride, norm)
        self.conv1 = _conv(in_channels, out_channels, 3, norm, stride)
        self.conv2 = _conv(out_channels, out_channels, 3, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._residual(x, self.conv2(F.relu(self.conv1(x))))


class BottleneckBlock(_Block):
    """1x1 → 3x3 (grouped, dilated) → 1x1 (ResNet-50/101/152)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        *,
        bottleneck_channels: int,
        stride: int = 1,
        num_groups: int = 1,
        norm: str = "BN",
        stride_in_1x1: bool = False,
        dilation: int = 1,
    ) -> None:
        super().__init__(in_channels, out_channels, stride, norm)
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv(in_channels, bottleneck_channels, 1, norm, stride_1x1)
        self.conv2 = _conv(
            bottleneck_channels,
            bottleneck_channels,
            3,
            norm,
            stride_3x3,
            dilation=dilation,
            groups=num_groups,
        )
        self.conv3 = _conv(bottleneck_channels, out_channels, 1, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.conv1(x))
        out = F.relu(self.conv2(out))
        return self._residual(x, self.conv3(out))


class BasicStem(nn.Module):
    """7x7/2 conv + norm + ReLU, then 3x3/2 max-pool: output stride 4."""

    stride = 4

    def __init__(self, in_channels: int = 3, out_channels: int = 64, norm: str = "BN") -> None:
        super().__init__()
        self.out_channels = out_channels
        self.conv1 = Conv2d(
            in_channels,
            out_channels,
            kernel_size=7,
            stride=2,
            padding=3,
            bias=False,
            norm=get_norm(norm, out_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(F.relu(self.conv1(x)), kernel_size=3, stride=2, padding=1)


class ResNet(Backbone):
    """Stem plus stages ``res2``.. up to the deepest requested output; returns the requested maps."""

    def __init__(self, stem: BasicStem, stages: list[list[_Block]], out_features: list[str]) -> None:
        super().__init__()
        unknown = [f for f in out_features if f not in STAGE_NAMES]
        if unknown or not out_features:
            raise UserError(
                f"MODEL.RESNETS.OUT_FEATURES {list(out_features)} must be a non-empty subset of {list(STAGE_NAMES)}"
            )
        self.stem = stem
        self._out_features = list(out_features)
        self._shapes: dict[str, ShapeSpec] = {}
        num_stages = max(STAGE_NAMES.index(f) for f in out_features) + 1
        self.stage_names = STAGE_NAMES[:num_stages]
        stride = stem.stride
        for name, blocks in zip(self.stage_names, stages):
            self.add_module(name, nn.Sequential(*blocks))
            for block in blocks:
                stride *= block.stride
            self._shapes[name] = ShapeSpec(channels=blocks[-1].out_channels, stride=stride)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``x`` (B, C, H, W) → ``{name: feature}`` for every name in OUT_FEATURES."""
        if x.dim() != 4:
            raise ValueError(f"ResNet takes (N, C, H, W) images, got shape {tuple(x.shape)}")
        outputs = {}
        x = self.stem(x)
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                outputs[name] = x
        return outputs

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {name: self._shapes[name] for name in self._out_features}


def _check_config(r, depth: int) -> None:
    if depth not in BLOCKS_PER_STAGE:
        raise UserError(
            f"MODEL.RESNETS.DEPTH {depth} is not supported; use one of {sorted(BLOCKS_PER_STAGE)}"
        )
    if r.NORM not in NORM_NAMES:
        raise UserError(f"MODEL.RESNETS.NORM {r.NORM!r} is not supported; use one of {list(NORM_NAMES)}")
    if any(r.DEFORM_ON_PER_STAGE):
        raise UserError(
            f"MODEL.RESNETS.DEFORM_ON_PER_STAGE {list(r.DEFORM_ON_PER_STAGE)}: deformable-conv ResNets are not supported"
        )
    if r.RES5_DILATION not in (1, 2):
        raise UserError(f"MODEL.RESNETS.RES5_DILATION must be 1 or 2, got {r.RES5_DILATION}")
    if depth in (18, 34):
        if r.RES2_OUT_CHANNELS != 64:
            raise UserError("MODEL.RESNETS.RES2_OUT_CHANNELS must be 64 for ResNet-18/34")
        if r.RES5_DILATION != 1:
            raise UserError("MODEL.RESNETS.RES5_DILATION must be 1 for ResNet-18/34")
        if r.NUM_GROUPS != 1:
            raise UserError("MODEL.RESNETS.NUM_GROUPS must be 1 for ResNet-18/34")


@register_backbone("build_resnet_backbone")
def build_resnet_backbone(cfg) -> ResNet:
    """The ResNet described by ``cfg.MODEL.RESNETS`` (input channels = ``len(MODEL.PIXEL_MEAN)``)."""
    r = cfg.MODEL.RESNETS
    depth = int(r.DEPTH)
    _check_config(r, depth)
    norm = r.NORM
    stem = BasicStem(len(cfg.MODEL.PIXEL_MEAN), r.STEM_OUT_CHANNELS, norm)

    in_ch, out_ch = r.STEM_OUT_CHANNELS, r.RES2_OUT_CHANNELS
    bottleneck = r.NUM_GROUPS * r.WIDTH_PER_GROUP
    stages: list[list[_Block]] = []
    for idx, num_blocks in enumerate(BLOCKS_PER_STAGE[depth]):
        dilation = r.RES5_DILATION if idx == 3 else 1
        first_stride = 1 if idx == 0 or dilation == 2 else 2
        blocks: list[_Block] = []
        for b in range(num_blocks):
            stride = first_stride if b == 0 else 1
            if depth in (18, 34):
                blocks.append(BasicBlock(in_ch, out_ch, stride=stride, norm=norm))
            else:
                blocks.append(
                    BottleneckBlock(
                        in_ch,
                        out_ch,
                        bottleneck_channels=bottleneck,
                        stride=stride,
                        num_groups=r.NUM_GROUPS,
                        norm=norm,
                        stride_in_1x1=r.STRIDE_IN_1X1,
                        dilation=dilation,
                    )
                )
            in_ch = out_ch
        stages.append(blocks)
        out_ch *= 2
        bottleneck *= 2
    return ResNet(stem, stages, list(r.OUT_FEATURES))
