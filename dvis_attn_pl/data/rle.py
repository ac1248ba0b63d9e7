"""Segmentation entries of a YTVIS json -> compressed COCO RLE (``counts`` as str), and back to masks.

A YTVIS segmentation entry is one of: ``None`` / empty (object absent in that frame), a
compressed RLE ``{"size": [h, w], "counts": "..."}``, an uncompressed RLE with a list of run
lengths, or a list of polygons ``[[x1, y1, x2, y2, ...], ...]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

__all__ = ["to_compressed_rle", "video_segmentations_to_rle", "decode_rle", "rle_area", "rle_bbox"]


def _str_counts(rle: dict) -> dict:
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def to_compressed_rle(segm: Any, height: int, width: int) -> dict | None:
    """One frame's entry as a compressed RLE dict with str counts; ``None`` when absent.

    Polygons are rasterised at ``height`` x ``width`` and merged, as the COCO API does.
    Presence follows the YTVIS evaluator: an entry is present when it is truthy.
    """
    if not segm:
        return None
    if isinstance(segm, Mapping):
        counts = segm["counts"]
        if isinstance(counts, (list, tuple)):
            h, w = segm["size"]
            return _str_counts(
                mask_utils.frPyObjects({"size": [int(h), int(w)], "counts": list(counts)}, h, w)
            )
        return _str_counts(dict(segm))
    if isinstance(segm, Sequence):
        polys = [list(map(float, p)) for p in segm if len(p) >= 6 and len(p) % 2 == 0]
        if not polys:
            return None
        return _str_counts(mask_utils.merge(mask_utils.frPyObjects(polys, height, width)))
    raise ValueError(f"unsupported segmentation entry of type {type(segm).__name__}")


def video_segmentations_to_rle(segms: Sequence[Any], height: int, width: int) -> list[dict | None]:
    """Every frame's entry of one annotation through :func:`to_compressed_rle`."""
    return [to_compressed_rle(s, height, width) for s in segms]


def _bytes_rle(rle: Mapping) -> dict:
    counts = rle["counts"]
    if isinstance(counts, str):
        counts = counts.encode("ascii")
    return {"size": list(rle["size"]), "counts": counts}


def decode_rle(rle: Mapping) -> np.ndarray:
    """A compressed RLE (str or bytes counts) -> bool (h, w) mask."""
    with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode([_bytes_rle(rle)])[:, :, 0].astype(bool)


def rle_area(rle: Mapping) -> int:
    """Number of foreground pixels of a compressed RLE."""
    return int(mask_utils.area(_bytes_rle(rle)))


def rle_bbox(rle: Mapping) -> list[float]:
    """``[x, y, w, h]`` of a compressed RLE (zeros when empty)."""
    return [float(v) for v in mask_utils.toBbox(_bytes_rle(rle))]
