"""Benchmark: the YTVIS metric on the 200-video x 20-frame 360x640 case with 2,000 predictions.

Prints (and returns) a markdown table: our ``evaluate_ytvis`` (median of repeats, json files
loaded inside the timing, as the official tool does) against a straightforward per-pair
implementation (decoded masks, Python loops over pairs and frames) run once, both giving the same
statistics. The official evaluator's time on this case (about 2.5 s on 2 cores) is the anchor
from ``shared/research/ytvis_metric_spec.md``.

    python benchmarks/bench_metric.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

from dvis_attn_pl.metrics import evaluate_ytvis
from dvis_attn_pl.metrics.video_ap import STAT_NAMES, VideoRecord, evaluate_records, summarize

OFFICIAL_SECONDS = 2.5


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.ogrid[:h, :w]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def _encode(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("utf-8")
    return rle


def make_case(videos=200, frames=20, h=360, w=640, categories=40, predictions=2000, seed=0):
    """Deterministic synthetic GT (about 2.5 tracks a video) and results."""
    rng = np.random.default_rng(seed)
    gt = {"videos": [], "categories": [{"id": c + 1, "name": f"c{c + 1}"} for c in range(categories)], "annotations": []}
    results = []
    ann_id = 1
    per_video_preds = predictions // videos
    for v in range(1, videos + 1):
        gt["videos"].append({"id": v, "height": h, "width": w, "length": frames, "file_names": [f"{v}/{t}.jpg" for t in range(frames)]})
        tracks = []
        for _ in range(int(rng.integers(1, 5))):
            cat = int(rng.integers(1, categories + 1))
            cy, cx = rng.uniform(60, h - 60), rng.uniform(60, w - 60)
            vy, vx = rng.normal(0, 3, 2)
            ry, rx = rng.uniform(15, 70), rng.uniform(15, 90)
            start, end = sorted(rng.integers(0, frames + 1, 2))
            end = max(end, start + 1)
            masks = [
                _ellipse(h, w, cy + vy * t, cx + vx * t, ry, rx) if start <= t < end else None for t in range(frames)
            ]
            tracks.append((cat, masks, (cy, cx, vy, vx, ry, rx, start, end)))
            segs = [None if m is None else _encode(m) for m in masks]
            areas = [None if m is None else int(m.sum()) for m in masks]
            gt["annotations"].append(
                {"id": ann_id, "video_id": v, "category_id": cat, "iscrowd": 0, "segmentations": segs, "areas": areas}
            )
            ann_id += 1
        for p in range(per_video_preds):
            if p < len(tracks) * 2:
                cat, _, (cy, cx, vy, vx, ry, rx, start, end) = tracks[p % len(tracks)]
                jitter = rng.normal(0, 6, 2)
                cat = cat if p < len(tracks) else int(rng.integers(1, categories + 1))
            else:
                cat = int(rng.integers(1, categories + 1))
                cy, cx, vy, vx = rng.uniform(40, h - 40), rng.uniform(40, w - 40), *rng.normal(0, 3, 2)
                ry, rx, start, end, jitter = rng.uniform(10, 60), rng.uniform(10, 60), 0, frames, np.zeros(2)
            segs = [
                _encode(_ellipse(h, w, cy + jitter[0] + vy * t, cx + jitter[1] + vx * t, ry, rx))
                if start <= t < end
                else _encode(np.zeros((h, w), bool))
                for t in range(frames)
            ]
            results.append({"video_id": v, "category_id": cat, "score": float(rng.uniform()), "segmentations": segs})
    return gt, results


def naive_stats(gt: dict, results: list) -> dict:
    """Per-pair reference: decode every mask, loop over pairs and frames in Python."""

    def decode(seg, h, w):
        if not seg:
            return np.zeros((h, w), bool)
        rle = {"size": seg["size"], "counts": seg["counts"].encode() if isinstance(seg["counts"], str) else seg["counts"]}
        return mask_utils.decode(rle).astype(bool)

    records = []
    for video in gt["videos"]:
        h, w, vid = video["height"], video["width"], video["id"]
        gts = [a for a in gt["annotations"] if a["video_id"] == vid]
        dts = [r for r in results if r["video_id"] == vid]
        iou = np.zeros((len(dts), len(gts)))
        for i, d in enumerate(dts):
            dm = [decode(s, h, w) for s in d["segmentations"]]
            for j, g in enumerate(gts):
                inter = union = 0
                for t, s in enumerate(g["segmentations"]):
                    gm = decode(s, h, w)
                    inter += int((dm[t] & gm).sum())
                    union += int((dm[t] | gm).sum())
                iou[i, j] = inter / union if union else 0.0
        det_area = []
        for d in dts:
            areas = [int(decode(s, h, w).sum()) for s in d["segmentations"]]
            areas = [a for a in areas if a]
            det_area.append(float(np.mean(areas)) if areas else 0.0)
        records.append(
            VideoRecord(
                video_id=vid,
                det_category=np.array([d["category_id"] for d in dts], dtype=np.int64),
                det_score=np.array([d["score"] for d in dts]),
                det_area=np.array(det_area),
                gt_id=np.array([g["id"] for g in gts], dtype=np.int64),
                gt_category=np.array([g["category_id"] for g in gts], dtype=np.int64),
                gt_area=np.array([float(np.mean([a for a in g["areas"] if a])) if any(g["areas"]) else 0.0 for g in gts]),
                gt_crowd=np.array([bool(g["iscrowd"]) for g in gts]),
                iou=iou,
            )
        )
    arrays = evaluate_records(records, sorted(c["id"] for c in gt["categories"]))
    return summarize(arrays["precision"], arrays["recall"])


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-naive", action="store_true", help="skip the slow per-pair reference")
    args = parser.parse_args(argv)
    gt, results = make_case()
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "results.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(results))
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours = evaluate_ytvis(gt_path, res_path)
            times.append(time.perf_counter() - start)
    ours_s = statistics.median(times)
    rows = [
        "| implementation | seconds | vs official (2.5 s) |",
        "|---|---|---|",
        f"| dvis_attn_pl `evaluate_ytvis` (median of {args.repeats}) | {ours_s:.3f} | {OFFICIAL_SECONDS / ours_s:.1f}x faster |",
    ]
    if not args.skip_naive:
        start = time.perf_counter()
        ref = naive_stats(gt, results)
        naive_s = time.perf_counter() - start
        agree = max(abs(ours[k] - ref[k]) for k in STAT_NAMES)
        rows.append(f"| per-pair reference (decoded masks, Python loops) | {naive_s:.2f} | {OFFICIAL_SECONDS / naive_s:.2f}x |")
        rows.append(f"\nmax |difference| of the 12 statistics, ours vs reference: {agree:.2e}; ours is {naive_s / ours_s:.0f}x faster than the reference")
    n_gt = len(gt["annotations"])
    header = (
        f"YTVIS metric, 200 videos x 20 frames x 360x640, {n_gt} GT tracks, {len(results)} predictions; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    table = header + "\n\n" + "\n".join(rows) + f"\n\nAP {ours['AP']:.4f}"
    print(table)
    return table


if __name__ == "__main__":
    main()
