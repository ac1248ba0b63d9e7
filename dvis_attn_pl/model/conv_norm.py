"""Convolution + normalisation pieces in detectron2's layout (so state-dict keys match).

* :class:`FrozenBatchNorm2d`: batch norm with fixed statistics, four buffers
  (``weight``, ``bias``, ``running_mean``, ``running_var``), ``eps`` 1e-5.
* :func:`get_norm`: a norm layer from detectron2's short names ("FrozenBN", "BN", "GN", ...).
* :class:`Conv2d`: ``nn.Conv2d`` carrying an optional ``norm`` child and ``activation`` callable,
  which gives the ``<conv>.norm.*`` key names used by ResNet and the pixel decoder's FPN.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class FrozenBatchNorm2d(nn.Module):
    """Batch norm whose statistics and affine terms are constant buffers (detectron2's form)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / sqrt(var + eps) * weight + bias`` per channel of (N, C, H, W)."""
        if x.requires_grad:
            # Fold into one scale/shift so no gradient flows to the frozen buffers.
            scale = self.weight * (self.running_var + self.eps).rsqrt()
            shift = self.bias - self.running_mean * scale
            return x * scale.view(1, -1, 1, 1).to(x.dtype) + shift.view(1, -1, 1, 1).to(x.dtype)
        # Inference: the single fused op detectron2 also uses.
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, self.bias, training=False, eps=self.eps
        )

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def _group_norm_32(channels: int) -> nn.Module:
    return nn.GroupNorm(32, channels)


# Short names as detectron2 spells them. Synchronised variants only matter in training; at
# inference they are plain batch norms with the same state-dict keys.
_NORMS: dict[str, Callable[[int], nn.Module]] = {
    "FrozenBN": FrozenBatchNorm2d,
    "BN": nn.BatchNorm2d,
    "SyncBN": nn.BatchNorm2d,
    "nnSyncBN": nn.BatchNorm2d,
    "naiveSyncBN": nn.BatchNorm2d,
    "GN": _group_norm_32,
}


NORM_NAMES: tuple[str, ...] = (*_NORMS, "")


def get_norm(norm: str | Callable[[int], nn.Module] | None, channels: int) -> nn.Module | None:
    """The norm layer named ``norm`` for ``channels`` channels; None for ``None`` or ``""``."""
    if norm is None or norm == "":
        return None
    if callable(norm):
        return norm(channels)
    try:
        factory = _NORMS[norm]
    except KeyError:
        raise ValueError(f"unknown norm {norm!r}; supported: {', '.join(_NORMS)} or ''") from None
    return factory(channels)


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` followed by an optional ``norm`` module and ``activation`` function."""

    def __init__(
        self,
        *args,
        norm: nn.Module | None = None,
        activation: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x
