"""Backbone interface, ``ShapeSpec`` and the name → builder registry behind ``build_backbone``.

A backbone maps normalised images (B, 3, H, W) to a dict of feature maps (``"res2".."res5"``) and
describes them with :meth:`Backbone.output_shape`. Builders register under the official
``MODEL.BACKBONE.NAME`` value::

    @register_backbone("build_resnet_backbone")
    def build_resnet(cfg) -> Backbone: ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ...utils.errors import UserError


@dataclass(frozen=True)
class ShapeSpec:
    """Channels and stride (and optionally size) of one feature map, as detectron2's ``ShapeSpec``."""

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    stride: int | None = None


class Backbone(nn.Module):
    """Base class: ``forward(images) -> {name: (B, C, H/s, W/s)}`` plus :meth:`output_shape`."""

    def output_shape(self) -> dict[str, ShapeSpec]:
        """Channels and stride of every returned feature map."""
        raise NotImplementedError

    @property
    def size_divisibility(self) -> int:
        """Input sizes must be multiples of this (0: no constraint beyond the model's own padding)."""
        return 0


BackboneBuilder = Callable[..., nn.Module]

BACKBONES: dict[str, BackboneBuilder] = {}

# Builders that live in modules imported only when their name is asked for (heavy or optional).
_LAZY_MODULES: dict[str, str] = {
    "build_resnet_backbone": "dvis_attn_pl.model.backbone.resnet",
    "D2VitAdapterDinoV2": "dvis_attn_pl.model.backbone.vit_adapter",
}


def register_backbone(name: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    """Decorator: register ``builder(cfg) -> nn.Module`` under ``MODEL.BACKBONE.NAME == name``."""

    def decorate(builder: BackboneBuilder) -> BackboneBuilder:
        if name in BACKBONES and BACKBONES[name] is not builder:
            raise ValueError(f"backbone {name!r} is already registered")
        BACKBONES[name] = builder
        return builder

    return decorate


def build_backbone(cfg) -> nn.Module:
    """Build the backbone named by ``cfg.MODEL.BACKBONE.NAME`` (its state-dict prefix is ``backbone.``)."""
    name = cfg.MODEL.BACKBONE.NAME
    if name not in BACKBONES and name in _LAZY_MODULES:
        importlib.import_module(_LAZY_MODULES[name])
    if name not in BACKBONES:
        known = sorted(set(BACKBONES) | set(_LAZY_MODULES))
        raise UserError(f"MODEL.BACKBONE.NAME {name!r} is not supported; use one of {', '.join(known)}")
    return BACKBONES[name](cfg)
