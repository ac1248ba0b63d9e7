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
    "decode_rles",
    "RLEMasks",
    "video_mask_iou",
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
    return {"size": [int(rle["size"][0]), int(rle["size"][1])], "counts": counts}


def decode_rle(rle: Mapping) -> np.ndarray:
    """A compressed RLE (str or bytes counts) -> bool (h, w) mask."""
    with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode([_bytes_rle(rle)])[:, :, 0].astype(bool)


def decode_rles(rles: Sequence[dict | None], height: int, width: int) -> np.ndarray:
    """Bool (T, H, W) masks from one compressed RLE per frame (``None`` = empty frame), one decode call."""
    out = np.zeros((len(rles), height, width), dtype=bool)
    where = [t for t, r in enumerate(rles) if r]
    if not where:
        return out
    batch = [_bytes_rle(rles[t]) for t in where]
    sizes = {tuple(r["size"]) for r in batch}
    if sizes != {(height, width)}:
        raise ValueError(f"RLE sizes {sorted(sizes)} differ from the video's ({height}, {width})")
    with warnings.catch_warnings():  # pycocotools trips a numpy DeprecationWarning
        warnings.simplefilter("ignore", DeprecationWarning)
        decoded = mask_utils.decode(batch)  # (H, W, n)
    out[where] = decoded.transpose(2, 0, 1).astype(bool)
    return out


class RLEMasks:
    """One instance's masks over a video, (T, H, W) bool, decoded from its per-frame RLEs on indexing.

    Indexing with an int, a slice or an index array decodes only those frames (one call), so a long
    high-resolution video never sits in memory whole; ``np.asarray`` decodes everything.
    """

    dtype = np.dtype(bool)

    def __init__(self, rles: Sequence[dict | None], height: int, width: int) -> None:
        self.rles = list(rles)
        self.shape = (len(self.rles), int(height), int(width))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return decode_rles([self.rles[int(index)]], *self.shape[1:])[0]
        frames = np.arange(self.shape[0])[index]
        return decode_rles([self.rles[t] for t in frames.tolist()], *self.shape[1:])

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)

    def present(self) -> np.ndarray:
        """(T,) bool: frames with at least one mask pixel (one area call, no decoding)."""
        out = np.zeros(self.shape[0], dtype=bool)
        where = [t for t, r in enumerate(self.rles) if r]
        if where:
            out[where] = mask_utils.area([_bytes_rle(self.rles[t]) for t in where]) > 0
        return out


def video_mask_iou(a: Sequence[RLEMasks], b: Sequence[RLEMasks], max_elements: int = 1 << 26) -> np.ndarray:
    """IoU over whole videos of every pair of instances, (Na, Nb): intersections and areas summed over
    all frames (0 when both are empty). Frames are decoded in chunks holding at most ``max_elements``
    mask pixels, each chunk reduced with one matrix product."""
    if not a or not b:
        return np.zeros((len(a), len(b)))
    t, h, w = a[0].shape
    if any(m.shape != (t, h, w) for m in (*a, *b)):
        raise ValueError("masks of different videos or sizes cannot be compared")
    inter = np.zeros((len(a), len(b)))
    area_a, area_b = np.zeros(len(a)), np.zeros(len(b))
    step = max(1, max_elements // max(1, (len(a) + len(b)) * h * w))
    for s in range(0, t, step):  # chunks of frames bound the memory
        ma = np.stack([m[s : s + step] for m in a]).reshape(len(a), -1).astype(np.float32)
        mb = np.stack([m[s : s + step] for m in b]).reshape(len(b), -1).astype(np.float32)
        inter += ma @ mb.T
        area_a += ma.sum(axis=1)
        area_b += mb.sum(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


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
