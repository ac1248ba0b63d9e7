"""``YTVISMetric``: the YTVIS video mask AP as a ``torchmetrics.Metric`` (states synced across ranks).

``update`` takes one video: its result records (the ``results.json`` form, dataset category ids,
one RLE per frame) and the dataset item holding that video's ground truth (``annotations`` as the
data layer provides them). Each video is reduced at once to a few compact rows — per detection
(video, file order, category, score, average area), per GT (video, id, category, area, crowd),
and per overlapping (detection, GT) pair of one category its video IoU — so no mask is kept and
syncing ranks moves only these rows. ``compute`` rebuilds the per-video records and runs the
same accumulation as :func:`dvis_attn_pl.metrics.evaluate_ytvis`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from .video_ap import STAT_NAMES, VideoRecord, evaluate_records, per_category_ap, summarize
from .ytvis_inputs import GTVideo, YTVISInputError, _frame_rle, _mean_truthy, video_record

_DET_COLS, _GT_COLS, _PAIR_COLS = 5, 5, 4


class YTVISMetric(Metric):
    """The 12 YTVIS statistics and per-category AP over the videos seen by all ranks."""

    full_state_update = False
    higher_is_better = True

    def __init__(self, categories: Sequence[Mapping], **kwargs) -> None:
        super().__init__(**kwargs)
        self.category_ids = sorted(int(c["id"]) for c in categories)
        self.category_names = {int(c["id"]): str(c.get("name", c["id"])) for c in categories}
        self.add_state("det_rows", default=[], dist_reduce_fx="cat")
        self.add_state("gt_rows", default=[], dist_reduce_fx="cat")
        self.add_state("pair_rows", default=[], dist_reduce_fx="cat")

    def update(self, records: Sequence[Mapping], video: Mapping) -> None:
        """Add one video: ``records`` are its predictions, ``video`` the dataset item with GT."""
        vid = int(video["video_id"])
        h, w = int(video["height"]), int(video["width"])
        length = int(video.get("length") or len(video["image"]))
        gt_video = GTVideo(vid, h, w, length)
        for i, ann in enumerate(video.get("annotations") or []):
            where = f"video {vid} annotation {i}"
            if int(ann["id"]) == 0:
                raise YTVISInputError(f"{where}: annotation id 0 is not allowed")
            gt_video.annotations.append(
                {
                    "id": int(ann["id"]),
                    "category_id": int(ann["category_id"]),
                    "iscrowd": bool(ann.get("iscrowd", 0)),
                    "avg_area": _mean_truthy(ann.get("areas") or []),
                    "rles": [_frame_rle(s, h, w, f"{where} frame {t}", True) for t, s in enumerate(ann["segmentations"])],
                }
            )
        dets = []
        for i, r in enumerate(records):
            if int(r["category_id"]) not in self.category_names:
                raise YTVISInputError(f"video {vid} prediction {i}: unknown category_id {r['category_id']}")
            if len(r["segmentations"]) != length:
                raise YTVISInputError(f"video {vid} prediction {i}: {len(r['segmentations'])} segmentations for {length} frames")
            rles = [_frame_rle(s, h, w, f"video {vid} prediction {i} frame {t}", False) for t, s in enumerate(r["segmentations"])]
            dets.append({"category_id": int(r["category_id"]), "score": float(r["score"]), "rles": rles})
        rec = video_record(gt_video, dets)
        n_d, n_g = len(dets), len(gt_video.annotations)
        det = np.stack([np.full(n_d, vid), np.arange(n_d), rec.det_category, rec.det_score, rec.det_area], axis=1)
        gt = np.stack([np.full(n_g, vid), rec.gt_id, rec.gt_category, rec.gt_area, rec.gt_crowd], axis=1)
        d_i, g_i = np.nonzero((rec.iou > 0) & (rec.det_category[:, None] == rec.gt_category[None, :]))
        pairs = np.stack([np.full(len(d_i), vid), d_i, g_i, rec.iou[d_i, g_i]], axis=1)
        for state, rows, cols in ((self.det_rows, det, _DET_COLS), (self.gt_rows, gt, _GT_COLS), (self.pair_rows, pairs, _PAIR_COLS)):
            state.append(torch.as_tensor(rows.reshape(-1, cols), dtype=torch.float64, device=self.device))

    def _rows(self, state, cols: int) -> np.ndarray:
        if isinstance(state, torch.Tensor):
            return state.reshape(-1, cols).cpu().numpy()
        if not state:
            return np.zeros((0, cols))
        return dim_zero_cat(state).reshape(-1, cols).cpu().numpy()

    def compute(self) -> dict:
        """``{"AP": ..., ..., "ARl": ..., "per_category": {name: AP}}`` (floats; -1 where undefined)."""
        det, gt, pairs = (
            self._rows(self.det_rows, _DET_COLS),
            self._rows(self.gt_rows, _GT_COLS),
            self._rows(self.pair_rows, _PAIR_COLS),
        )
        records = []
        for vid in np.unique(np.concatenate([det[:, 0], gt[:, 0]])):
            d = det[det[:, 0] == vid]
            d = d[np.argsort(d[:, 1], kind="stable")]
            g = gt[gt[:, 0] == vid]
            p = pairs[pairs[:, 0] == vid]
            iou = np.zeros((len(d), len(g)))
            iou[p[:, 1].astype(int), p[:, 2].astype(int)] = p[:, 3]
            records.append(
                VideoRecord(
                    video_id=int(vid),
                    det_category=d[:, 2].astype(np.int64),
                    det_score=d[:, 3],
                    det_area=d[:, 4],
                    gt_id=g[:, 1].astype(np.int64),
                    gt_category=g[:, 2].astype(np.int64),
                    gt_area=g[:, 3],
                    gt_crowd=g[:, 4].astype(bool),
                    iou=iou,
                )
            )
        arrays = evaluate_records(records, self.category_ids)
        stats = summarize(arrays["precision"], arrays["recall"])
        out: dict = {name: stats[name] for name in STAT_NAMES}
        aps = per_category_ap(arrays["precision"], self.category_ids)
        out["per_category"] = {self.category_names[c]: ap for c, ap in aps.items()}
        return out
