"""``YTVISMetric``: the YouTube-VIS video mask AP as a ``torchmetrics.Metric``, synced across ranks.

``update(predictions, ground_truth)`` takes one video.

``ground_truth``: a mapping with ``video_id`` (or ``id``), ``height``, ``width``, optional
``length``, and ``annotations``: the video's YTVIS annotation dicts (``id``, ``category_id``,
``iscrowd``, ``segmentations`` (RLE / polygon / null per frame), ``areas``). The dataset items of
:mod:`dvis_attn_pl.data.dataset` have this form; :func:`ground_truth_items` makes them from a GT json.

``predictions``, either
  * a list of result records as in ``results.json``: ``{"video_id" (optional), "category_id"
    (dataset id), "score", "segmentations": [compressed RLE or null per frame]}``, or
  * a dict of tensors ``{"masks": (N, T, H, W) bool, "scores": (N,), "category_ids": (N,)}``
    (dataset ids). IoUs are then matrix products of the flattened masks on the masks' device.

Each video is reduced at once to compact float64 rows, no masks: per prediction (video, index,
category, score, mean area), per GT track (video, index, id, category, area, crowd), per
overlapping same-category pair (video, prediction index, GT index, IoU). These are ``cat``-reduced
list states, so syncing moves only the rows. ``compute()`` returns the 12 statistics (floats,
named as :data:`~dvis_attn_pl.metrics.ytvis_eval.STAT_NAMES`) and ``"per_category": {name: AP}``,
identical to :func:`~dvis_attn_pl.metrics.evaluate_ytvis` on the same videos, however the videos
were split over processes. A video reported more than once (e.g. by a padding sampler) counts once.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from ..utils.compat import keep_metric_dtype
from .ytvis_eval import (
    EvalTables,
    build_tables,
    evaluate_tables,
    per_category_ap,
    summarize,
    tables_from_overlaps,
)
from .ytvis_io import (
    VideoGT,
    YTVISInputError,
    parse_categories,
    parse_video_ground_truth,
    parse_video_predictions,
    read_json,
)
from .ytvis_overlap import mask_overlaps

__all__ = ["YTVISMetric", "ground_truth_items"]

_DET, _GT, _PAIR = 5, 6, 4  # columns of the row states


def ground_truth_items(gt) -> Iterator[dict]:
    """Per video of a YTVIS GT json (path or dict): ``{"video_id", "height", "width", "length",
    "annotations"}``, the ``ground_truth`` argument of :meth:`YTVISMetric.update`."""
    data, source = read_json(gt, "ground-truth")
    by_video: dict = {}
    for ann in data.get("annotations") or []:
        by_video.setdefault(ann.get("video_id"), []).append(ann)
    for v in data["videos"]:
        item = {
            "video_id": v["id"],
            "height": v["height"],
            "width": v["width"],
            "annotations": by_video.get(v["id"], []),
        }
        if "length" in v:
            item["length"] = v["length"]
        yield item


class YTVISMetric(Metric):
    """The 12 YTVIS statistics and per-category AP over the videos seen by all ranks.

    Args:
        categories: the dataset's categories, ``[{"id": ..., "name": ...}, ...]`` (the GT json's
            ``categories``); the evaluated set, as in the official evaluator.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, categories: Sequence[Mapping], **kwargs) -> None:
        super().__init__(**kwargs)
        self.categories = parse_categories(list(categories), "categories")
        self.add_state("det_rows", default=[], dist_reduce_fx="cat")
        self.add_state("gt_rows", default=[], dist_reduce_fx="cat")
        self.add_state("pair_rows", default=[], dist_reduce_fx="cat")
        self.set_dtype(torch.float64)  # ids, scores and IoUs exactly; empty ranks sync as float64 too

    def _apply(self, fn, *args, **kwargs):
        # torchmetrics resets the metric dtype to float32 on every move (``.to(device)``); the rows
        # hold ids and IoUs, and a rank without videos syncs empty tensors of this dtype, which
        # must equal the float64 rows of the other ranks.
        out = super()._apply(fn, *args, **kwargs)
        keep_metric_dtype(self, torch.float64)
        return out

    # ------------------------------------------------------------------ update
    def update(self, predictions, ground_truth: Mapping) -> None:
        """Add one video (see the module docstring for both argument forms)."""
        video = parse_video_ground_truth(ground_truth, self.categories)
        if isinstance(predictions, Mapping):
            tables = self._tables_from_masks(predictions, video)
        else:
            dets = parse_video_predictions(list(predictions), video, self.categories)
            tables = build_tables([video], [dets])
        vid_d = np.full(tables.n_dets, video.id, dtype=np.float64)
        vid_g = np.full(tables.n_gts, video.id, dtype=np.float64)
        det = np.stack(
            [vid_d, np.arange(tables.n_dets), tables.det_cat, tables.det_score, tables.det_area], axis=1
        )
        gt = np.stack(
            [vid_g, np.arange(tables.n_gts), tables.gt_id, tables.gt_cat, tables.gt_area, tables.gt_crowd],
            axis=1,
        )
        pair = np.stack(
            [np.full(len(tables.pair_iou), video.id), tables.pair_det, tables.pair_gt, tables.pair_iou],
            axis=1,
        )
        for state, rows in ((self.det_rows, det), (self.gt_rows, gt), (self.pair_rows, pair)):
            state.append(torch.as_tensor(rows.astype(np.float64).ravel(), device=self.device))

    def _tables_from_masks(self, predictions: Mapping, video: VideoGT) -> EvalTables:
        where = f"video {video.id} predictions"
        for key in ("masks", "scores", "category_ids"):
            if key not in predictions:
                raise YTVISInputError(f"{where}: missing '{key}' (expected masks, scores, category_ids)")
        masks = torch.as_tensor(predictions["masks"])
        scores = torch.as_tensor(predictions["scores"]).detach().double().cpu().numpy().reshape(-1)
        cats = (
            torch.as_tensor(predictions["category_ids"]).detach().cpu().numpy().astype(np.int64).reshape(-1)
        )
        n = len(scores)
        fits = masks.ndim == 4 and masks.shape[0] == n and len(cats) == n
        fits = fits and tuple(masks.shape[2:]) == (video.height, video.width)
        if not fits or (video.length is not None and masks.shape[1] != video.length):
            raise YTVISInputError(
                f"{where}: masks {tuple(masks.shape)}, {n} scores and {len(cats)} category_ids do not fit a "
                f"video of {video.length} frames of {video.height}x{video.width} (masks must be (N, T, H, W))"
            )
        if not np.isfinite(scores).all():
            raise YTVISInputError(f"{where}: scores must be finite")
        unknown = sorted(set(cats.tolist()) - set(self.categories))
        if unknown:
            raise YTVISInputError(f"{where}: category_id {unknown[0]} is not a ground-truth category")
        gt_masks = _decode_tracks(video, masks.shape[1], masks.device)
        ov = mask_overlaps(masks.detach(), cats, gt_masks, video.categories)
        return tables_from_overlaps(video, scores, cats, np.arange(n), ov)

    # ------------------------------------------------------------------ compute
    def compute(self) -> dict:
        """``{"AP": ..., ..., "ARl": ..., "per_category": {name: AP}}`` (floats; -1 where undefined)."""
        tables = self._gathered_tables()
        precision, recall = evaluate_tables(tables, self.categories)
        out: dict = summarize(precision, recall)
        out["per_category"] = per_category_ap(precision, self.categories)
        return out

    @staticmethod
    def _rows(state, cols: int) -> np.ndarray:
        if isinstance(state, list):
            state = dim_zero_cat(state) if state else torch.zeros(0)
        return state.detach().reshape(-1, cols).cpu().double().numpy()

    def _gathered_tables(self) -> EvalTables:
        det = _unique_rows(self._rows(self.det_rows, _DET), [0, 1])
        gt = _unique_rows(self._rows(self.gt_rows, _GT), [0, 1])
        pairs = _unique_rows(self._rows(self.pair_rows, _PAIR), [0, 1, 2])
        videos = np.unique(np.r_[det[:, 0], gt[:, 0]])
        width = int(max(det[:, 1].max(initial=0), gt[:, 1].max(initial=0))) + 1
        det_key = np.searchsorted(videos, det[:, 0]) * width + det[:, 1].astype(np.int64)
        gt_key = np.searchsorted(videos, gt[:, 0]) * width + gt[:, 1].astype(np.int64)
        p_vid = np.searchsorted(videos, pairs[:, 0])
        pair_det = np.searchsorted(det_key, p_vid * width + pairs[:, 1].astype(np.int64))
        pair_gt = np.searchsorted(gt_key, p_vid * width + pairs[:, 2].astype(np.int64))
        return EvalTables(
            det_video=det[:, 0].astype(np.int64),
            det_order=det[:, 1].astype(np.int64),
            det_cat=det[:, 2].astype(np.int64),
            det_score=det[:, 3],
            det_area=det[:, 4],
            gt_video=gt[:, 0].astype(np.int64),
            gt_id=gt[:, 2].astype(np.int64),
            gt_cat=gt[:, 3].astype(np.int64),
            gt_area=gt[:, 4],
            gt_crowd=gt[:, 5] > 0,
            pair_det=pair_det.astype(np.int64),
            pair_gt=pair_gt.astype(np.int64),
            pair_iou=pairs[:, 3],
        )


def _unique_rows(rows: np.ndarray, key_cols: list[int]) -> np.ndarray:
    """Rows sorted by their key columns, each key once (the first occurrence)."""
    if not len(rows):
        return rows
    order = np.lexsort(tuple(rows[:, c] for c in reversed(key_cols)))
    rows = rows[order]
    keys = rows[:, key_cols]
    first = np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)]
    return rows[first]


def _decode_tracks(video: VideoGT, n_frames: int, device) -> torch.Tensor:
    """The video's GT tracks as a (G, T, H, W) bool tensor on ``device``."""
    out = torch.zeros((len(video.ids), n_frames, video.height, video.width), dtype=torch.bool)
    where = [
        (g, t) for g, frames in enumerate(video.segmentations) for t, s in enumerate(frames) if s is not None
    ]
    if where:
        rles = [video.segmentations[g][t] for g, t in where]
        with warnings.catch_warnings():  # pycocotools under numpy 2: a harmless copy-keyword notice
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = mask_utils.decode(rles)
        decoded = torch.from_numpy(np.ascontiguousarray(decoded.transpose(2, 0, 1))).bool()
        g_idx, t_idx = (torch.as_tensor(x) for x in zip(*where))
        out[g_idx, t_idx] = decoded
    return out.to(device)
