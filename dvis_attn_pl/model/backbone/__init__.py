"""Backbones: ``build_backbone(cfg)`` picks one by ``MODEL.BACKBONE.NAME`` from :data:`BACKBONES`."""

from .base import BACKBONES, Backbone, ShapeSpec, build_backbone, register_backbone
from .resnet import ResNet, build_resnet_backbone

__all__ = [
    "BACKBONES",
    "Backbone",
    "ResNet",
    "ShapeSpec",
    "build_backbone",
    "build_resnet_backbone",
    "register_backbone",
]
