"""The official test-time preprocessing, re-implemented without detectron2.

Per frame (what ``YTVISDatasetMapper(is_train=False)`` does):

1. decode the file as RGB (EXIF orientation applied), flip to BGR when ``INPUT.FORMAT`` is BGR;
2. shortest-edge resize: the short side goes to ``INPUT.MIN_SIZE_TEST`` unless the long side would
   then exceed ``INPUT.MAX_SIZE_TEST``, in which case both are scaled down so it equals it; the
   sizes are rounded half-up (``int(x + 0.5)``), the image is resampled by PIL bilinear on uint8
   (detectron2's ``ResizeTransform`` for uint8 input); ``MIN_SIZE_TEST == 0`` means no resize;
3. HWC -> CHW uint8 tensor.

Inside the model: :func:`normalize_and_pad` ((x - mean) / std in float32, then zero padding of
height and width up to a multiple of ``size_divisibility``, as ``ImageList.from_tensors`` does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

__all__ = [
    "shortest_edge_output_shape",
    "padded_size",
    "ShortestEdgeResize",
    "resize_uint8",
    "normalize_and_pad",
]

SUPPORTED_FORMATS = ("RGB", "BGR")


def shortest_edge_output_shape(height: int, width: int, short_edge: int, max_size: int) -> tuple[int, int]:
    """``(new_h, new_w)`` of detectron2's ``ResizeShortestEdge`` for one chosen short-edge length."""
    scale = short_edge * 1.0 / min(height, width)
    if height < width:
        new_h, new_w = float(short_edge), scale * width
    else:
        new_h, new_w = scale * height, float(short_edge)
    longest = max(new_h, new_w)
    if longest > max_size:
        shrink = max_size * 1.0 / longest
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def padded_size(height: int, width: int, size_divisibility: int) -> tuple[int, int]:
    """Height and width rounded up to a multiple of ``size_divisibility`` (unchanged when it is <= 1)."""
    if size_divisibility > 1:
        s = int(size_divisibility)
        return (height + s - 1) // s * s, (width + s - 1) // s * s
    return height, width


def resize_uint8(image: np.ndarray, new_h: int, new_w: int) -> np.ndarray:
    """PIL bilinear resize of an (h, w, 3) uint8 array (a copy when the size is unchanged)."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"resize_uint8 expects an (h, w, c) uint8 array, got {image.dtype} {image.shape}")
    if image.shape[:2] == (new_h, new_w):
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))


def _cfg_get(cfg: Any, dotted: str, default: Any) -> Any:
    node = cfg
    for part in dotted.split("."):
        if node is None:
            return default
        if isinstance(node, dict):
            node = node.get(part)
        else:
            node = getattr(node, part, None)
    return default if node is None else node


@dataclass(frozen=True)
class ShortestEdgeResize:
    """The test-time resize of one video's frames: RGB uint8 (h, w, 3) array -> (3, h', w') uint8 tensor."""

    min_size: int = 480
    max_size: int = 1333
    image_format: str = "RGB"

    def __post_init__(self) -> None:
        if self.image_format not in SUPPORTED_FORMATS:
            raise ValueError(
                f"INPUT.FORMAT {self.image_format!r} is not supported; use one of {SUPPORTED_FORMATS}"
            )
        if self.min_size < 0 or self.max_size <= 0:
            raise ValueError(
                f"INPUT.MIN_SIZE_TEST/MAX_SIZE_TEST must be >= 0 / > 0, got {self.min_size}/{self.max_size}"
            )

    @classmethod
    def from_cfg(cls, cfg: Any) -> ShortestEdgeResize:
        """From ``INPUT.MIN_SIZE_TEST``, ``INPUT.MAX_SIZE_TEST``, ``INPUT.FORMAT`` (defaults 480, 1333, RGB)."""
        min_size = _cfg_get(cfg, "INPUT.MIN_SIZE_TEST", 480)
        if isinstance(min_size, (list, tuple)):
            if len(set(min_size)) != 1:
                raise ValueError(
                    f"INPUT.MIN_SIZE_TEST {list(min_size)}: several sizes would be drawn at random per frame; give one"
                )
            min_size = min_size[0]
        return cls(
            int(min_size),
            int(_cfg_get(cfg, "INPUT.MAX_SIZE_TEST", 1333)),
            str(_cfg_get(cfg, "INPUT.FORMAT", "RGB")),
        )

    def output_shape(self, height: int, width: int) -> tuple[int, int]:
        """The resized ``(h, w)`` of a ``height`` x ``width`` frame."""
        if self.min_size == 0:
            return height, width
        return shortest_edge_output_shape(height, width, self.min_size, self.max_size)

    def __call__(self, rgb: np.ndarray) -> torch.Tensor:
        if self.image_format == "BGR":
            rgb = rgb[:, :, ::-1]
        new_h, new_w = self.output_shape(rgb.shape[0], rgb.shape[1])
        out = resize_uint8(np.ascontiguousarray(rgb), new_h, new_w)
        return torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))


def normalize_and_pad(
    frames: torch.Tensor | Sequence[torch.Tensor],
    pixel_mean: Sequence[float] | torch.Tensor,
    pixel_std: Sequence[float] | torch.Tensor,
    size_divisibility: int,
) -> torch.Tensor:
    """uint8 frames (T, 3, h, w) (or a list of (3, h_i, w_i)) -> float32 (T, 3, Hp, Wp).

    ``(x - mean) / std`` in float32 on the frames' device, then each frame is placed top-left in a
    zero tensor whose height and width are the largest frame's, rounded up to a multiple of
    ``size_divisibility`` when it is > 1.
    """
    if isinstance(frames, torch.Tensor):
        if frames.dim() != 4:
            raise ValueError(
                f"normalize_and_pad expects (T, 3, h, w) frames, got shape {tuple(frames.shape)}"
            )
        items: Sequence[torch.Tensor] = frames
        same_size = True
    else:
        items = list(frames)
        if not items:
            raise ValueError("normalize_and_pad got no frames")
        same_size = len({tuple(f.shape) for f in items}) == 1
    first = items[0]
    device = first.device
    mean = torch.as_tensor(pixel_mean, dtype=torch.float32, device=device).view(-1, 1, 1)
    std = torch.as_tensor(pixel_std, dtype=torch.float32, device=device).view(-1, 1, 1)
    max_h = max(int(f.shape[-2]) for f in items)
    max_w = max(int(f.shape[-1]) for f in items)
    hp, wp = padded_size(max_h, max_w, size_divisibility)
    if same_size:
        stacked = frames if isinstance(frames, torch.Tensor) else torch.stack(list(items))
        normed = (stacked.to(torch.float32) - mean) / std
        if (hp, wp) == (max_h, max_w):
            return normed
        return torch.nn.functional.pad(normed, (0, wp - max_w, 0, hp - max_h), value=0.0)
    out = torch.zeros((len(items), int(first.shape[0]), hp, wp), dtype=torch.float32, device=device)
    for dst, src in zip(out, items):  # frames of different sizes: one copy each
        dst[:, : src.shape[-2], : src.shape[-1]] = (src.to(torch.float32) - mean) / std
    return out
