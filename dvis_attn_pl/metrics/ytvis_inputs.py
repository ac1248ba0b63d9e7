"""Reading and checking YTVIS ground truth and results, and turning one video into a VideoRecord.

Every problem is a ``ValueError`` whose one-line message names the file (or ``<memory>``) and
the offending entry. Masks are never decoded: per frame, pycocotools' C routines give areas and
the IoU matrix of all detections against all GTs; intersections are recovered exactly from them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from .video_ap import VideoRecord


class YTVISInputError(ValueError):
    """A ground-truth or results file the metric cannot evaluate."""


def _load_json(obj, what: str):
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        try:
            return json.loads(path.read_text()), str(path)
        except FileNotFoundError:
            raise YTVISInputError(f"{path}: no such {what} file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise YTVISInputError(f"{path}: not valid JSON ({exc})") from None
    return obj, "<memory>"


@dataclass
class GTVideo:
    video_id: int
    height: int
    width: int
    length: int | None
    annotations: list[dict] = field(default_factory=list)


@dataclass
class GroundTruth:
    source: str
    videos: dict[int, GTVideo]
    category_ids: list[int]
    category_names: dict[int, str]


def _frame_rle(seg, h: int, w: int, where: str, allow_uncompressed: bool):
    """A present frame's segmentation as an RLE dict pycocotools accepts, or None when absent."""
    if not seg:
        return None
    if type(seg) is dict and type(seg.get("counts")) is str:  # the common case, kept lean
        size = seg.get("size")
        if size is None or len(size) != 2 or size[0] != h or size[1] != w:
            raise YTVISInputError(f"{where}: mask size {size} differs from the video's {[h, w]}")
        return seg
    if isinstance(seg, list):  # polygons
        if not allow_uncompressed:
            raise YTVISInputError(f"{where}: polygons are not accepted in results")
        try:
            return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
        except Exception as exc:  # noqa: BLE001 - pycocotools raises bare exceptions
            raise YTVISInputError(f"{where}: bad polygon ({exc})") from None
    if not isinstance(seg, Mapping) or "counts" not in seg or "size" not in seg:
        raise YTVISInputError(f"{where}: a segmentation must be an RLE dict with 'size' and 'counts'")
    if list(seg["size"]) != [h, w]:
        raise YTVISInputError(f"{where}: mask size {list(seg['size'])} differs from the video's {[h, w]}")
    counts = seg["counts"]
    if isinstance(counts, list):
        if not allow_uncompressed:
            raise YTVISInputError(f"{where}: uncompressed RLE is not accepted in results (encode it)")
        return mask_utils.frPyObjects(dict(seg), h, w)
    if isinstance(counts, (str, bytes)):
        return {"size": [h, w], "counts": counts}
    raise YTVISInputError(f"{where}: RLE counts must be a string or a list")


def load_ground_truth(gt) -> GroundTruth:
    """Parse and check a YTVIS ground-truth json (path or dict)."""
    data, source = _load_json(gt, "ground-truth")
    if not isinstance(data, Mapping):
        raise YTVISInputError(f"{source}: the ground truth must be a JSON object")
    for key in ("videos", "categories"):
        if not isinstance(data.get(key), list):
            raise YTVISInputError(f"{source}: missing or invalid '{key}' list")
    videos: dict[int, GTVideo] = {}
    for i, v in enumerate(data["videos"]):
        try:
            vid, h, w = int(v["id"]), int(v["height"]), int(v["width"])
        except (KeyError, TypeError, ValueError):
            raise YTVISInputError(f"{source}: videos[{i}] needs integer 'id', 'height' and 'width'") from None
        if vid in videos:
            raise YTVISInputError(f"{source}: duplicate video id {vid}")
        length = v.get("length")
        videos[vid] = GTVideo(vid, h, w, None if length is None else int(length))
    names = {}
    for i, c in enumerate(data["categories"]):
        try:
            cid = int(c["id"])
        except (KeyError, TypeError, ValueError):
            raise YTVISInputError(f"{source}: categories[{i}] needs an integer 'id'") from None
        if cid in names:
            raise YTVISInputError(f"{source}: duplicate category id {cid}")
        names[cid] = str(c.get("name", cid))
    seen_ids: set[int] = set()
    for i, a in enumerate(data.get("annotations") or []):
        where = f"{source}: annotations[{i}]"
        for key in ("id", "video_id", "category_id", "iscrowd", "segmentations", "areas"):
            if key not in a:
                raise YTVISInputError(f"{where}: missing '{key}'")
        aid = int(a["id"])
        if aid == 0:
            raise YTVISInputError(f"{where}: annotation id 0 is not allowed (the official evaluator never matches it)")
        if aid in seen_ids:
            raise YTVISInputError(f"{where}: duplicate annotation id {aid}")
        seen_ids.add(aid)
        vid = int(a["video_id"])
        if vid not in videos:
            raise YTVISInputError(f"{where}: video_id {vid} is not a video of the file")
        if int(a["category_id"]) not in names:
            raise YTVISInputError(f"{where}: category_id {a['category_id']} is not a category of the file")
        video = videos[vid]
        segs, areas = a["segmentations"], a["areas"]
        if not isinstance(segs, list) or not isinstance(areas, list):
            raise YTVISInputError(f"{where}: 'segmentations' and 'areas' must be lists")
        if video.length is not None and len(segs) != video.length:
            raise YTVISInputError(f"{where}: {len(segs)} segmentations for a video of {video.length} frames")
        video.annotations.append(
            {
                "id": aid,
                "category_id": int(a["category_id"]),
                "iscrowd": bool(a["iscrowd"]),
                "avg_area": _mean_truthy(areas),
                "rles": [_frame_rle(s, video.height, video.width, f"{where} frame {t}", True) for t, s in enumerate(segs)],
            }
        )
    cats = sorted(names)
    return GroundTruth(source, videos, cats, names)


def _mean_truthy(values: Sequence) -> float:
    vals = [float(x) for x in values if x]
    return float(np.mean(vals)) if vals else 0.0


def load_results(results, gt: GroundTruth) -> dict[int, list[dict]]:
    """Parse and check a results list (path or list) against ``gt``; detections grouped by video."""
    data, source = _load_json(results, "results")
    if not isinstance(data, list):
        raise YTVISInputError(f"{source}: results must be a JSON list")
    if not data:
        raise YTVISInputError(f"{source}: the results list is empty (the official evaluator cannot score it)")
    per_video: dict[int, list[dict]] = {}
    for i, r in enumerate(data):
        where = f"{source}: results[{i}]"
        if not isinstance(r, Mapping):
            raise YTVISInputError(f"{where}: each result must be an object")
        for key in ("video_id", "category_id", "score", "segmentations"):
            if key not in r:
                raise YTVISInputError(f"{where}: missing '{key}'")
        vid = int(r["video_id"])
        if vid not in gt.videos:
            raise YTVISInputError(f"{where}: video_id {vid} is not in the ground truth")
        cat = int(r["category_id"])
        if cat not in gt.category_names:
            raise YTVISInputError(f"{where}: category_id {cat} is not a ground-truth category")
        video = gt.videos[vid]
        segs = r["segmentations"]
        if not isinstance(segs, list):
            raise YTVISInputError(f"{where}: 'segmentations' must be a list")
        if video.length is not None and len(segs) != video.length:
            raise YTVISInputError(f"{where}: {len(segs)} segmentations for a video of {video.length} frames")
        try:
            score = float(r["score"])
        except (TypeError, ValueError):
            raise YTVISInputError(f"{where}: 'score' must be a number") from None
        rles = [_frame_rle(s, video.height, video.width, f"{where} frame {t}", False) for t, s in enumerate(segs)]
        per_video.setdefault(vid, []).append({"category_id": cat, "score": score, "rles": rles})
    return per_video


def _frame_table(tracks: list[dict], n_t: int) -> np.ndarray:
    """(N, T) object array of each track's per-frame RLE (None: absent or beyond its list)."""
    table = np.full((len(tracks), n_t), None, dtype=object)
    for i, track in enumerate(tracks):
        table[i, : len(track["rles"])] = track["rles"]
    return table


def _areas(table: np.ndarray) -> np.ndarray:
    """(N, T) pixel counts of an RLE table (0 where absent), one pycocotools call."""
    present = table != None  # noqa: E711 - elementwise test on an object array
    areas = np.zeros(table.shape, dtype=np.float64)
    rles = list(table[present])
    if rles:  # pycocotools' area() overflows on lists of 256 or more: call it in chunks
        areas[present] = np.concatenate([mask_utils.area(rles[i : i + 255]) for i in range(0, len(rles), 255)])
    return areas


def video_record(video: GTVideo, dets: list[dict]) -> VideoRecord:
    """IoUs, areas and categories of one video (masks never decoded)."""
    gts = video.annotations
    n_d, n_g = len(dets), len(gts)
    n_t = max([len(d["rles"]) for d in dets] + [len(g["rles"]) for g in gts] + [0])
    d_table, g_table = _frame_table(dets, n_t), _frame_table(gts, n_t)
    d_areas, g_areas = _areas(d_table), _areas(g_table)
    inter = np.zeros((n_d, n_g), dtype=np.float64)
    d_cat = np.array([d["category_id"] for d in dets], dtype=np.int64)
    g_cat = np.array([g["category_id"] for g in gts], dtype=np.int64)
    d_rows = np.nonzero(np.isin(d_cat, g_cat))[0]  # only same-category pairs are ever used
    g_cols = np.nonzero(np.isin(g_cat, d_cat))[0]
    if len(d_rows) and len(g_cols):
        d_present = d_table[d_rows] != None  # noqa: E711 - elementwise test on an object array
        g_present = g_table[g_cols] != None  # noqa: E711
        for t in np.nonzero(d_present.any(axis=0) & g_present.any(axis=0))[0]:
            d_idx = d_rows[d_present[:, t]]
            g_idx = g_cols[g_present[:, t]]
            iou = np.asarray(mask_utils.iou(list(d_table[d_idx, t]), list(g_table[g_idx, t]), [0] * len(g_idx)))
            iou = np.where(np.isfinite(iou), iou, 0.0)
            total = d_areas[d_idx, t][:, None] + g_areas[g_idx, t][None, :]
            inter[np.ix_(d_idx, g_idx)] += np.rint(iou * total / (1.0 + iou))
    union = d_areas.sum(axis=1)[:, None] + g_areas.sum(axis=1)[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    counted = d_areas > 0
    det_area = np.divide(
        d_areas.sum(axis=1), counted.sum(axis=1), out=np.zeros(n_d), where=counted.sum(axis=1) > 0
    )
    return VideoRecord(
        video_id=video.video_id,
        det_category=d_cat,
        det_score=np.array([d["score"] for d in dets], dtype=np.float64),
        det_area=det_area,
        gt_id=np.array([g["id"] for g in gts], dtype=np.int64),
        gt_category=g_cat,
        gt_area=np.array([g["avg_area"] for g in gts], dtype=np.float64),
        gt_crowd=np.array([g["iscrowd"] for g in gts], dtype=bool),
        iou=iou,
    )
