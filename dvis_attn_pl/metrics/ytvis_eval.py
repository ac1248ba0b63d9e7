"""The YouTube-VIS video mask AP, as the official ``YTVOSeval`` computes it, vectorised.

Pipeline: per video, the IoU of every same-category (prediction, track) pair
(:mod:`.ytvis_overlap`) -> :class:`EvalTables`, a few flat columns with no masks -> greedy matching
of all (video, category) groups at once, for every area range and IoU threshold (a loop over the
prediction rank only) -> precision/recall arrays ``(T, R, K, A, M)`` / ``(T, K, A, M)`` laid out as
the official ones -> the 12 statistics. The rules are those of
``shared/research/ytvis_metric_spec.md``; the official vectors in ``shared/ytvis_vectors`` are
reproduced to 1e-12.

Decisions on the official quirks (spec section 8) and error cases:

=====  ======================================================  ===========================================
quirk  official behaviour                                      here
=====  ======================================================  ===========================================
Q1     a result (or track) with fewer/more frames than the      rejected: every ``segmentations`` list must
       video: IoU over the common prefix only (``zip``)        have the video's length
Q2     result ``category_id`` not a GT category: dropped        rejected (usually a contiguous-vs-dataset
       silently                                                 id mix-up)
Q3     GT annotation id 0: its matches count as false           rejected (number annotations from 1)
       positives
Q4     GT ``ignore`` field overwritten by ``iscrowd``           matched: only ``iscrowd`` is read
Q5     GT average area from the json ``areas``, not the masks   matched
Q6     zero union (two empty tracks) -> IoU 0                   matched, silently
Q7     result for a video not in the GT (AssertionError),       rejected with a one-line ValueError naming
       empty result list (IndexError), uncompressed RLE in      the file, the entry and the problem
       results (TypeError), GT without ``iscrowd``/``areas``
       (KeyError)
--     duplicate annotation ids (the official index keeps       rejected
       the last one and scores it twice)
--     masks whose size differs from the video's                rejected
--     GT ``"annotations": null`` or missing                    rejected (unlabelled split)
=====  ======================================================  ===========================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from itertools import chain

import numpy as np

from .ytvis_io import GroundTruth, VideoDets, VideoGT, gc_paused, load_ground_truth, load_results
from .ytvis_overlap import BatchOverlaps, TrackSet, rle_overlaps

__all__ = [
    "STAT_NAMES",
    "IOU_THRS",
    "REC_THRS",
    "AREA_RANGES",
    "MAX_DETS",
    "EvalTables",
    "build_tables",
    "tables_from_overlaps",
    "evaluate_tables",
    "summarize",
    "per_category_ap",
    "summary_lines",
    "evaluate_ytvis",
]

# Parameters exactly as the official ``Params`` builds them (np.linspace: recall thresholds such
# as 0.35 are one ulp above k/100, which matters when recall lands on them).
IOU_THRS = np.linspace(0.5, 0.95, 10)
REC_THRS = np.linspace(0.0, 1.0, 101)
AREA_RANGES = np.array([[0, 1e10], [0, 128**2], [128**2, 256**2], [256**2, 1e10]], dtype=np.float64)
AREA_NAMES = ("all", "small", "medium", "large")
MAX_DETS = (1, 10, 100)
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
_MATCH_THRS = np.minimum(IOU_THRS, 1 - 1e-10)
_EPS = np.spacing(1)
_CELL_BUDGET = 1 << 16  # categories x padded predictions per accumulation chunk


# ------------------------------------------------------------------ tables
@dataclass
class EvalTables:
    """What matching and accumulation need, one row per prediction / GT track / overlapping pair.

    ``det_order`` orders a video's predictions among equal scores (results-file order);
    ``gt_*`` rows of a video are in GT-file order; ``pair_det``/``pair_gt`` index the rows.
    """

    det_video: np.ndarray  # int64
    det_order: np.ndarray  # int64
    det_cat: np.ndarray  # int64
    det_score: np.ndarray  # float64
    det_area: np.ndarray  # float64, mean over non-empty frames
    gt_video: np.ndarray  # int64
    gt_id: np.ndarray  # int64
    gt_cat: np.ndarray  # int64
    gt_area: np.ndarray  # float64 (from the json areas)
    gt_crowd: np.ndarray  # bool
    pair_det: np.ndarray  # int64
    pair_gt: np.ndarray  # int64
    pair_iou: np.ndarray  # float64

    @property
    def n_dets(self) -> int:
        return len(self.det_video)

    @property
    def n_gts(self) -> int:
        return len(self.gt_video)


def build_tables(videos: Sequence[VideoGT], dets: Sequence[VideoDets | None]) -> EvalTables:
    """The rows of several videos (``dets[i]`` are the predictions of ``videos[i]``) from parsed RLE
    inputs; masks are reduced to IoUs here (see :func:`.ytvis_overlap.rle_overlaps`)."""
    dets = [d if d is not None else VideoDets() for d in dets]
    n_det = np.array([len(d.categories) for d in dets], dtype=np.int64)
    n_gt = np.array([len(v.ids) for v in videos], dtype=np.int64)
    at = np.arange(len(videos))

    def column(lists, dtype, count):
        return np.fromiter(chain.from_iterable(lists), dtype=dtype, count=int(count))

    det_set = TrackSet(
        np.repeat(at, n_det),
        column((d.categories for d in dets), np.int64, n_det.sum()),
        [s for d in dets for s in d.segmentations],
        _known_areas(dets),
    )
    gt_set = TrackSet(
        np.repeat(at, n_gt),
        column((v.categories for v in videos), np.int64, n_gt.sum()),
        [s for v in videos for s in v.segmentations],
        _known_areas(videos),
    )
    ov = rle_overlaps([(v.height, v.width) for v in videos], det_set, gt_set)
    ids = np.array([v.id for v in videos], dtype=np.int64)
    return EvalTables(
        det_video=ids[det_set.video],
        det_order=column((d.order for d in dets), np.int64, n_det.sum()),
        det_cat=det_set.cats,
        det_score=column((d.scores for d in dets), np.float64, n_det.sum()),
        det_area=ov.det_area,
        gt_video=ids[gt_set.video],
        gt_id=column((v.ids for v in videos), np.int64, n_gt.sum()),
        gt_cat=gt_set.cats,
        gt_area=column((v.avg_areas for v in videos), np.float64, n_gt.sum()),
        gt_crowd=column((v.crowd for v in videos), bool, n_gt.sum()),
        pair_det=ov.pair_det,
        pair_gt=ov.pair_gt,
        pair_iou=ov.pair_iou,
    )


def _known_areas(parsed: Sequence[VideoGT | VideoDets]) -> np.ndarray | None:
    """The present frames' pixel counts of all videos, when the reader decoded every one of them."""
    empty = np.zeros(0, dtype=np.int64)
    parts = [empty if not p.segmentations else p.present_areas for p in parsed]
    if any(a is None for a in parts):
        return None
    return np.concatenate([empty, *parts])


def tables_from_overlaps(video: VideoGT, scores, cats, order, ov: BatchOverlaps) -> EvalTables:
    """One video's rows from its parsed GT, its predictions' scores/categories/order and overlaps."""
    n_d, n_g = len(cats), len(video.ids)
    return EvalTables(
        det_video=np.full(n_d, video.id, dtype=np.int64),
        det_order=np.asarray(order, dtype=np.int64).reshape(n_d),
        det_cat=np.asarray(cats, dtype=np.int64).reshape(n_d),
        det_score=np.asarray(scores, dtype=np.float64).reshape(n_d),
        det_area=ov.det_area,
        gt_video=np.full(n_g, video.id, dtype=np.int64),
        gt_id=np.asarray(video.ids, dtype=np.int64).reshape(n_g),
        gt_cat=np.asarray(video.categories, dtype=np.int64).reshape(n_g),
        gt_area=np.asarray(video.avg_areas, dtype=np.float64).reshape(n_g),
        gt_crowd=np.asarray(video.crowd, dtype=bool).reshape(n_g),
        pair_det=ov.pair_det,
        pair_gt=ov.pair_gt,
        pair_iou=ov.pair_iou,
    )


# ------------------------------------------------------------------ matching
def _group_positions(keys: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Position of each row within its group, rows visited in ``order`` (sorted by key first)."""
    pos = np.empty(len(keys), dtype=np.int64)
    if not len(keys):
        return pos
    sorted_keys = keys[order]
    starts = np.r_[0, np.nonzero(sorted_keys[1:] != sorted_keys[:-1])[0] + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
    pos[order] = np.arange(len(keys)) - run_start
    return pos


def _match_bucket(
    iou: np.ndarray, n_rows: np.ndarray, gt_valid, gt_ignore, gt_crowd
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy matching of B (video, category) groups at once, for every area range and threshold.

    ``iou`` (B, D, G): rows are predictions in score order, columns GTs in file order (padding 0).
    ``n_rows`` (B,) sorted descending; ``gt_valid`` (B, G); ``gt_ignore`` (B, A, G); ``gt_crowd``
    (B, G). Returns ``matched`` and ``matched_to_ignored``, both (B, A, T, D).

    Per prediction the official loop keeps the best IoU >= threshold among the GTs not taken yet
    (crowd GTs can be taken again), scanning non-ignored GTs first and stopping at the ignored ones
    once one matched; ties go to the last GT scanned. So: the last argmax among non-ignored
    candidates, else the last argmax among ignored ones.
    """
    n_b, n_d, n_g = iou.shape
    n_a, n_t = gt_ignore.shape[1], len(_MATCH_THRS)
    thr = _MATCH_THRS[None, None, :, None]
    cols = np.arange(n_g)
    taken = np.zeros((n_b, n_a, n_t, n_g), dtype=bool)
    matched = np.zeros((n_b, n_a, n_t, n_d), dtype=bool)
    to_ignored = np.zeros((n_b, n_a, n_t, n_d), dtype=bool)
    active = np.searchsorted(-n_rows, -np.arange(n_d), side="left")  # groups with more than r rows
    for r in range(int(n_rows.max(initial=0))):
        b_n = int(active[r])
        row = iou[:b_n, r, :][:, None, None, :]
        ign = gt_ignore[:b_n, :, None, :]
        cand = (row >= thr) & gt_valid[:b_n, None, None, :] & (gt_crowd[:b_n, None, None, :] | ~taken[:b_n])
        pick = np.full((b_n, n_a, n_t), -1, dtype=np.int64)
        for group in (ign, ~ign):  # non-ignored candidates override ignored ones
            c = cand & group
            best = np.where(c, row, -1.0).max(axis=-1, keepdims=True)
            last = np.where(c & (row == best), cols, -1).max(axis=-1)
            pick = np.where(last >= 0, last, pick)
        b, a, t = np.nonzero(pick >= 0)
        g = pick[b, a, t]
        taken[b, a, t, g] = True
        matched[b, a, t, r] = True
        to_ignored[b, a, t, r] = gt_ignore[b, a, g]
    return matched, to_ignored


def _pow2(n: np.ndarray) -> np.ndarray:
    return 1 << np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64)


def _match_all(
    tab: EvalTables, group_det, rank, group_gt, gt_pos, gt_ignore
) -> tuple[np.ndarray, np.ndarray]:
    """(A, T, N) matched / matched-to-ignored flags of every prediction (rank >= 100: never matched)."""
    n_a, n_t = gt_ignore.shape[1], len(IOU_THRS)
    matched = np.zeros((n_a, n_t, tab.n_dets), dtype=bool)
    to_ignored = np.zeros_like(matched)
    max_det = MAX_DETS[-1]
    n_groups = int(max(group_det.max(initial=-1), group_gt.max(initial=-1))) + 1
    d_count = np.minimum(np.bincount(group_det, minlength=n_groups), max_det)
    g_count = np.bincount(group_gt, minlength=n_groups)
    both = np.nonzero((d_count > 0) & (g_count > 0))[0]
    if not len(both):
        return matched, to_ignored
    det_in = rank < max_det
    pair_ok = det_in[tab.pair_det] & (group_det[tab.pair_det] == group_gt[tab.pair_gt])
    p_det, p_gt, p_iou = tab.pair_det[pair_ok], tab.pair_gt[pair_ok], tab.pair_iou[pair_ok]
    width = _pow2(g_count)
    for w in np.unique(width[both]):
        groups = both[width[both] == w]
        groups = groups[np.argsort(-d_count[groups], kind="stable")]
        local = np.full(n_groups, -1, dtype=np.int64)
        local[groups] = np.arange(len(groups))
        n_b, n_d = len(groups), int(d_count[groups[0]])
        iou = np.zeros((n_b, n_d, w))
        sel = local[group_det[p_det]] >= 0
        iou[local[group_det[p_det[sel]]], rank[p_det[sel]], gt_pos[p_gt[sel]]] = p_iou[sel]
        g_rows = np.nonzero(local[group_gt] >= 0)[0]
        gb, gp = local[group_gt[g_rows]], gt_pos[g_rows]
        valid = np.zeros((n_b, w), dtype=bool)
        crowd = np.zeros((n_b, w), dtype=bool)
        ignore = np.zeros((n_b, n_a, w), dtype=bool)
        valid[gb, gp] = True
        crowd[gb, gp] = tab.gt_crowd[g_rows]
        ignore[gb, :, gp] = gt_ignore[g_rows]
        m, mi = _match_bucket(iou, d_count[groups], valid, ignore, crowd)
        d_rows = np.nonzero((local[group_det] >= 0) & det_in)[0]
        db, dr = local[group_det[d_rows]], rank[d_rows]
        matched[:, :, d_rows] = m[db, :, :, dr].transpose(1, 2, 0)
        to_ignored[:, :, d_rows] = mi[db, :, :, dr].transpose(1, 2, 0)
    return matched, to_ignored


# ------------------------------------------------------------------ accumulation
def _tp_needed(npig: np.ndarray) -> np.ndarray:
    """(..., R): the least TP count c with ``c / npig >= REC_THRS[r]`` in float64, as the official
    ``searchsorted(tp / npig, recThrs)`` compares (npig >= 1)."""
    p = npig[..., None].astype(np.int64)
    c = np.ceil(REC_THRS * p).astype(np.int64)
    for _ in range(2):
        lower = np.maximum(c - 1, 0)
        c = np.where((c > 0) & (lower / p >= REC_THRS), lower, c)
    for _ in range(2):
        c = np.where(c / p < REC_THRS, c + 1, c)
    return c


def _accumulate_chunk(tp, fp, counts, npig, precision_out, recall_out):
    """One chunk of categories. tp/fp (A, T, Kc, n) bool in score order, padded after ``counts``;
    npig (Kc, A) >= 1. Writes precision (T, R, Kc, A) and recall (T, Kc, A)."""
    n_a, n_t, n_k, n = tp.shape
    tps = np.cumsum(tp, axis=-1, dtype=np.float64)
    fps = np.cumsum(fp, axis=-1, dtype=np.float64)
    rc = tps / npig.T[:, None, :, None]
    pr = tps / (fps + tps + _EPS)
    pr = np.maximum.accumulate(pr[..., ::-1], axis=-1)[..., ::-1]  # interpolated: max to the right
    # searchsorted(rc, recThrs, "left") of every row at once: rc[i] >= thr  <=>  tps[i] >= need,
    # and tps first reaches c >= 1 at the position of the c-th true positive.
    rows = n_a * n_t * n_k
    nth_tp = np.full((rows, n + 2), n, dtype=np.int64)  # n: never reached
    nth_tp[:, 0] = 0
    r, i = np.nonzero(tp.reshape(rows, n))
    nth_tp[r, tps.reshape(rows, n)[r, i].astype(np.int64)] = i
    need = np.minimum(_tp_needed(npig), n + 1).transpose(1, 0, 2)  # (A, Kc, R)
    need = np.broadcast_to(need[:, None], (n_a, n_t, n_k, need.shape[-1])).reshape(rows, -1)
    idx = np.take_along_axis(nth_tp, need, axis=1)
    inside = idx < np.broadcast_to(counts[None, None, :, None], (n_a, n_t, n_k, 1)).reshape(rows, 1)
    q = np.where(inside, np.take_along_axis(pr.reshape(rows, n), np.minimum(idx, n - 1), axis=1), 0.0)
    precision_out[...] = q.reshape(n_a, n_t, n_k, -1).transpose(1, 3, 2, 0)
    last = np.take_along_axis(rc, np.maximum(counts - 1, 0)[None, None, :, None], axis=-1)[..., 0]
    recall_out[...] = np.where(counts > 0, last, 0.0).transpose(1, 2, 0)


def _accumulate(
    cat_k, tab: EvalTables, rank, tp, fp, npig, n_cats: int, full: bool
) -> tuple[np.ndarray, np.ndarray]:
    n_t, n_r, n_a, n_m = len(IOU_THRS), len(REC_THRS), len(AREA_RANGES), len(MAX_DETS)
    precision = np.full((n_t, n_r, n_cats, n_a, n_m), -1.0)
    recall = np.full((n_t, n_cats, n_a, n_m), -1.0)
    scored = np.nonzero((npig > 0).any(axis=1))[0]
    if not len(scored):
        return precision, recall
    # category, then score descending; ties: video id, then order within the video
    order = np.lexsort((tab.det_order, tab.det_video, -tab.det_score, cat_k))
    widest = None
    for m_i in reversed(range(n_m)):  # 100 first: smaller caps often select the same predictions
        idx = order[rank[order] < MAX_DETS[m_i]]
        if widest is not None and len(idx) == len(widest):
            precision[..., m_i], recall[..., m_i] = precision[..., -1], recall[..., -1]
        elif widest is not None and not full:  # only AR uses these caps: the final TP counts suffice
            found = np.zeros((n_a, n_t, n_cats))
            np.add.at(found.transpose(2, 0, 1), cat_k[idx], tp[:, :, idx].transpose(2, 0, 1))
            has = np.bincount(cat_k[idx], minlength=n_cats) > 0
            recall[..., m_i] = np.where(
                has[None, :, None], found.transpose(1, 2, 0) / np.maximum(npig, 1), 0.0
            )
        else:
            _accumulate_cap(idx, cat_k, tp, fp, npig, scored, precision[..., m_i], recall[..., m_i])
        widest = idx if widest is None else widest
    k_idx, a_idx = np.nonzero(npig == 0)  # no positive: -1 whatever the false positives
    precision[:, :, k_idx, a_idx, :] = -1.0
    recall[:, k_idx, a_idx, :] = -1.0
    return precision, recall


def _accumulate_cap(idx, cat_k, tp, fp, npig, scored, precision_out, recall_out) -> None:
    """Precision (T, R, K, A) and recall (T, K, A) for the predictions ``idx`` (sorted by category,
    then official order), in chunks of categories with similar prediction counts."""
    n_a, n_t = tp.shape[:2]
    counts = np.bincount(cat_k[idx], minlength=len(npig))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    by_size = scored[np.argsort(counts[scored], kind="stable")]
    lo = 0
    while lo < len(by_size):
        hi = lo + 1
        while hi < len(by_size) and (hi - lo + 1) * max(int(counts[by_size[hi]]), 1) <= _CELL_BUDGET:
            hi += 1
        ks = by_size[lo:hi]
        lo = hi
        n = max(int(counts[ks].max()), 1)
        offs = np.arange(n)
        valid = offs[None, :] < counts[ks][:, None]
        if len(idx):
            rows = idx[np.where(valid, starts[ks][:, None] + offs[None, :], 0)]
            tp_c, fp_c = tp[:, :, rows] & valid, fp[:, :, rows] & valid
        else:
            tp_c = fp_c = np.zeros((n_a, n_t, len(ks), n), dtype=bool)
        p_out = np.empty((n_t, len(REC_THRS), len(ks), n_a))
        r_out = np.empty((n_t, len(ks), n_a))
        _accumulate_chunk(tp_c, fp_c, counts[ks], np.maximum(npig[ks], 1), p_out, r_out)
        precision_out[:, :, ks, :] = p_out
        recall_out[:, ks, :] = r_out


def evaluate_tables(
    tab: EvalTables, category_ids: Iterable[int], full: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Official ``precision`` (T, R, K, A, M) and ``recall`` (T, K, A, M) for the given categories
    (rows of other categories are ignored, as the official evaluator filters by ``catIds``).

    No statistic reads the precision at maxDets 1 and 10; it is filled only with ``full=True``
    (otherwise -1 there, unless those caps select the same predictions as 100)."""
    cats = np.asarray(sorted(set(int(c) for c in category_ids)), dtype=np.int64)
    n_k = len(cats)
    lo, hi = AREA_RANGES[:, 0], AREA_RANGES[:, 1]

    def slot(values):
        pos = np.minimum(np.searchsorted(cats, values), max(n_k - 1, 0))
        return np.where(cats[pos] == values, pos, -1) if n_k else np.full(len(values), -1)

    d_k, g_k = slot(tab.det_cat), slot(tab.gt_cat)
    videos = np.unique(np.r_[tab.det_video, tab.gt_video])
    group_det = np.searchsorted(videos, tab.det_video) * max(n_k, 1) + d_k
    group_gt = np.searchsorted(videos, tab.gt_video) * max(n_k, 1) + g_k
    group_det = np.where(d_k >= 0, group_det, -1)
    group_gt = np.where(g_k >= 0, group_gt, -1)
    keep_d, keep_g = d_k >= 0, g_k >= 0
    if not keep_d.all() or not keep_g.all():  # drop rows of other categories
        tab, d_k, g_k, group_det, group_gt = _subset(tab, keep_d, keep_g, d_k, g_k, group_det, group_gt)

    rank = _group_positions(group_det, np.lexsort((tab.det_order, -tab.det_score, group_det)))
    gt_pos = _group_positions(group_gt, np.argsort(group_gt, kind="stable"))
    gt_ignore = tab.gt_crowd[:, None] | (tab.gt_area[:, None] < lo) | (tab.gt_area[:, None] > hi)  # (G, A)
    npig = np.zeros((n_k, len(AREA_RANGES)), dtype=np.int64)
    np.add.at(npig, g_k, (~gt_ignore).astype(np.int64))

    matched, to_ignored = _match_all(tab, group_det, rank, group_gt, gt_pos, gt_ignore)
    out_of_range = ((tab.det_area[None, :] < lo[:, None]) | (tab.det_area[None, :] > hi[:, None]))[:, None, :]
    tp = matched & ~to_ignored
    fp = ~matched & ~out_of_range
    return _accumulate(d_k, tab, rank, tp, fp, npig, n_k, full)


def _subset(tab: EvalTables, keep_d, keep_g, d_k, g_k, group_det, group_gt):
    new_d = np.cumsum(keep_d) - 1
    new_g = np.cumsum(keep_g) - 1
    pair = keep_d[tab.pair_det] & keep_g[tab.pair_gt]
    cols = {}
    for f in fields(EvalTables):
        a = getattr(tab, f.name)
        if f.name.startswith("det_"):
            a = a[keep_d]
        elif f.name.startswith("gt_"):
            a = a[keep_g]
        else:
            a = a[pair]
        cols[f.name] = a
    cols["pair_det"] = new_d[tab.pair_det[pair]]
    cols["pair_gt"] = new_g[tab.pair_gt[pair]]
    return EvalTables(**cols), d_k[keep_d], g_k[keep_g], group_det[keep_d], group_gt[keep_g]


# ------------------------------------------------------------------ summary
def _mean_valid(x: np.ndarray) -> float:
    x = x[x > -1]
    return float(np.mean(x)) if x.size else -1.0


def summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """The 12 official statistics: mean over the entries > -1 of each slice, or -1."""
    t50 = int(np.argmin(np.abs(IOU_THRS - 0.5)))
    t75 = int(np.argmin(np.abs(IOU_THRS - 0.75)))
    m = len(MAX_DETS) - 1
    return {
        "AP": _mean_valid(precision[:, :, :, 0, m]),
        "AP50": _mean_valid(precision[t50, :, :, 0, m]),
        "AP75": _mean_valid(precision[t75, :, :, 0, m]),
        "APs": _mean_valid(precision[:, :, :, 1, m]),
        "APm": _mean_valid(precision[:, :, :, 2, m]),
        "APl": _mean_valid(precision[:, :, :, 3, m]),
        "AR1": _mean_valid(recall[:, :, 0, 0]),
        "AR10": _mean_valid(recall[:, :, 0, 1]),
        "AR100": _mean_valid(recall[:, :, 0, m]),
        "ARs": _mean_valid(recall[:, :, 1, m]),
        "ARm": _mean_valid(recall[:, :, 2, m]),
        "ARl": _mean_valid(recall[:, :, 3, m]),
    }


_SUMMARY_ROWS = (  # (AP or AR, IoU label, area label, max detections), in STAT_NAMES order
    *(("AP", iou, "all", 100) for iou in ("0.50:0.95", "0.50", "0.75")),
    *(("AP", "0.50:0.95", area, 100) for area in ("small", "medium", "large")),
    *(("AR", "0.50:0.95", "all", m) for m in MAX_DETS),
    *(("AR", "0.50:0.95", area, 100) for area in ("small", "medium", "large")),
)


def summary_lines(stats: Mapping[str, float]) -> list[str]:
    """The 12 lines the official ``summarize()`` prints, for ``stats`` keyed by :data:`STAT_NAMES`."""
    lines = []
    for (kind, iou, area, dets), name in zip(_SUMMARY_ROWS, STAT_NAMES):
        title = "Average Precision" if kind == "AP" else "Average Recall"
        lines.append(
            f" {title:<18} ({kind}) @[ IoU={iou:<9} | area={area:>6} | maxDets={dets:>3} ] = {float(stats[name]):0.3f}"
        )
    return lines


def category_labels(categories: Mapping[int, str]) -> dict[int, str]:
    """Category id -> the key used in ``per_category`` (its name; ``"name (id N)"`` when names repeat)."""
    names = list(categories.values())
    return {
        cid: (name if names.count(name) == 1 else f"{name} (id {cid})") for cid, name in categories.items()
    }


def per_category_ap(precision: np.ndarray, categories: Mapping[int, str]) -> dict[str, float]:
    """AP of each category (area all, 100 detections, mean over T and R); -1 without GT."""
    labels = category_labels(dict(sorted(categories.items())))
    return {label: _mean_valid(precision[:, :, k, 0, -1]) for k, label in enumerate(labels.values())}


# ------------------------------------------------------------------ entry point
def evaluate_truth(
    truth: GroundTruth, per_video_dets: Mapping[int, VideoDets], per_category: bool = False
) -> dict:
    """The statistics for parsed inputs (see :func:`evaluate_ytvis`)."""
    tables = build_tables(list(truth.videos.values()), [per_video_dets.get(vid) for vid in truth.videos])
    precision, recall = evaluate_tables(tables, truth.category_ids)
    out: dict = summarize(precision, recall)
    if per_category:
        out["per_category"] = per_category_ap(precision, truth.categories)
    return out


def evaluate_ytvis(gt, results, per_category: bool = False) -> dict:
    """The YouTube-VIS video mask AP of ``results`` against ``gt``, as the official evaluator.

    ``gt``: a YTVIS ground-truth json path or the loaded dict; ``results``: a results json path or
    the loaded list (``video_id``, ``category_id`` (dataset id), ``score``, ``segmentations``: one
    compressed RLE or null per frame). Returns the 12 statistics ``AP AP50 AP75 APs APm APl AR1
    AR10 AR100 ARs ARm ARl`` as floats (-1 where nothing can be averaged, e.g. APm without any
    medium-sized GT). With ``per_category=True`` the dict also holds ``"per_category": {name: AP}``
    (area all, 100 detections; -1 for a category without GT). Bad input raises
    :class:`~dvis_attn_pl.metrics.ytvis_io.YTVISInputError` (a ``ValueError``, one line naming the
    file and the problem).
    """
    with gc_paused():
        truth = load_ground_truth(gt)
        return evaluate_truth(truth, load_results(results, truth), per_category=per_category)
