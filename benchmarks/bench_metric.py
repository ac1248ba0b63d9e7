"""Benchmark: the YTVIS video mask AP on 200 videos x 20 frames x 360x640 with 2,000 predictions.

Generates the case deterministically (moving elliptical tracks; GT as uncompressed RLE like the
YTVIS releases, predictions as compressed RLE for every frame like the Mask2Former/DVIS writer),
then times ``dvis_attn_pl.metrics.evaluate_ytvis`` (median of repeats; from the json files, as the
official tool runs, and from already-loaded json) against :func:`naive_evaluate`, a plain
per-pair implementation written here from the spec (decoded masks, Python loops over pairs,
frames, thresholds and detections), checks that both give the same 12 statistics and prints a
markdown table and the time of each stage of ``evaluate_ytvis``. With ``--official DIR`` (a
folder holding the official ``ytvos.py`` and ``ytvoseval.py``: ``PythonAPI/pycocotools`` of
``youtubevos/cocoapi``, or the ``ytvis_api`` copy that Mask2Former/DVIS vendor) the official evaluator runs side by side in the same process on the
same files, with the mechanical patches Mask2Former applies for current numpy, and the statistics
are compared; without it the ratio uses the 2.5 s anchor from
``shared/research/ytvis_metric_spec.md``.

    python benchmarks/bench_metric.py [--repeats 5] [--skip-naive] [--official DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import types
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

OFFICIAL_SECONDS = 2.5
STATS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


# ------------------------------------------------------------------ the synthetic case
def _ellipse_counts(h: int, w: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    """Uncompressed COCO RLE counts (column-major runs) of a filled ellipse, built per column."""
    x = np.arange(w)
    d = 1.0 - ((x - cx) / rx) ** 2
    half = ry * np.sqrt(np.clip(d, 0.0, None))
    y0 = np.clip(np.ceil(cy - half), 0, h).astype(np.int64)
    y1 = np.clip(np.floor(cy + half) + 1, 0, h).astype(np.int64)
    on = (d >= 0) & (y1 > y0)
    if not on.any():
        return np.array([h * w], dtype=np.int64)
    bounds = np.empty(2 * int(on.sum()) + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, h * w
    bounds[1:-1:2] = x[on] * h + y0[on]
    bounds[2:-1:2] = x[on] * h + y1[on]
    counts = np.diff(bounds)
    if counts[-1] == 0:
        counts = counts[:-1]
    while (counts[1:] == 0).any():  # a run reaching a column's end meets one at the next column's top
        k = int(np.nonzero(counts[1:] == 0)[0][0]) + 1
        merged = counts[k - 1] + (counts[k + 1] if k + 1 < len(counts) else 0)
        counts = np.r_[counts[: k - 1], merged, counts[k + 2 :]]
    return counts


def _compress(counts_list: list[np.ndarray], h: int, w: int) -> list[dict]:
    rles = mask_utils.frPyObjects([{"size": [h, w], "counts": c} for c in counts_list], h, w)
    return [{"size": [h, w], "counts": r["counts"].decode("ascii")} for r in rles]


def make_case(videos=200, frames=20, height=360, width=640, categories=40, predictions=2000, seed=0):
    """Deterministic synthetic ``(gt, results)``: about 2.5 GT tracks per video (some absent in
    part of the video), ``predictions // videos`` predictions per video: jittered copies of the
    tracks (right and random categories) and random distractors, every frame encoded."""
    rng = np.random.default_rng(seed)
    h, w = height, width
    gt = {
        "videos": [],
        "categories": [
            {"id": c, "name": f"species_{c}", "supercategory": "fish"} for c in range(1, categories + 1)
        ],
        "annotations": [],
    }
    results: list[dict] = []
    per_video = predictions // videos
    for v in range(1, videos + 1):
        gt["videos"].append(
            {
                "id": v,
                "height": h,
                "width": w,
                "length": frames,
                "file_names": [f"{v:05d}/{t:05d}.jpg" for t in range(frames)],
            }
        )
        tracks = []
        for _ in range(int(rng.integers(1, 5))):
            cat = int(rng.integers(1, categories + 1))
            cy, cx = rng.uniform(60, h - 60), rng.uniform(60, w - 60)
            vy, vx = rng.normal(0, 3, 2)
            ry, rx = rng.uniform(8, 70), rng.uniform(8, 90)
            start = int(rng.integers(0, frames))
            end = int(rng.integers(start + 1, frames + 1))
            tracks.append((cat, cy, cx, vy, vx, ry, rx, start, end))
            counts = [_ellipse_counts(h, w, cy + vy * t, cx + vx * t, ry, rx) for t in range(frames)]
            present = [start <= t < end for t in range(frames)]
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "video_id": v,
                    "category_id": cat,
                    "iscrowd": 0,
                    "segmentations": [
                        {"size": [h, w], "counts": c.tolist()} if p else None for c, p in zip(counts, present)
                    ],
                    "areas": [int(c[1::2].sum()) if p else None for c, p in zip(counts, present)],
                    "bboxes": [None] * frames,
                }
            )
        for p in range(per_video):
            if p < 2 * len(tracks):
                cat, cy, cx, vy, vx, ry, rx, start, end = tracks[p % len(tracks)]
                cy, cx = cy + rng.normal(0, 5), cx + rng.normal(0, 5)
                ry, rx = ry * rng.uniform(0.8, 1.2), rx * rng.uniform(0.8, 1.2)
                if p >= len(tracks):
                    cat = int(rng.integers(1, categories + 1))
            else:
                cat = int(rng.integers(1, categories + 1))
                cy, cx = rng.uniform(40, h - 40), rng.uniform(40, w - 40)
                vy, vx = rng.normal(0, 3, 2)
                ry, rx, start, end = rng.uniform(8, 60), rng.uniform(8, 60), 0, frames
            counts = [
                _ellipse_counts(h, w, cy + vy * t, cx + vx * t, ry, rx)
                if start <= t < end
                else np.array([h * w])
                for t in range(frames)
            ]
            results.append(
                {
                    "video_id": v,
                    "score": float(rng.uniform()),
                    "category_id": cat,
                    "segmentations": _compress(counts, h, w),
                }
            )
    return gt, results


# ------------------------------------------------------------------ the naive reference
def _decode(seg, h: int, w: int) -> np.ndarray | None:
    """One frame entry as a bool (h, w) mask, or None when absent (falsy)."""
    if not seg:
        return None
    if isinstance(seg, list):  # polygons
        rle = mask_utils.merge(mask_utils.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_utils.frPyObjects(seg, h, w)
    else:
        rle = seg
    with warnings.catch_warnings():  # pycocotools under numpy 2: a harmless copy-keyword notice
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(rle).astype(bool)


def _video_iou(d_masks: list, g_masks: list) -> float:
    inter = union = 0
    for dm, gm in zip(d_masks, g_masks):
        if dm is not None and gm is not None:
            inter += int(np.logical_and(dm, gm).sum())
            union += int(np.logical_or(dm, gm).sum())
        elif gm is not None:
            union += int(gm.sum())
        elif dm is not None:
            union += int(dm.sum())
    return inter / union if union > 0 else 0.0


def _mean_truthy(values) -> float:
    kept = [a for a in values if a]
    return float(np.mean(kept)) if kept else 0.0


def _match(dts: list, gts: list, ious: np.ndarray, lo: float, hi: float, thrs) -> dict:
    """One (video, category, area range): per threshold, which detections are TP / ignored."""
    gt_ignore = [bool(g["iscrowd"]) or g["avg_area"] < lo or g["avg_area"] > hi for g in gts]
    g_order = sorted(range(len(gts)), key=lambda j: gt_ignore[j])  # stable: non-ignored first
    n_t, n_d = len(thrs), len(dts)
    dt_match = np.zeros((n_t, n_d), dtype=bool)
    dt_ignore = np.zeros((n_t, n_d), dtype=bool)
    for ti, thr in enumerate(thrs):
        gt_taken = [False] * len(gts)
        for di in range(n_d):
            best, m = min(thr, 1 - 1e-10), -1
            for j in g_order:
                if gt_taken[j] and not gts[j]["iscrowd"]:
                    continue
                if m > -1 and not gt_ignore[m] and gt_ignore[j]:
                    break
                if ious[di, j] < best:
                    continue
                best, m = ious[di, j], j
            if m > -1:
                dt_match[ti, di] = True
                dt_ignore[ti, di] = gt_ignore[m]
                gt_taken[m] = True
        for di, d in enumerate(dts):
            if not dt_match[ti, di] and (d["avg_area"] < lo or d["avg_area"] > hi):
                dt_ignore[ti, di] = True
    return {
        "match": dt_match,
        "ignore": dt_ignore,
        "scores": [d["score"] for d in dts],
        "npig": gt_ignore.count(False),
    }


def naive_evaluate(gt: dict, results: list) -> dict[str, float]:
    """The 12 statistics by a direct, loop-based reading of the spec (slow; a cross-check)."""
    thrs = np.linspace(0.5, 0.95, 10)
    rec_thrs = np.linspace(0.0, 1.0, 101)
    ranges = [(0, 1e10), (0, 128**2), (128**2, 256**2), (256**2, 1e10)]
    max_dets = (1, 10, 100)
    cat_ids = sorted(c["id"] for c in gt["categories"])
    videos = sorted(gt["videos"], key=lambda v: v["id"])
    records: dict = {}  # (k, a) -> list of per-video evaluations, in video id order
    for video in videos:
        vid, h, w = video["id"], video["height"], video["width"]
        for cat in cat_ids:
            gts = [a for a in gt["annotations"] if a["video_id"] == vid and a["category_id"] == cat]
            dts = [
                dict(r, order=i)
                for i, r in enumerate(results)
                if r["video_id"] == vid and r["category_id"] == cat
            ]
            if not gts and not dts:
                continue
            dts = sorted(dts, key=lambda d: -d["score"])[:100]  # stable
            g_masks = [[_decode(s, h, w) for s in g["segmentations"]] for g in gts]
            g_info = [{"iscrowd": g["iscrowd"], "avg_area": _mean_truthy(g["areas"])} for g in gts]
            d_info, ious = [], np.zeros((len(dts), len(gts)))
            for i, d in enumerate(dts):
                d_masks = [_decode(s, h, w) for s in d["segmentations"]]
                areas = [None if m is None else int(m.sum()) for m in d_masks]
                d_info.append({"score": d["score"], "avg_area": _mean_truthy(areas)})
                for j in range(len(gts)):
                    ious[i, j] = _video_iou(d_masks, g_masks[j])
            for a, (lo, hi) in enumerate(ranges):
                records.setdefault((cat, a), []).append(_match(d_info, g_info, ious, lo, hi, thrs))
    precision = -np.ones((len(thrs), len(rec_thrs), len(cat_ids), len(ranges), len(max_dets)))
    recall = -np.ones((len(thrs), len(cat_ids), len(ranges), len(max_dets)))
    for k, cat in enumerate(cat_ids):
        for a in range(len(ranges)):
            evals = records.get((cat, a), [])
            npig = sum(e["npig"] for e in evals)
            if not evals or npig == 0:
                continue
            for m, max_det in enumerate(max_dets):
                scores = np.concatenate([e["scores"][:max_det] for e in evals] + [np.zeros(0)])
                order = np.argsort(-scores, kind="mergesort")
                match = np.concatenate(
                    [e["match"][:, :max_det] for e in evals] + [np.zeros((len(thrs), 0), bool)], axis=1
                )[:, order]
                ignore = np.concatenate(
                    [e["ignore"][:, :max_det] for e in evals] + [np.zeros((len(thrs), 0), bool)], axis=1
                )[:, order]
                for t in range(len(thrs)):
                    tp = np.cumsum(match[t] & ~ignore[t]).astype(float)
                    fp = np.cumsum(~match[t] & ~ignore[t]).astype(float)
                    n = len(tp)
                    rc = tp / npig
                    pr = list(tp / (fp + tp + np.spacing(1)))
                    recall[t, k, a, m] = rc[-1] if n else 0.0
                    for i in range(n - 1, 0, -1):
                        pr[i - 1] = max(pr[i - 1], pr[i])
                    q = np.zeros(len(rec_thrs))
                    for r, i in enumerate(np.searchsorted(rc, rec_thrs, side="left")):
                        if i >= n:
                            break
                        q[r] = pr[i]
                    precision[t, :, k, a, m] = q

    def mean(x):
        x = x[x > -1]
        return float(np.mean(x)) if x.size else -1.0

    p, r = precision, recall
    return dict(zip(STATS, [
        mean(p[:, :, :, 0, 2]), mean(p[0, :, :, 0, 2]), mean(p[5, :, :, 0, 2]),
        mean(p[:, :, :, 1, 2]), mean(p[:, :, :, 2, 2]), mean(p[:, :, :, 3, 2]),
        mean(r[:, :, 0, 0]), mean(r[:, :, 0, 1]), mean(r[:, :, 0, 2]),
        mean(r[:, :, 1, 2]), mean(r[:, :, 2, 2]), mean(r[:, :, 3, 2]),
    ]))  # fmt: skip


# ------------------------------------------------------------------ timing
def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    try:
        coco = metadata.version("pycocotools")
    except metadata.PackageNotFoundError:
        coco = "?"
    return f"{model}, {os.cpu_count()} cores{load}; Python {platform.python_version()}, numpy {np.__version__}, pycocotools {coco}"


# ------------------------------------------------------------------ the official evaluator
_OFFICIAL_PATCHES = (  # what Mask2Former's vendored copy changes to run on numpy >= 1.24 / Python 3
    ("from . import mask as maskUtils", "from pycocotools import mask as maskUtils"),
    ("np.round((0.95 - .5) / .05) + 1", "int(np.round((0.95 - .5) / .05)) + 1"),
    ("np.round((1.00 - .0) / .01) + 1", "int(np.round((1.00 - .0) / .01)) + 1"),
    ("dtype=np.float)", "dtype=float)"),
    ("type(resFile) == unicode", "False"),
)


def load_official(folder: Path) -> tuple[type, type]:
    """``(YTVOS, YTVOSeval)`` from the official files in ``folder``, patched in memory."""
    classes = []
    package = types.ModuleType("ytvis_official")
    package.__path__ = []
    sys.modules.setdefault("ytvis_official", package)
    for name, cls in (("ytvos", "YTVOS"), ("ytvoseval", "YTVOSeval")):
        source = (Path(folder) / f"{name}.py").read_text()
        for old, new in _OFFICIAL_PATCHES:
            source = source.replace(old, new)
        spec = importlib.util.spec_from_loader(f"ytvis_official.{name}", loader=None)
        module = importlib.util.module_from_spec(spec)
        exec(compile(source, str(Path(folder) / f"{name}.py"), "exec"), module.__dict__)
        classes.append(getattr(module, cls))
    return classes[0], classes[1]


def official_evaluate(ytvos: type, ytvoseval: type, gt_path: Path, res_path: Path) -> dict[str, float]:
    """The official run (loading both files included), its prints swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = ytvos(str(gt_path))
        dt = gt.loadRes(str(res_path))
        ev = ytvoseval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(STATS, (float(x) for x in ev.stats)))


def _timed(fn, repeats: int) -> tuple[float, float, object]:
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def stage_seconds(gt_path: Path, res_path: Path, repeats: int = 5) -> dict[str, float]:
    """Where ``evaluate_ytvis`` spends its time: best of ``repeats`` per stage, in the order it runs
    them (json parsing, ground-truth checks, results checks, overlaps, matching and accumulation)."""
    from dvis_attn_pl.metrics import ytvis_eval, ytvis_io

    def best(fn):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return min(times), out

    with ytvis_io.gc_paused():
        seconds: dict[str, float] = {}
        seconds["json parsing (both files)"], (gt, res) = best(
            lambda: (ytvis_io.read_json(gt_path, "gt")[0], ytvis_io.read_json(res_path, "results")[0])
        )
        seconds["ground truth: checks and RLE decoding"], truth = best(lambda: ytvis_io.load_ground_truth(gt))
        seconds["results: checks and RLE decoding"], dets = best(lambda: ytvis_io.load_results(res, truth))
        videos, per_video = list(truth.videos.values()), [dets.get(v) for v in truth.videos]
        seconds["overlaps (pycocotools iou per video)"], tables = best(lambda: ytvis_eval.build_tables(videos, per_video))
        seconds["matching, accumulation, summary"], _ = best(
            lambda: ytvis_eval.summarize(*ytvis_eval.evaluate_tables(tables, truth.category_ids))
        )
    return seconds


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--skip-naive", action="store_true", help="skip the slow per-pair reference")
    parser.add_argument("--official", type=Path, help="folder with the official ytvos.py and ytvoseval.py")
    args = parser.parse_args(argv)
    from dvis_attn_pl.metrics import evaluate_ytvis

    gt, results = make_case()
    rows, timings = [], {}
    classes = load_official(args.official) if args.official else None
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "results.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(results))
        official = None
        for _ in range(args.repeats):  # interleaved, so both see the same machine load
            ours_run = _timed(lambda: evaluate_ytvis(gt_path, res_path), 1)
            timings.setdefault("ours", []).append(ours_run[:2])
            if args.official:
                official = _timed(lambda: official_evaluate(*classes, gt_path, res_path), 1)
                timings.setdefault("official", []).append(official[:2])
        ours = ours_run[2]
        wall, cpu = ours_wall, ours_cpu = tuple(statistics.median(x) for x in zip(*timings["ours"]))
        rows.append((f"`evaluate_ytvis(paths)` (json parsing included), median of {args.repeats}", wall, cpu))
    wall, cpu, _ = _timed(lambda: evaluate_ytvis(gt, results), args.repeats)
    rows.append((f"`evaluate_ytvis(loaded json)`, median of {args.repeats}", wall, cpu))
    agree = ""
    if official is not None:
        o_wall, o_cpu = (statistics.median(x) for x in zip(*timings["official"]))
        ratios = [o[0] / m[0] for o, m in zip(timings["official"], timings["ours"])]
        rows.append(("official evaluator (youtubevos/cocoapi, patched as Mask2Former), same runs", o_wall, o_cpu))
        diff = max(abs(ours[k] - official[2][k]) for k in STATS)
        agree += (
            f"\nofficial evaluator (same process, interleaved runs): wall {o_wall:.3f} s, CPU {o_cpu:.3f} s; "
            f"official / ours wall: median {statistics.median(ratios):.1f}x (range {min(ratios):.1f}-{max(ratios):.1f}x), "
            f"CPU {o_cpu / ours_cpu:.1f}x; max |difference| of the 12 statistics: {diff:.1e}"
        )
    if not args.skip_naive:
        wall, cpu, ref = _timed(lambda: naive_evaluate(gt, results), 1)
        rows.append(("naive per-pair reference (decoded masks, Python loops), 1 run", wall, cpu))
        diff = max(abs(ours[k] - ref[k]) for k in STATS)
        agree += f"\nmax |difference| of the 12 statistics, evaluate_ytvis vs naive reference: {diff:.1e}"
    lines = [
        f"YTVIS metric benchmark: {len(gt['videos'])} videos x 20 frames x 360x640, {len(gt['categories'])} categories, "
        f"{len(gt['annotations'])} GT tracks, {len(results)} predictions",
        f"machine: {_machine()}",
        "",
        "| implementation | wall s | CPU s | 2.5 s (official) / wall | 2.5 s / CPU | naive CPU / CPU |",
        "|---|---|---|---|---|---|",
    ]
    naive_cpu = next((cpu for name, _, cpu in rows if name.startswith("naive")), None)
    for name, wall, cpu in rows:
        vs_naive = f"{naive_cpu / cpu:.0f}x" if naive_cpu else "-"
        lines.append(
            f"| {name} | {wall:.3f} | {cpu:.3f} | {OFFICIAL_SECONDS / wall:.1f}x | {OFFICIAL_SECONDS / cpu:.1f}x | {vs_naive} |"
        )
    lines.append("(CPU s = process time; on a shared machine wall time also counts other processes' turns)")
    with tempfile.TemporaryDirectory() as tmp:
        gt_path, res_path = Path(tmp) / "gt.json", Path(tmp) / "results.json"
        gt_path.write_text(json.dumps(gt))
        res_path.write_text(json.dumps(results))
        stages = stage_seconds(gt_path, res_path, args.repeats)
    agree += "\nwhere evaluate_ytvis spends its time (best of each stage): " + "; ".join(
        f"{name} {sec:.3f} s" for name, sec in stages.items()
    )
    table = "\n".join(lines) + agree + f"\nAP = {ours['AP']:.4f}"
    print(table)
    return table


if __name__ == "__main__":
    main()
