"""``build_model(cfg)``: the DVIS-DAQ meta-architecture named by ``MODEL.META_ARCHITECTURE``."""

from __future__ import annotations

from torch import nn

from ..utils.errors import UserError
from .capture import name_capture_sites

META_ARCHITECTURES = ("DVIS_DAQ_online", "DVIS_DAQ_offline")


def build_model(cfg) -> nn.Module:
    """Build the model in eval mode on the CPU, with every capture site named by its official path."""
    name = cfg.MODEL.META_ARCHITECTURE
    if name == "DVIS_DAQ_online":
        from .meta_arch import DVISDAQOnline as cls
    elif name == "DVIS_DAQ_offline":
        from .meta_arch_offline import DVISDAQOffline as cls
    else:
        raise UserError(
            f"MODEL.META_ARCHITECTURE {name!r} is not supported; use one of {', '.join(META_ARCHITECTURES)}"
        )
    model = cls(cfg)
    name_capture_sites(model)
    return model.eval()
