"""COCO run-length masks handled in bulk with numpy: decoding, areas and exact intersections.

Masks are never expanded to pixels. Many compressed RLE strings are decoded at once into run
lengths; every mask is laid on one global line (mask ``s`` covers ``[base[s], base[s] + h*w)``
in column-major pixel order), so its runs of ones become sorted ``[start, end)`` intervals of
that line. The pixels two masks share are then counted from the interval end points with one
``searchsorted``: all counts are exact integers.

The string format is pycocotools' (``maskApi.c``): each number is 5-bit groups, least
significant first, a 0x20 bit on every group but the last, the last group's 0x10 bit extending
the sign, all offset by 48 ('0'); from the fourth number on, each number is the difference to the
run two places back; run lengths are unsigned 32-bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_MAX_GROUPS = 6  # 30 bits: more never occurs for masks below 2**29 pixels (pycocotools' own limit)


class RLEFormatError(ValueError):
    """A compressed RLE string that cannot be decoded; ``index`` is its position in the input."""

    def __init__(self, index: int, problem: str) -> None:
        super().__init__(problem)
        self.index = index
        self.problem = problem


@dataclass
class RunTable:
    """The runs of ones of ``S`` masks laid on one global line.

    ``first[s]:first[s + 1]`` are mask ``s``'s runs in ``start``/``end`` (non-empty, sorted);
    ``base[s]`` is the global position of its pixel 0; ``area[s]`` its number of ones;
    ``before[i]`` the ones of all runs before run ``i`` (length ``N + 1``).
    """

    first: np.ndarray  # (S + 1,) int64
    start: np.ndarray  # (N,) int64
    end: np.ndarray  # (N,) int64
    base: np.ndarray  # (S,) int64
    area: np.ndarray  # (S,) int64
    before: np.ndarray  # (N + 1,) int64


def _joined_bytes(strings: Sequence[str | bytes]) -> bytes:
    try:
        return "".join(strings).encode("ascii")
    except TypeError:  # bytes among the strings (pycocotools' own output)
        pass
    except UnicodeEncodeError as exc:
        raise RLEFormatError(_owner(strings, exc.start), "RLE counts hold a character outside '0'..'o'") from None
    parts = []
    for i, s in enumerate(strings):
        if isinstance(s, str):
            try:
                s = s.encode("ascii")
            except UnicodeEncodeError:
                raise RLEFormatError(i, "RLE counts hold a character outside '0'..'o'") from None
        parts.append(s)
    return b"".join(parts)


def _owner(strings: Sequence[str | bytes], char_index: int) -> int:
    """Which string holds character ``char_index`` of the joined input."""
    ends = np.cumsum([len(s) for s in strings])
    return int(np.searchsorted(ends, char_index, side="right"))


def decode_counts(strings: Sequence[str | bytes], sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of compressed RLE strings, as pycocotools decodes them.

    Returns ``counts`` (int64, all strings' runs concatenated, zeros first in each) and
    ``offsets`` (``S + 1``): string ``s`` has ``counts[offsets[s]:offsets[s + 1]]``. ``sizes``
    (``S``,) are the pixel counts ``h * w``; a string whose runs do not add up to its size, or
    that is not valid RLE text, raises :class:`RLEFormatError` naming its index.
    """
    n_str = len(strings)
    sizes = np.asarray(sizes, dtype=np.int64)
    text = np.frombuffer(_joined_bytes(strings), dtype=np.uint8)
    char_end = np.cumsum(np.fromiter(map(len, strings), dtype=np.int64, count=n_str))
    if len(text) and (text.min() < 48 or text.max() > 48 + 63):
        bad = int(np.flatnonzero((text < 48) | (text > 111))[0])
        raise RLEFormatError(int(np.searchsorted(char_end, bad, side="right")), "RLE counts hold a character outside '0'..'o'")
    groups = text - np.uint8(48)
    last = np.flatnonzero((groups & 0x20) == 0)  # the final group of every number
    n_num = len(last)
    num_first = np.empty(n_num, dtype=np.int64)
    num_first[:1] = 0
    num_first[1:] = last[:-1] + 1
    width = last - num_first + 1
    # numbers per string; a string must end on a number's final group
    offsets = np.zeros(n_str + 1, dtype=np.int64)
    offsets[1:] = np.searchsorted(last, char_end, side="left")
    ends_ok = np.ones(n_str, dtype=bool)
    nonempty = np.flatnonzero(np.diff(np.r_[0, char_end]) > 0)
    ends_ok[nonempty] = (groups[char_end[nonempty] - 1] & 0x20) == 0
    if not ends_ok.all():
        raise RLEFormatError(int(np.flatnonzero(~ends_ok)[0]), "RLE counts end inside a number")
    if n_num and width.max() > _MAX_GROUPS:
        bad_num = int(np.flatnonzero(width > _MAX_GROUPS)[0])
        raise RLEFormatError(int(np.searchsorted(offsets, bad_num, side="right")) - 1, "RLE counts hold a run too long to decode")
    shift = 5 * (np.arange(len(groups), dtype=np.int64) - np.repeat(num_first, width))
    value = np.add.reduceat((groups & 0x1F).astype(np.int64) << shift, num_first) if n_num else np.zeros(0, np.int64)
    negative = (groups[last] & 0x10) != 0
    value[negative] -= np.left_shift(1, 5 * width[negative])
    # position of each number in its string; from the fourth on it adds the run two places back,
    # so odd positions form one running sum and even positions from 2 on another
    string_start = np.repeat(offsets[:-1], np.diff(offsets))
    pos = np.arange(n_num, dtype=np.int64) - string_start
    odd = (pos & 1) == 1
    counts = value
    for chain in (odd, ~odd & (pos >= 2)):
        prefix = np.zeros(n_num + 1, dtype=np.int64)
        np.cumsum(np.where(chain, value, 0), out=prefix[1:])
        counts = np.where(chain, prefix[1:] - prefix[string_start], counts)
    counts &= 0xFFFFFFFF  # pycocotools keeps run lengths as uint32
    prefix = np.zeros(n_num + 1, dtype=np.int64)
    np.cumsum(counts, out=prefix[1:])
    run_sum = prefix[offsets[1:]] - prefix[offsets[:-1]]
    wrong = run_sum != sizes
    if wrong.any():
        i = int(np.flatnonzero(wrong)[0])
        raise RLEFormatError(i, f"RLE runs add up to {int(run_sum[i])} pixels, not the mask's {int(sizes[i])}")
    return counts, offsets


def run_table(counts: np.ndarray, offsets: np.ndarray, sizes: np.ndarray) -> RunTable:
    """The runs of ones of decoded masks (``decode_counts``' output and its ``sizes``) on one line."""
    sizes = np.asarray(sizes, dtype=np.int64)
    pos = np.arange(len(counts), dtype=np.int64) - np.repeat(offsets[:-1], np.diff(offsets))
    keep = ((pos & 1) == 1) & (counts > 0)
    end = np.cumsum(counts)[keep]  # runs tile the line, so the running sum is the global position
    start = end - counts[keep]
    first = np.searchsorted(np.flatnonzero(keep), offsets, side="left").astype(np.int64)
    before = np.zeros(len(end) + 1, dtype=np.int64)
    np.cumsum(end - start, out=before[1:])
    base = np.cumsum(sizes) - sizes
    return RunTable(first, start, end, base, before[first[1:]] - before[first[:-1]], before)


def _ones_before(table: RunTable, x: np.ndarray) -> np.ndarray:
    """Number of ones of ``table`` on the global line strictly before each position ``x``."""
    i = np.searchsorted(table.start, x, side="right")  # runs starting at or before x
    end_prev = np.where(i > 0, table.end[np.maximum(i - 1, 0)], 0)
    return table.before[i] - np.maximum(end_prev - x, 0)


def intersections(a: RunTable, ia: np.ndarray, b: RunTable, ib: np.ndarray) -> np.ndarray:
    """``|a[ia[p]] & b[ib[p]]|`` for every pair ``p`` of masks of equal size (int64, exact)."""
    ia, ib = np.asarray(ia, dtype=np.int64), np.asarray(ib, dtype=np.int64)
    out = np.zeros(len(ia), dtype=np.int64)
    if not len(ia):
        return out
    # only pairs whose spans of ones overlap can share a pixel
    shift = b.base[ib] - a.base[ia]
    has = (a.area[ia] > 0) & (b.area[ib] > 0)
    lo_a = np.where(has, a.start[np.minimum(a.first[ia], len(a.start) - 1)], 0) + shift
    hi_a = np.where(has, a.end[np.maximum(a.first[ia + 1] - 1, 0)], 0) + shift
    lo_b = np.where(has, b.start[np.minimum(b.first[ib], len(b.start) - 1)], 0)
    hi_b = np.where(has, b.end[np.maximum(b.first[ib + 1] - 1, 0)], 0)
    live = np.flatnonzero(has & (lo_a < hi_b) & (lo_b < hi_a))
    if not len(live):
        return out
    n_runs = a.first[ia[live] + 1] - a.first[ia[live]]
    run = np.arange(int(n_runs.sum()), dtype=np.int64) + np.repeat(a.first[ia[live]] - np.cumsum(n_runs) + n_runs, n_runs)
    moved = np.repeat(shift[live], n_runs)
    shared = _ones_before(b, a.end[run] + moved) - _ones_before(b, a.start[run] + moved)
    out[live] = np.add.reduceat(shared, np.cumsum(n_runs) - n_runs)
    return out
