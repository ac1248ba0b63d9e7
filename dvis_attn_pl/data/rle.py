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
    "check_compressed_rles",
    "encode_run_lengths",
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


# pycocotools keeps run lengths as 32-bit unsigned integers, so a valid delta needs at most 35
# signed bits = 7 characters of 5 bits; longer ones are refused (and cannot overflow the sums below)
_MAX_CHARS_PER_COUNT = 7
_CHUNK_CHARS = 1 << 16  # strings decoded together: the temporary arrays stay in the CPU cache
_ALPHABET = bytes(range(48, 112))  # '0' .. 'o'
_CONTINUES = 80  # '0' + 0x20: from here on a character continues its run length
_GROUP = np.zeros(256, dtype=np.int64)  # the 5-bit group of each character
_GROUP[48:80] = np.arange(32) - np.where(np.arange(32) >= 16, 32, 0)  # a run's last group is signed
_GROUP[80:112] = np.arange(32)
_GROUP_LIMITS = 1 << (5 * np.arange(1, _MAX_CHARS_PER_COUNT) - 1)  # |value| from which k+1 groups are needed


def check_compressed_rles(
    counts: Sequence[str | bytes], pixels: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """``(invalid, areas)`` of compressed COCO RLE ``counts`` strings: per string, whether it is not
    a mask of ``pixels[i]`` pixels (see :func:`_check_chunk`) and its foreground pixel count (as
    pycocotools' ``area``; meaningless where invalid). Decoded in chunks of about 64k characters."""
    n = len(counts)
    invalid, areas = np.zeros(n, dtype=bool), np.zeros(n, dtype=np.int64)
    if not n:
        return invalid, areas
    lengths = np.fromiter(map(len, counts), dtype=np.int64, count=n)
    text = set(map(type, counts)) == {str}
    pixels = np.asarray(pixels, dtype=np.int64)
    reach = np.cumsum(lengths)  # a chunk ends with the string that reaches the next multiple of the size
    ends = np.unique(np.r_[np.searchsorted(reach, np.arange(_CHUNK_CHARS, reach[-1], _CHUNK_CHARS)) + 1, n])
    for begin, end in zip(np.r_[0, ends[:-1]].tolist(), ends.tolist()):
        invalid[begin:end], areas[begin:end] = _check_chunk(
            counts[begin:end], lengths[begin:end], pixels[begin:end], text
        )
    return invalid, areas


def encode_run_lengths(runs: np.ndarray, sizes: Sequence[int]) -> list[str]:
    """Compressed COCO RLE ``counts`` strings of uncompressed run lengths laid end to end (``sizes``:
    runs per mask), character for character as pycocotools encodes them, with array operations."""
    runs = np.asarray(runs, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    stop = np.cumsum(sizes)
    first = stop - sizes
    delta = runs.copy()
    delta[2:] -= runs[:-2]  # run j > 2 is stored as its difference to run j - 2 ...
    for j in range(3):  # ... and runs 0, 1, 2 of each mask as they are
        head = first[sizes > j] + j
        delta[head] = runs[head]
    chars = np.searchsorted(_GROUP_LIMITS, np.where(delta < 0, ~delta, delta), side="right") + 1
    start = np.cumsum(chars) - chars
    out = np.empty(int(chars.sum()), dtype=np.uint8)
    for k in range(int(chars.max(initial=0))):  # 5-bit groups, low first; 0x20 marks "more follow"
        sel = np.flatnonzero(chars > k) if k else slice(None)
        out[start[sel] + k] = 48 + ((delta[sel] >> (5 * k)) & 0x1F) + np.where(chars[sel] > k + 1, 0x20, 0)
    text = out.tobytes().decode("ascii")
    bounds = np.r_[0, np.cumsum(chars)]
    return [text[b:e] for b, e in zip(bounds[first].tolist(), bounds[stop].tolist())]


def invalid_compressed_rles(counts: Sequence[str | bytes], pixels: Sequence[int]) -> np.ndarray:
    """Indices of the compressed COCO RLE ``counts`` strings that are not a mask of ``pixels[i]`` pixels."""
    return np.flatnonzero(check_compressed_rles(counts, pixels)[0])


def _check_chunk(
    counts: Sequence[str | bytes], lengths: np.ndarray, pixels: np.ndarray, text: bool
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`check_compressed_rles` of a few strings (``lengths``: theirs; ``text``: all are
    ``str``), decoded together with array operations.

    A string is invalid when it has a character outside the alphabet, ends inside a run length,
    has a run length longer than 7 characters, is empty, or decodes to a negative run or to runs
    that do not add up to ``pixels[i]`` (= h x w). pycocotools decodes such strings into a
    meaningless mask without complaint, so they are refused up front.
    """
    n = len(counts)
    if text:  # one encoding: a non-ASCII character becomes one '?', so the lengths hold
        joined = "".join(counts).encode("ascii", "replace")
    else:
        joined = b"".join(c.encode("ascii", "replace") if isinstance(c, str) else bytes(c) for c in counts)
    code = np.frombuffer(joined, dtype=np.uint8)
    invalid = lengths == 0
    stop = np.cumsum(lengths)
    nonempty = np.flatnonzero(lengths)
    last_char = stop[nonempty] - 1
    unfinished = code[last_char] >= _CONTINUES
    foreign = joined.translate(None, _ALPHABET)
    if foreign or unfinished.any():  # mark the string, then parse on as if the character were valid
        code = code.copy()
        if foreign:
            out = np.flatnonzero((code < 48) | (code >= 112))
            invalid[np.searchsorted(stop, out, side="right")] = True
            code[out] = 48
        invalid[nonempty[unfinished]] = True
        code[last_char[unfinished]] -= 32  # every string now ends with a run length of its own
    last_group = np.flatnonzero(code < _CONTINUES)  # one per run length
    value = _GROUP[code[last_group]]
    per_string = np.diff(np.searchsorted(last_group, stop), prepend=0)
    first = np.cumsum(per_string) - per_string
    span = np.diff(last_group, prepend=-1)  # characters per run length
    multi = np.flatnonzero(span > 1)
    if len(multi):  # the groups before the last one, high to low (5 bits each)
        chars, ends = span[multi], last_group[multi]
        too_long = multi[chars > _MAX_CHARS_PER_COUNT]
        invalid[np.searchsorted(first, too_long, side="right") - 1] = True
        v = value[multi]
        for k in range(1, min(int(chars.max()), _MAX_CHARS_PER_COUNT)):
            sel = np.flatnonzero(chars > k)
            v[sel] = (v[sel] << 5) | _GROUP[code[ends[sel] - k]]
        value[multi] = v
    runs = _undo_deltas(value, first[per_string > 0], per_string[per_string > 0])
    has_runs = np.flatnonzero(per_string)
    f = first[has_runs]
    if (runs < 0).any():
        invalid[has_runs[np.searchsorted(f, np.flatnonzero(runs < 0), side="right") - 1]] = True
    totals, areas = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    if len(f):
        totals[has_runs] = np.add.reduceat(runs, f)
        runs[1::2] *= -1  # alternating sums: (background - foreground) runs, up to the sign of f
        alternating = np.add.reduceat(runs, f) * np.where(f % 2 == 1, -1, 1)
        areas[has_runs] = (totals[has_runs] - alternating) >> 1
    invalid |= totals != pixels
    return invalid, areas


def _undo_deltas(value: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Run lengths from the stored values of strings laid end to end (``first``/``count``: each
    string's values, all non-empty). Run j > 2 of a string is stored as its difference to run j - 2,
    so run j >= 1 is the sum of the stored values j' in 1..j of the same parity:
    ``(S + (-1)^g A) / 2`` with S the string's running sum from its value 1 and A the running sum of
    ``(-1)^g' value[g']`` (g = position in the whole array). Runs 0 are stored as they are."""
    last = first + count - 1
    plain = value.copy()
    plain[first] = 0
    signed = plain.copy()
    signed[1::2] *= -1
    for a in (plain, signed):  # running sums restarted at every string
        total = np.cumsum(a)
        a[first[1:]] = -(total[last[:-1]] - total[first[:-1]])
        np.cumsum(a, out=a)
    signed[1::2] *= -1
    plain += signed
    plain >>= 1
    plain[first] = value[first]
    return plain
