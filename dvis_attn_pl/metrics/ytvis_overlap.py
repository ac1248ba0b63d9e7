"""Video IoU of the same-category (prediction, ground-truth track) pairs of each video.

The video IoU of a prediction d and a track g is ``sum_t |d_t & g_t| / sum_t |d_t | g_t|``; absent
frames count as empty. Both sums are integers, so the result is one float64 division of exact
integers, bit-identical to the official ``I / U`` (and 0 when ``U == 0``). Only pairs with IoU > 0
are returned: every IoU threshold is >= 0.5, so the others can never match.

Two routes give identical numbers:

* :func:`rle_overlaps` (result files, dataset items), for many videos at once: masks stay RLE.
  Per-frame pixel counts come from the file readers' decoding (or pycocotools' C ``area`` when
  the tracks come without them); per-frame IoUs from one C ``iou``
  call per video, and ``|d & g| = round(iou * (|d| + |g|) / (1 + iou))`` (exact: the error is
  < 1e-6 pixel). So that this single call scores only pairs of the same frame and category, each
  (category, frame) slot gets its own nominal RLE width: pycocotools decodes the runs whatever the
  declared size and scores a pair of different sizes -1 without merging its runs (checked by a test).
* :func:`mask_overlaps` (binary mask tensors of one video): per category, matrix products of the
  flattened masks on the masks' device, in column chunks small enough for exact float32 sums.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, compress, repeat
from operator import is_not
from typing import TYPE_CHECKING

import numpy as np
from pycocotools import mask as mask_utils

if TYPE_CHECKING:
    import torch

__all__ = ["BatchOverlaps", "TrackSet", "average_area", "rle_areas", "rle_overlaps", "mask_overlaps"]

_AREA_CHUNK = 255  # pycocotools' area() fails on longer lists under numpy >= 2
_PAIR_BUDGET = 1 << 20  # (prediction frames) x (GT frames) per pycocotools iou call
_MATMUL_CHUNK = 1 << 22  # columns per float32 product: sums stay below 2**24, hence exact


def average_area(frame_areas: np.ndarray) -> np.ndarray:
    """(N, T) pixel counts -> mean over the frames where a track is non-empty (0 when it never is)."""
    frame_areas = np.asarray(frame_areas, dtype=np.int64)
    counted = (frame_areas > 0).sum(axis=1)
    return np.divide(frame_areas.sum(axis=1), counted, out=np.zeros(len(frame_areas)), where=counted > 0)


def rle_areas(rles: Sequence[dict]) -> np.ndarray:
    """Pixel counts of compressed RLEs (C code; one call per 255 masks)."""
    if not rles:
        return np.zeros(0, dtype=np.int64)
    parts = [
        np.asarray(mask_utils.area(list(rles[i : i + _AREA_CHUNK]))) for i in range(0, len(rles), _AREA_CHUNK)
    ]
    return np.concatenate(parts).astype(np.int64)


@dataclass
class TrackSet:
    """Tracks of several videos, grouped by video: per track its video position, category and
    per-frame compressed RLE dicts (``None`` = absent); all tracks of a video have its length.
    ``areas``, when known (the file readers decode every RLE once), holds the pixel counts of the
    present frames, track by track; otherwise pycocotools counts them."""

    video: np.ndarray  # (N,) int64 position of the track's video in ``sizes``
    cats: np.ndarray  # (N,) int64
    segs: Sequence[Sequence]  # N lists of frames
    areas: np.ndarray | None = None  # (present frames,) int64


@dataclass
class _Frames:
    """The present frames of a TrackSet, flattened: track, frame index, RLE and pixel count."""

    track: np.ndarray
    frame: np.ndarray
    rles: list
    areas: np.ndarray


def _present_frames(tracks: TrackSet, wanted: np.ndarray | None = None) -> _Frames:
    """Present frames (of the ``wanted`` tracks only, when given) and their pixel counts."""
    segs = tracks.segs
    if tracks.areas is not None and wanted is not None:  # the known areas are those of all tracks
        f = _present_frames(tracks)
        keep = wanted[f.track]
        return _Frames(f.track[keep], f.frame[keep], list(compress(f.rles, keep)), f.areas[keep])
    index = np.arange(len(segs)) if wanted is None else np.nonzero(wanted)[0]
    frames = list(chain.from_iterable(segs[i] for i in index.tolist()))
    flags = list(map(is_not, frames, repeat(None)))
    lens = np.fromiter(map(len, (segs[i] for i in index.tolist())), dtype=np.int64, count=len(index))
    track = np.repeat(index, lens)
    frame = np.arange(len(track)) - np.repeat(np.cumsum(lens) - lens, lens)
    present = np.array(flags, dtype=bool)
    rles = list(compress(frames, flags))
    areas = np.asarray(tracks.areas, dtype=np.int64) if tracks.areas is not None else rle_areas(rles)
    return _Frames(track[present], frame[present], rles, areas)


def _keys(tracks: TrackSet, f: _Frames, cat_index: np.ndarray, n_cats: int, n_frames: int) -> np.ndarray:
    """One integer per (video, category, frame) of each present frame."""
    return (tracks.video[f.track] * n_cats + cat_index[f.track]) * n_frames + f.frame


@dataclass
class BatchOverlaps:
    """Per prediction its mean non-empty area; every overlapping same-category pair and its IoU."""

    det_area: np.ndarray  # (N,) float64
    pair_det: np.ndarray  # (P,) int64 prediction row
    pair_gt: np.ndarray  # (P,) int64 GT row
    pair_iou: np.ndarray  # (P,) float64, > 0


def rle_overlaps(sizes: Sequence[tuple[int, int]], dets: TrackSet, gts: TrackSet) -> BatchOverlaps:
    """Video IoUs of all same-video, same-category pairs of ``dets`` x ``gts`` from RLE frames.

    ``sizes`` holds (height, width) per video position. Python loops only over videos (one
    pycocotools iou call each, or a few for very long videos).
    """
    n_d, n_g = len(dets.segs), len(gts.segs)
    df = _present_frames(dets)
    d_total = np.bincount(df.track, weights=df.areas, minlength=n_d)
    d_count = np.bincount(df.track, weights=df.areas > 0, minlength=n_d)
    det_area = np.divide(d_total, d_count, out=np.zeros(n_d), where=d_count > 0)
    empty = np.zeros(0, dtype=np.int64)
    cats, inverse = np.unique(np.r_[dets.cats, gts.cats], return_inverse=True)
    d_cat, g_cat = inverse[:n_d], inverse[n_d:]
    n_c = max(len(cats), 1)
    n_t = max([len(s) for s in dets.segs] + [len(s) for s in gts.segs] + [1])
    group_d = np.unique(dets.video * n_c + d_cat)
    wanted = np.isin(gts.video * n_c + g_cat, group_d)  # GTs of a (video, category) with predictions
    if not wanted.any() or not n_d:
        return BatchOverlaps(det_area, empty, empty, np.zeros(0))
    gf = _present_frames(gts, wanted)
    g_total = np.bincount(gf.track, weights=gf.areas, minlength=n_g)
    # frames where both sides have a non-empty mask of the same video and category
    g_keys = _keys(gts, gf, g_cat, n_c, n_t)
    d_keys = _keys(dets, df, d_cat, n_c, n_t)
    d_act = np.nonzero((df.areas > 0) & np.isin(d_keys, g_keys[gf.areas > 0]))[0]
    g_act = np.nonzero((gf.areas > 0) & np.isin(g_keys, d_keys[d_act]))[0]
    entries_d, entries_g, ious = [], [], []
    d_video, g_video = dets.video[df.track[d_act]], gts.video[gf.track[g_act]]
    d_bounds = np.searchsorted(d_video, np.arange(len(sizes) + 1))
    g_bounds = np.searchsorted(g_video, np.arange(len(sizes) + 1))
    for v in np.nonzero((np.diff(d_bounds) > 0) & (np.diff(g_bounds) > 0))[0]:
        h, w = sizes[v]
        dv, gv = d_act[d_bounds[v] : d_bounds[v + 1]], g_act[g_bounds[v] : g_bounds[v + 1]]
        for ds, gs in _frame_windows(df.frame[dv], gf.frame[gv], n_t):
            r, c, iou = _tagged_ious(h, w, df.rles, dv[ds], d_keys[dv[ds]], gf.rles, gv[gs], g_keys[gv[gs]])
            entries_d.append(dv[ds][r])
            entries_g.append(gv[gs][c])
            ious.append(iou)
    if not entries_d:
        return BatchOverlaps(det_area, empty, empty, np.zeros(0))
    e_d, e_g, iou = np.concatenate(entries_d), np.concatenate(entries_g), np.concatenate(ious)
    pixels = np.rint(iou * (df.areas[e_d] + gf.areas[e_g]) / (1.0 + iou))
    pair_key = df.track[e_d] * n_g + gf.track[e_g]
    keys, which = np.unique(pair_key, return_inverse=True)
    inter = np.bincount(which, weights=pixels)
    keep = inter > 0
    keys, inter = keys[keep], inter[keep]
    p_det, p_gt = keys // n_g, keys % n_g
    union = d_total[p_det] + g_total[p_gt] - inter
    return BatchOverlaps(det_area, p_det, p_gt, inter / union)


def _frame_windows(d_frames: np.ndarray, g_frames: np.ndarray, n_frames: int):
    """Index sets of frame windows small enough for one iou call (the whole video usually)."""
    ratio = len(d_frames) * len(g_frames) / _PAIR_BUDGET
    if ratio <= 1:
        yield slice(None), slice(None)
        return
    window = max(1, int(n_frames / np.sqrt(ratio)))
    for start in range(0, n_frames, window):
        ds = np.nonzero((d_frames >= start) & (d_frames < start + window))[0]
        gs = np.nonzero((g_frames >= start) & (g_frames < start + window))[0]
        if len(ds) and len(gs):
            yield ds, gs


def _tagged_ious(h, w, d_rles, d_idx, d_tag, g_rles, g_idx, g_tag):
    """Per-frame IoUs of all same-tag (prediction frame, GT frame) entries, in one pycocotools call.

    The tags (one per video, category and frame) become the nominal widths, so pairs of different
    tags are never merged. Returns row and column positions of the same-tag pairs and their IoU.
    """
    base = min(int(d_tag.min()), int(g_tag.min()))
    dl = [
        {"size": [h, w + t - base], "counts": d_rles[i]["counts"]}
        for i, t in zip(d_idx.tolist(), d_tag.tolist())
    ]
    gl = [
        {"size": [h, w + t - base], "counts": g_rles[i]["counts"]}
        for i, t in zip(g_idx.tolist(), g_tag.tolist())
    ]
    ious = np.asarray(mask_utils.iou(dl, gl, np.zeros(len(gl), dtype=np.uint8))).reshape(len(dl), len(gl))
    r, c = np.nonzero(d_tag[:, None] == g_tag[None, :])
    return r, c, ious[r, c]


def mask_overlaps(
    det_masks: torch.Tensor, det_cats: Sequence[int], gt_masks: torch.Tensor, gt_cats: Sequence[int]
) -> BatchOverlaps:
    """Overlaps of one video from binary masks ``(D, T, H, W)`` and ``(G, T, H, W)``, computed on
    ``det_masks``' device (``gt_masks`` is moved there)."""
    import torch  # only this route needs it: the command line stays light

    if det_masks.ndim != 4 or gt_masks.ndim != 4 or det_masks.shape[1:] != gt_masks.shape[1:]:
        raise ValueError(
            f"masks must be (N, T, H, W) with equal T, H, W; got {tuple(det_masks.shape)} and {tuple(gt_masks.shape)}"
        )
    device = det_masks.device
    det_masks, gt_masks = det_masks.to(torch.bool), gt_masks.to(device=device, dtype=torch.bool)
    det_frames = det_masks.flatten(2).sum(-1).cpu().numpy().astype(np.int64)
    det_total = det_frames.sum(axis=1)
    gt_total = gt_masks.flatten(2).sum((1, 2)).cpu().numpy().astype(np.int64)
    det_cats, gt_cats = np.asarray(det_cats, dtype=np.int64), np.asarray(gt_cats, dtype=np.int64)
    p_det, p_gt, p_inter = [], [], []
    for cat in np.intersect1d(det_cats, gt_cats):
        d_idx, g_idx = np.nonzero(det_cats == cat)[0], np.nonzero(gt_cats == cat)[0]
        p = det_masks[torch.as_tensor(d_idx, device=device)].flatten(1)
        q = gt_masks[torch.as_tensor(g_idx, device=device)].flatten(1)
        acc = torch.zeros((len(d_idx), len(g_idx)), dtype=torch.float64, device=device)
        for s in range(0, p.shape[1], _MATMUL_CHUNK):
            acc += (p[:, s : s + _MATMUL_CHUNK].float() @ q[:, s : s + _MATMUL_CHUNK].float().T).double()
        inter = acc.round().long().cpu().numpy()
        r, c = np.nonzero(inter > 0)
        p_det.append(d_idx[r])
        p_gt.append(g_idx[c])
        p_inter.append(inter[r, c])
    det_area = average_area(det_frames)
    if not p_det:
        return BatchOverlaps(det_area, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    d, g, i = (np.concatenate(x).astype(np.int64) for x in (p_det, p_gt, p_inter))
    return BatchOverlaps(det_area, d, g, i / (det_total[d] + gt_total[g] - i))
