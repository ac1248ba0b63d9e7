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

__all__ = [
    "to_compressed_rle",
    "video_segmentations_to_rle",
    "decode_rle",
    "rle_area",
    "rle_bbox",
    "invalid_compressed_rles",
]


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


_MAX_CHARS_PER_COUNT = 13  # 13 x 5 bits: more would overflow the 64-bit run length


_CHUNK_CHARS = 1 << 20  # strings decoded together: bounds the temporary arrays (~100 MB)


def invalid_compressed_rles(counts: Sequence[str | bytes], pixels: Sequence[int]) -> np.ndarray:
    """Indices of the compressed COCO RLE ``counts`` strings that are not a mask of ``pixels[i]``
    pixels (see :func:`_invalid_in_chunk`); decoded in chunks of about a million characters."""
    found, begin, size = [], 0, 0
    for i, c in enumerate(counts):
        size += len(c)
        if size >= _CHUNK_CHARS or i == len(counts) - 1:
            found.append(begin + _invalid_in_chunk(counts[begin : i + 1], pixels[begin : i + 1]))
            begin, size = i + 1, 0
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _invalid_in_chunk(counts: Sequence[str | bytes], pixels: Sequence[int]) -> np.ndarray:
    """Indices of the compressed COCO RLE ``counts`` strings that are not a mask of ``pixels[i]``
    pixels: a character outside the alphabet, a run length cut off at the end of the string, a
    negative run, or run lengths that do not add up to ``pixels[i]`` (= h x w).

    pycocotools decodes such strings without complaint (into a meaningless mask for the metric), so
    they are refused up front. Every string is decoded at once with array operations.
    """
    n = len(counts)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    raw = [c.encode("ascii", "replace") if isinstance(c, str) else bytes(c) for c in counts]
    lengths = np.fromiter(map(len, raw), dtype=np.int64, count=n)
    bad = np.zeros(n, dtype=bool)
    code = np.frombuffer(b"".join(raw), dtype=np.uint8).astype(np.int64) - 48
    owner = np.repeat(np.arange(n), lengths)
    bad[owner[(code < 0) | (code > 63)]] = True
    code &= 63
    last_of_string = np.zeros(len(code), dtype=bool)
    last_of_string[np.cumsum(lengths)[lengths > 0] - 1] = True
    continues = (code & 0x20) != 0
    bad[owner[continues & last_of_string]] = True  # the string ends inside a run length
    ends = ~continues | last_of_string
    starts = np.flatnonzero(np.r_[True, ends[:-1]])
    value_of_char = np.cumsum(np.r_[0, ends[:-1].astype(np.int64)])
    shift = np.arange(len(code)) - starts[value_of_char]
    bad[owner[shift >= _MAX_CHARS_PER_COUNT]] = True
    shift = np.minimum(shift, _MAX_CHARS_PER_COUNT - 1)
    x = np.add.reduceat((code & 0x1F) << (5 * shift), starts) if len(code) else np.zeros(0, np.int64)
    end_idx = np.flatnonzero(ends)
    negative = (code[end_idx] & 0x10) != 0  # sign bit of the last 5-bit group
    x[negative] -= np.left_shift(1, 5 * (shift[end_idx][negative] + 1))
    # run j > 2 is stored as the difference to run j - 2: runs are same-parity prefix sums from run 1
    v_owner = owner[end_idx]
    first = np.searchsorted(v_owner, np.arange(n))
    j = np.arange(len(x)) - first[v_owner]
    runs = x.copy()  # run 0 as stored; the others: prefix sums over the same parity, per string
    owner_first = first[v_owner]
    for parity in (0, 1):
        z = np.where((j % 2 == parity) & (j > 0), x, 0)
        c = np.cumsum(z)
        summed = c - (c[owner_first] - z[owner_first])
        runs = np.where((j % 2 == parity) & (j > 0), summed, runs)
    bad[v_owner[runs < 0]] = True
    totals = np.bincount(v_owner, weights=runs, minlength=n)  # exact: totals stay far below 2**53
    bad |= totals != np.asarray(pixels, dtype=np.float64)
    return np.flatnonzero(bad)
