"""The YouTube-VIS video mask AP, as the official ``YTVOSeval`` computes it, vectorised.

Video IoU of a detection and a GT track is ``sum_t |d_t & g_t| / sum_t |d_t | g_t|``. Per frame,
pycocotools' C routines give the IoU matrix of all detections against all GTs of the video at
once; intersections are recovered exactly from IoU and areas (integers), summed over frames, and
divided once, so IoUs equal the official ratios bit for bit. Matching runs per (video, category)
with all IoU thresholds and area ranges at once; accumulation is numpy over whole categories.

Decisions on the official quirks (``shared/research/ytvis_metric_spec.md`` §8):

| quirk | decision |
|---|---|
| Q1 result with fewer/more segmentations than the video | rejected (ValueError) |
| Q2 result category not in the GT | rejected (ValueError) |
| Q3 GT annotation id 0 (never matched officially) | rejected (ValueError) |
| Q4 GT ``ignore`` field overwritten by ``iscrowd`` | matched: only ``iscrowd`` counts |
| Q5 GT average area from the json ``areas`` | matched |
| Q6 zero union -> IoU 0 | matched (silently) |
| Q7 result for an unknown video, empty result list, uncompressed RLE in results, GT without ``iscrowd``/``areas`` | rejected (ValueError) |
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
AREA_RANGES = np.array([[0, 1e10], [0, 128**2], [128**2, 256**2], [256**2, 1e10]], dtype=np.float64)
AREA_NAMES = ("all", "small", "medium", "large")
MAX_DETS = (1, 10, 100)
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_EFFECTIVE_THRS = np.minimum(IOU_THRS, 1 - 1e-10)


@dataclass
class VideoRecord:
    """Everything the accumulation needs from one video (no masks).

    Detections are in result-file order; GTs in GT-file order. ``iou`` is (D, G) and holds the
    video IoU for every pair (pairs of different categories are never used).
    """

    video_id: int
    det_category: np.ndarray  # (D,) int64
    det_score: np.ndarray  # (D,) float64
    det_area: np.ndarray  # (D,) float64 average area over present non-empty frames
    gt_id: np.ndarray  # (G,) int64
    gt_category: np.ndarray  # (G,) int64
    gt_area: np.ndarray  # (G,) float64
    gt_crowd: np.ndarray  # (G,) bool
    iou: np.ndarray  # (D, G) float64


def _match(iou: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of detections (rows, score order) for every (area range, threshold).

    ``gt_ignore`` is (A, G) already sorted non-ignored first per area range (and ``iou`` columns
    per area range are given as (A, D, G) in that sorted order). Returns ``matched_gt`` (A, T, D)
    as indices into the sorted GT order (-1: none) and whether that GT is ignored.
    """
    n_area, n_det, n_gt = iou.shape
    n_thr = len(IOU_THRS)
    taken = np.zeros((n_area, n_thr, n_gt), dtype=bool)
    matched = np.full((n_area, n_thr, n_det), -1, dtype=np.int64)
    thr = _EFFECTIVE_THRS[None, :, None]
    rev = np.arange(n_gt)[::-1]
    for d in range(n_det):  # sequential by definition: earlier detections take GTs first
        row = iou[:, d, :][:, None, :]  # (A, 1, G)
        ok = (row >= thr) & (~taken | gt_crowd[:, None, :])  # (A, T, G)
        chosen = np.full((n_area, n_thr), -1, dtype=np.int64)
        for group in (gt_ignore, ~gt_ignore):  # ignored first, then non-ignored overrides
            cand = ok & group[:, None, :]
            vals = np.where(cand, row, -1.0)
            best = vals.max(axis=2, keepdims=True)
            last = n_gt - 1 - np.argmax((vals == best)[:, :, rev], axis=2)  # ties: last GT wins
            has = cand.any(axis=2)
            chosen = np.where(has, last, chosen)
        matched[:, :, d] = chosen
        a_idx, t_idx = np.nonzero(chosen >= 0)
        taken[a_idx, t_idx, chosen[a_idx, t_idx]] = True
    return matched


def evaluate_records(records: list[VideoRecord], category_ids: list[int]) -> dict:
    """Precision (T, R, K, A, M) and recall (T, K, A, M) arrays, as ``YTVOSeval.accumulate``."""
    cats = np.asarray(list(category_ids), dtype=np.int64)
    n_t, n_r, n_k, n_a, n_m = len(IOU_THRS), len(REC_THRS), len(cats), len(AREA_RANGES), len(MAX_DETS)
    lo, hi = AREA_RANGES[:, 0][:, None], AREA_RANGES[:, 1][:, None]
    records = sorted(records, key=lambda r: r.video_id)

    # Every detection of a known category, with its video position, file order and rank in its (video, category).
    cols = {"video": [], "order": [], "cat": [], "score": [], "area": []}
    for v, rec in enumerate(records):
        keep = np.isin(rec.det_category, cats)
        cols["video"].append(np.full(int(keep.sum()), v))
        cols["order"].append(np.nonzero(keep)[0])
        cols["cat"].append(rec.det_category[keep])
        cols["score"].append(rec.det_score[keep])
        cols["area"].append(rec.det_area[keep])
    video, order, cat, score, area = (np.concatenate(cols[k]) if records else np.zeros(0) for k in cols)
    video, order, cat = video.astype(np.int64), order.astype(np.int64), cat.astype(np.int64)
    by_group = np.lexsort((order, -score, cat, video))  # (video, category), score desc, file order
    rank = np.empty(len(score), dtype=np.int64)
    group_key = video[by_group] * (1 << 32) + cat[by_group]
    starts = np.r_[0, np.nonzero(np.diff(group_key))[0] + 1] if len(score) else np.zeros(0, dtype=np.int64)
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(score)])) if len(score) else starts
    rank[by_group] = np.arange(len(score)) - group_start
    out_of_range = (area[None, :] < lo) | (area[None, :] > hi)  # (A, N)
    tp = np.zeros((n_a, n_t, len(score)), dtype=bool)
    ig = np.repeat(out_of_range[:, None, :], n_t, axis=1)  # unmatched: ignored when out of range
    npig = np.zeros((n_k, n_a), dtype=np.int64)
    seen = np.zeros(n_k, dtype=bool)
    k_of = {int(c): i for i, c in enumerate(cats)}

    for v, rec in enumerate(records):
        for c in np.unique(rec.gt_category):
            k = k_of.get(int(c))
            if k is None:
                continue
            g_sel = np.nonzero(rec.gt_category == c)[0]
            gt_area, gt_crowd, gt_id = rec.gt_area[g_sel], rec.gt_crowd[g_sel], rec.gt_id[g_sel]
            ignore = gt_crowd[None, :] | (gt_area[None, :] < lo) | (gt_area[None, :] > hi)  # (A, G)
            npig[k] += (~ignore).sum(axis=1)
            seen[k] = True
            lo_i, hi_i = np.searchsorted(video[by_group], [v, v + 1])
            rows = by_group[lo_i:hi_i]
            rows = rows[(cat[rows] == c) & (rank[rows] < MAX_DETS[-1])]  # score order
            if not len(rows):
                continue
            gt_order = np.argsort(ignore, axis=1, kind="mergesort")
            ignore_sorted = np.take_along_axis(ignore, gt_order, axis=1)
            pair = rec.iou[np.ix_(order[rows], g_sel)]  # (D, G)
            matched = _match(pair[:, gt_order].transpose(1, 0, 2), ignore_sorted, gt_crowd[gt_order])
            has = matched >= 0
            safe = np.where(has, matched, 0)
            a_idx = np.arange(n_a)[:, None, None]
            m_ignored = ignore_sorted[a_idx, safe] & has
            m_id = np.where(has, gt_id[gt_order][a_idx, safe], 0)
            tp[:, :, rows] = m_id != 0  # the official tests the GT id, not the match
            ig[:, :, rows] = m_ignored | (~has & out_of_range[:, None, rows])
    seen |= np.isin(cats, cat)

    precision = -np.ones((n_t, n_r, n_k, n_a, n_m))
    recall = -np.ones((n_t, n_k, n_a, n_m))
    global_order = np.lexsort((order, video, -score))  # score desc; ties: video, then per-video order
    for k in np.nonzero(seen & (npig.max(axis=1) > 0))[0]:
        in_k = cat[global_order] == cats[k]
        for m_i, max_det in enumerate(MAX_DETS):
            idx = global_order[in_k & (rank[global_order] < max_det)]
            for a in range(n_a):
                if npig[k, a] == 0:
                    continue
                _accumulate_one(tp[a][:, idx], ig[a][:, idx], npig[k, a], precision[:, :, k, a, m_i], recall[:, k, a, m_i])
    return {"precision": precision, "recall": recall}


def _accumulate_one(tp: np.ndarray, ig: np.ndarray, npig: int, precision_out: np.ndarray, recall_out: np.ndarray):
    """Fill (T, R) precision and (T,) recall for one (category, area, maxDets)."""
    n_det = tp.shape[1]
    tps = np.cumsum(tp & ~ig, axis=1, dtype=np.float64)
    fps = np.cumsum(~tp & ~ig, axis=1, dtype=np.float64)
    if n_det == 0:
        precision_out[:] = 0.0
        recall_out[:] = 0.0
        return
    rc = tps / npig
    pr = tps / (fps + tps + np.spacing(1))
    recall_out[:] = rc[:, -1]
    pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # monotone from the right
    for t in range(tp.shape[0]):
        idx = np.searchsorted(rc[t], REC_THRS, side="left")
        q = np.zeros(len(REC_THRS))
        inside = idx < n_det
        q[inside] = pr[t, idx[inside]]
        # the official loop stops at the first threshold past the end: later ones stay 0
        first_out = np.argmax(~inside) if (~inside).any() else len(REC_THRS)
        q[first_out:] = 0.0
        precision_out[t] = q


def summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """The 12 official statistics (mean over entries > -1, or -1)."""
    t50 = int(np.where(np.isclose(IOU_THRS, 0.5))[0][0])
    t75 = int(np.where(np.isclose(IOU_THRS, 0.75))[0][0])

    def mean(x: np.ndarray) -> float:
        x = x[x > -1]
        return float(np.mean(x)) if x.size else -1.0

    m100 = len(MAX_DETS) - 1
    return {
        "AP": mean(precision[:, :, :, 0, m100]),
        "AP50": mean(precision[t50, :, :, 0, m100]),
        "AP75": mean(precision[t75, :, :, 0, m100]),
        "APs": mean(precision[:, :, :, 1, m100]),
        "APm": mean(precision[:, :, :, 2, m100]),
        "APl": mean(precision[:, :, :, 3, m100]),
        "AR1": mean(recall[:, :, 0, 0]),
        "AR10": mean(recall[:, :, 0, 1]),
        "AR100": mean(recall[:, :, 0, m100]),
        "ARs": mean(recall[:, :, 1, m100]),
        "ARm": mean(recall[:, :, 2, m100]),
        "ARl": mean(recall[:, :, 3, m100]),
    }


def per_category_ap(precision: np.ndarray, category_ids: list[int]) -> dict[int, float]:
    """AP of each category (area all, 100 detections); -1 where the category has no GT."""
    out = {}
    for k, cat in enumerate(category_ids):
        p = precision[:, :, k, 0, -1]
        p = p[p > -1]
        out[int(cat)] = float(p.mean()) if p.size else -1.0
    return out
