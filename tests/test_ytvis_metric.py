"""The YTVIS metric: official vectors, hand-computed cases, a randomised cross-check against the
naive per-pair reference of the benchmark, input errors, and the torchmetrics class (split vs
whole, mask tensors vs RLE, a real 2-process gloo sync)."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from dvis_attn_pl.metrics import (
    STAT_NAMES,
    YTVISInputError,
    YTVISMetric,
    evaluate_ytvis,
    ytvis_eval,
    ytvis_overlap,
)
from dvis_attn_pl.metrics.ytvis_eval import REC_THRS, build_tables, summary_lines
from dvis_attn_pl.metrics.ytvis_io import load_ground_truth, load_results
from dvis_attn_pl.metrics.ytvis_metric import ground_truth_items
from tests.shared_data import SHARED, require_shared

ROOT = Path(__file__).resolve().parents[1]
VECTORS = SHARED / "ytvis_vectors"
REJECTED = {  # quirk / official-error cases we reject, with a phrase of the message
    "case_019": "segmentations for video 1 of 4 frames",
    "case_020": "category_id 77 is not a ground-truth category",
    "case_021": "annotation id 0 is not allowed",
    "case_023": "video_id 99 is not in the ground truth",
    "case_024": "results list is empty",
}


def _bench():
    spec = importlib.util.spec_from_file_location("bench_metric", ROOT / "benchmarks" / "bench_metric.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


naive_evaluate = _bench().naive_evaluate


def vector_cases() -> list[str]:
    return sorted(p.name[:8] for p in VECTORS.glob("case_*_expected.json")) if VECTORS.is_dir() else []


def load_case(case: str):
    return (
        json.loads((VECTORS / f"{case}_gt.json").read_text()),
        json.loads((VECTORS / f"{case}_pred.json").read_text()),
        json.loads((VECTORS / f"{case}_expected.json").read_text()),
    )


# ------------------------------------------------------------------ official vectors
@pytest.mark.parametrize("case", vector_cases())
def test_official_vectors(case):
    expected = json.loads((VECTORS / f"{case}_expected.json").read_text())
    gt, pred = VECTORS / f"{case}_gt.json", VECTORS / f"{case}_pred.json"
    if case in REJECTED:
        with pytest.raises(ValueError, match=REJECTED[case]) as info:
            evaluate_ytvis(gt, pred)
        message = str(info.value)
        assert "\n" not in message and f"{case}_" in message and ".json" in message
        return
    assert expected["error"] is None, "an official error case must be listed in REJECTED"
    got = evaluate_ytvis(gt, pred, per_category=True)
    assert list(got)[:12] == list(STAT_NAMES)
    for name, value in zip(STAT_NAMES, expected["stats"]):
        assert got[name] == pytest.approx(value, abs=1e-6), name
    aps = list(got["per_category"].values())  # categories in ascending id order, as expected lists them
    for entry, ap in zip(expected["per_category"], aps):
        assert ap == pytest.approx(entry["ap"], abs=1e-6), entry["category_id"]
    assert summary_lines(got) == expected["summary_lines"]


@pytest.mark.parametrize("case", [c for c in vector_cases() if c not in REJECTED])
def test_official_video_ious(case):
    """Every (prediction, GT) IoU the official evaluator computed, to 1e-12."""
    gt, pred, expected = load_case(case)
    truth = load_ground_truth(gt)
    dets = load_results(pred, truth) if pred else {}
    tab = build_tables(list(truth.videos.values()), [dets.get(v) for v in truth.videos])
    ours = {
        (int(tab.det_order[d]), int(tab.gt_id[g])): iou
        for d, g, iou in zip(tab.pair_det, tab.pair_gt, tab.pair_iou)
    }
    checked = 0
    for block in expected["ious"]:
        for i, row in zip(block["pred_indices"], block["iou"]):
            for gt_id, iou in zip(block["gt_ids"], row):
                assert ours.get((i, gt_id), 0.0) == pytest.approx(iou, abs=1e-12), (i, gt_id)
                checked += 1
    assert checked or not expected["ious"]


@pytest.mark.parametrize("case", [c for c in vector_cases() if c not in REJECTED])
def test_official_per_category_arrays(case):
    """Recall for every (IoU, area, maxDets) and the precision curve (area all, 100) per category;
    ``full=True`` also fills precision at maxDets 1 and 10 and changes nothing else."""
    gt, pred, expected = load_case(case)
    truth = load_ground_truth(gt)
    dets = load_results(pred, truth)
    tab = build_tables(list(truth.videos.values()), [dets.get(v) for v in truth.videos])
    precision, recall = ytvis_eval.evaluate_tables(tab, truth.category_ids)
    for k, entry in enumerate(expected["per_category"]):
        assert recall[:, k] == pytest.approx(np.array(entry["recall"]), abs=1e-12)
        curve = entry["precision_all_100"]  # None: no GT in that category
        assert precision[:, :, k, 0, -1] == pytest.approx(
            -1.0 if curve is None else np.array(curve), abs=1e-12
        )
    full_p, full_r = ytvis_eval.evaluate_tables(tab, truth.category_ids, full=True)
    assert np.array_equal(full_r, recall) and np.array_equal(full_p[..., -1], precision[..., -1])
    assert (full_p[..., :2][precision[..., :2] > -1] == precision[..., :2][precision[..., :2] > -1]).all()


def test_vectors_present():
    require_shared(VECTORS, "official metric vectors (shared/ytvis_vectors)")
    assert len(vector_cases()) >= 25


# ------------------------------------------------------------------ small hand-made cases
H, W = 20, 30


def rle(mask: np.ndarray) -> dict:
    out = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(out["size"]), "counts": out["counts"].decode()}


def box(y0, y1, x0, x1, h=H, w=W) -> np.ndarray:
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def make_gt(tracks, categories=(1, 2), frames=3, videos=(1,), h=H, w=W, uncompressed=True):
    """``tracks``: (video, category, [mask or None per frame], iscrowd)."""
    anns = []
    for i, (vid, cat, masks, crowd) in enumerate(tracks, start=1):
        segs = []
        for m in masks:
            if m is None:
                segs.append(None)
            elif uncompressed:
                segs.append({"size": [h, w], "counts": _counts(m)})
            else:
                segs.append(rle(m))
        anns.append(
            {
                "id": i,
                "video_id": vid,
                "category_id": cat,
                "iscrowd": int(crowd),
                "segmentations": segs,
                "areas": [None if m is None else int(m.sum()) for m in masks],
            }
        )
    return {
        "videos": [{"id": v, "height": h, "width": w, "length": frames} for v in videos],
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
        "annotations": anns,
    }


def _counts(mask: np.ndarray) -> list[int]:
    """Uncompressed COCO RLE counts (column-major runs, starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.int8)
    counts = np.diff(np.r_[0, np.nonzero(np.diff(flat))[0] + 1, len(flat)]).tolist()
    return [0, *counts] if flat[0] else counts


def pred(vid, cat, score, masks) -> dict:
    return {
        "video_id": vid,
        "category_id": cat,
        "score": score,
        "segmentations": [None if m is None else rle(m) for m in masks],
    }


def test_uncompressed_helper_matches_pycocotools():
    m = box(2, 9, 3, 11)
    assert (
        mask_utils.frPyObjects({"size": [H, W], "counts": _counts(m)}, H, W)["counts"].decode()
        == rle(m)["counts"]
    )


def test_perfect_prediction_scores_one():
    track = [box(2, 8, 3, 9), box(3, 9, 4, 10), None]
    gt = make_gt([(1, 1, track, False)])
    stats = evaluate_ytvis(gt, [pred(1, 1, 0.9, [m if m is not None else box(0, 0, 0, 0) for m in track])])
    # precision is TP / (TP + FP + eps), so a perfect score is 1 - 2e-16, as officially
    assert [stats[k] for k in ("AP", "AP50", "APs", "AR1", "AR100")] == pytest.approx([1.0] * 5, abs=1e-15)
    assert stats["APm"] == -1.0 and stats["APl"] == -1.0 and stats["ARl"] == -1.0  # no medium/large GT


def test_wrong_category_scores_zero():
    track = [box(2, 8, 3, 9)] * 3
    stats = evaluate_ytvis(make_gt([(1, 1, track, False)]), [pred(1, 2, 0.9, track)], per_category=True)
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0
    assert stats["per_category"] == {"c1": 0.0, "c2": -1.0}  # c2 has no GT: absent from the mean


def test_video_iou_is_summed_over_frames():
    # GT: 36 px in frames 0 and 1; prediction: frame 0 exact, frame 1 empty -> IoU 36 / 72 = 0.5
    a = box(0, 6, 0, 6)
    gt = make_gt([(1, 1, [a, a, None], False)])
    stats = evaluate_ytvis(gt, [pred(1, 1, 0.9, [a, box(0, 0, 0, 0), None])])
    assert stats["AP50"] == pytest.approx(1.0) and stats["AP75"] == 0.0
    assert stats["AP"] == pytest.approx(0.1)  # matched at 0.50 only: 1 of 10 thresholds


def test_crowd_match_is_ignored_not_false_positive():
    a, b = box(0, 6, 0, 6), box(10, 16, 10, 16)
    gt = make_gt([(1, 1, [a] * 3, False), (1, 1, [b] * 3, True)])
    # the top-scored prediction sits on the crowd region: ignored, so precision stays 1
    assert evaluate_ytvis(gt, [pred(1, 1, 0.9, [b] * 3), pred(1, 1, 0.8, [a] * 3)])["AP"] == pytest.approx(
        1.0
    )
    only_crowd = make_gt([(1, 1, [b] * 3, True)])
    assert evaluate_ytvis(only_crowd, [pred(1, 1, 0.9, [b] * 3)])["AP"] == -1.0  # no positive at all


def test_empty_tracks_never_match():
    empty = box(0, 0, 0, 0)
    gt = make_gt([(1, 1, [None, None, None], False), (1, 1, [empty, empty, empty], False)])
    stats = evaluate_ytvis(gt, [pred(1, 1, 0.9, [empty] * 3), pred(1, 1, 0.8, [None] * 3)])
    # two positives (avg area 0: "small"), IoU 0 everywhere
    assert stats["AP"] == 0.0 and stats["APs"] == 0.0 and stats["AR100"] == 0.0 and stats["APm"] == -1.0


def test_gt_without_annotations_gives_minus_one():
    gt = make_gt([])
    stats = evaluate_ytvis(gt, [pred(1, 1, 0.5, [box(0, 2, 0, 2)] * 3)])
    assert all(v == -1.0 for v in stats.values())


def test_duplicate_category_names_are_disambiguated():
    track = [box(2, 8, 3, 9)] * 3
    gt = make_gt([(1, 1, track, False)])
    gt["categories"] = [{"id": 1, "name": "fish"}, {"id": 2, "name": "fish"}]
    stats = evaluate_ytvis(gt, [pred(1, 1, 0.9, track)], per_category=True)
    assert stats["per_category"] == pytest.approx({"fish (id 1)": 1.0, "fish (id 2)": -1.0})


def test_tp_needed_equals_brute_force():
    npig = np.arange(1, 401)
    need = ytvis_eval._tp_needed(npig)
    for p, row in zip(npig, need):
        brute = [next(c for c in range(p + 2) if c / p >= r) for r in REC_THRS]
        assert row.tolist() == brute, p


def test_pycocotools_scores_different_sizes_as_minus_one():
    """The nominal-width tags of ytvis_overlap rely on this: different sizes are never merged."""
    a = rle(box(2, 9, 3, 11))
    tagged = {"size": [H, W + 1], "counts": a["counts"]}
    ious = np.asarray(mask_utils.iou([a, tagged], [a], [0])).ravel()
    assert ious.tolist() == [1.0, -1.0]
    assert mask_utils.area([tagged]).tolist() == [56]


# ------------------------------------------------------------------ randomised cross-check
def random_case(seed: int):
    """Small random GT/results with nulls, empty RLEs, crowds, ties, all area ranges."""
    rng = np.random.default_rng(seed)
    h, w = [(12, 16), (150, 130), (270, 260)][seed % 3]
    frames = int(rng.integers(1, 5))
    cats = (3, 7, 11)
    videos = tuple(int(v) for v in rng.choice(np.arange(1, 30), size=int(rng.integers(1, 5)), replace=False))

    def blob():
        y0, x0 = int(rng.integers(0, h - 2)), int(rng.integers(0, w - 2))
        return box(y0, int(rng.integers(y0 + 1, h + 1)), x0, int(rng.integers(x0 + 1, w + 1)), h, w)

    tracks, results = [], []
    for v in videos:
        own = []
        for _ in range(int(rng.integers(0, 4))):
            masks = [
                blob() if rng.uniform() > 0.25 else (None if rng.uniform() > 0.3 else box(0, 0, 0, 0, h, w))
                for _ in range(frames)
            ]
            cat = int(rng.choice(cats))
            own.append((cat, masks))
            tracks.append((v, cat, masks, bool(rng.uniform() < 0.15)))
        for _ in range(int(rng.integers(0, 7))):
            if own and rng.uniform() < 0.6:
                cat, masks = own[int(rng.integers(len(own)))]
                masks = [m if m is not None and rng.uniform() > 0.3 else blob() for m in masks]
                cat = cat if rng.uniform() > 0.2 else int(rng.choice(cats))
            else:
                cat, masks = int(rng.choice(cats)), [blob() for _ in range(frames)]
            masks = [None if rng.uniform() < 0.1 else m for m in masks]
            score = float(np.round(rng.uniform(), 1)) if seed % 2 else float(rng.uniform())
            results.append(
                {
                    "video_id": v,
                    "category_id": cat,
                    "score": score,
                    "segmentations": [None if m is None else rle(m) for m in masks],
                }
            )
    gt = make_gt(tracks, categories=cats, frames=frames, videos=videos, h=h, w=w, uncompressed=bool(seed % 2))
    if not results:
        results = [
            {
                "video_id": videos[0],
                "category_id": cats[0],
                "score": 0.5,
                "segmentations": [rle(blob()) for _ in range(frames)],
            }
        ]
    rng.shuffle(results)
    return gt, results


@pytest.mark.parametrize("seed", range(18))
def test_random_cases_match_naive_reference(seed):
    gt, results = random_case(seed)
    got = evaluate_ytvis(gt, results)
    ref = naive_evaluate(gt, results)
    for name in STAT_NAMES:
        assert got[name] == pytest.approx(ref[name], abs=1e-12), name


def test_chunked_paths_give_the_same_numbers(monkeypatch):
    """Tiny budgets force the frame windows (long videos) and the category chunks."""
    gt, results = load_case("case_025")[:2] if VECTORS.is_dir() else random_case(4)
    whole = evaluate_ytvis(gt, results, per_category=True)
    monkeypatch.setattr(ytvis_overlap, "_PAIR_BUDGET", 4)
    monkeypatch.setattr(ytvis_eval, "_CELL_BUDGET", 3)
    assert evaluate_ytvis(gt, results, per_category=True) == whole


# ------------------------------------------------------------------ input errors
def good_case():
    track = [box(0, 4, 0, 4), None, box(1, 5, 1, 5)]
    return make_gt([(1, 1, track, False)]), [
        pred(1, 1, 0.5, [m if m is not None else box(0, 0, 0, 0) for m in track])
    ]


def _mutated(change):
    gt, res = good_case()
    change(gt, res)
    return gt, res


@pytest.mark.parametrize(
    "change, phrase",
    [
        (lambda g, r: r[0].pop("score"), "results\\[0\\]: missing 'score'"),
        (lambda g, r: r[0].update(score=float("nan")), "'score' must be a finite number"),
        (lambda g, r: r[0].update(video_id=5), "video_id 5 is not in the ground truth"),
        (lambda g, r: r[0].update(category_id=9), "category_id 9 is not a ground-truth category"),
        (lambda g, r: r[0]["segmentations"].pop(), "2 segmentations for video 1 of 3 frames"),
        (
            lambda g, r: r[0]["segmentations"][0].update(size=[H + 1, W]),
            "frame 0: mask size \\[21, 30\\] differs",
        ),
        (
            lambda g, r: r[0]["segmentations"][0].update(counts=[0, H * W]),
            "uncompressed RLE .* not accepted in results",
        ),
        (
            lambda g, r: r[0]["segmentations"].__setitem__(0, [[0, 0, 4, 0, 4, 4]]),
            "polygons are not accepted in results",
        ),
        (lambda g, r: g["annotations"][0].pop("areas"), "annotations\\[0\\]: missing 'areas'"),
        (lambda g, r: g["annotations"][0].update(id=0), "annotation id 0 is not allowed"),
        (lambda g, r: g["annotations"].append(dict(g["annotations"][0])), "duplicate annotation id 1"),
        (
            lambda g, r: g["annotations"][0].update(category_id=5),
            "category_id 5 is not one of the file's categories",
        ),
        (lambda g, r: g["annotations"][0].update(video_id=4), "video_id 4 is not one of the file's videos"),
        (lambda g, r: g["annotations"][0]["areas"].append(3), "4 areas for video 1 of 3 frames"),
        (lambda g, r: g["annotations"][0]["segmentations"][0]["counts"].append(1), "summing to 20\\*30=600"),
        *[  # each kind of bad run, where only pycocotools' own cast would have caught it (or not at all)
            (
                lambda g, r, bad=bad: g["annotations"][0]["segmentations"][0].update(
                    counts=[bad, *g["annotations"][0]["segmentations"][0]["counts"][1:]]
                ),
                "frame 0: uncompressed RLE counts must be non-negative integers summing to 20\\*30=600",
            )
            for bad in (True, 1.0, -1, 2**64, "1", None)
        ],
        (
            lambda g, r: g["annotations"][0]["segmentations"][0].update(size=[H, W + 2]),
            "differs from the video's",
        ),
        (lambda g, r: g.update(annotations=None), "no 'annotations'"),
        (lambda g, r: g["videos"].append(dict(g["videos"][0])), "duplicate video id 1"),
        (lambda g, r: g["videos"][0].pop("height"), "missing 'height'"),
        (lambda g, r: r.clear(), "results list is empty"),
    ],
)
def test_bad_inputs_are_one_line_value_errors(change, phrase):
    gt, res = _mutated(change)
    with pytest.raises(YTVISInputError, match=phrase) as info:
        evaluate_ytvis(gt, res)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)
    assert str(info.value).startswith("<memory>: ")


def test_missing_iscrowd_means_not_crowd():
    """As the official evaluator reads it ('iscrowd' in gt and gt['iscrowd']), and as test reads --data."""
    gt, res = good_case()
    without = json.loads(json.dumps(gt))
    for ann in without["annotations"]:
        ann.pop("iscrowd", None)
    for ann in gt["annotations"]:
        ann["iscrowd"] = 0
    assert evaluate_ytvis(without, res) == evaluate_ytvis(gt, res)


def test_file_errors_name_the_file(tmp_path):
    gt, res = good_case()
    gt_path, bad = tmp_path / "gt.json", tmp_path / "bad.json"
    gt_path.write_text(json.dumps(gt))
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        evaluate_ytvis(gt_path, bad)
    with pytest.raises(ValueError, match="missing.json: no such results file"):
        evaluate_ytvis(gt_path, tmp_path / "missing.json")
    bad.write_text(json.dumps({"videos": []}))
    with pytest.raises(ValueError, match="bad.json: missing or invalid 'categories' list"):
        evaluate_ytvis(bad, res)


def test_inputs_are_not_modified():
    gt, res = good_case()
    before = json.dumps([gt, res])
    evaluate_ytvis(gt, res)
    assert json.dumps([gt, res]) == before


# ------------------------------------------------------------------ YTVISMetric
def _per_video(gt, results):
    for item in ground_truth_items(gt):
        yield item, [r for r in results if r["video_id"] == item["video_id"]]


def _assert_same(got: dict, expected: dict):
    for name in STAT_NAMES:
        assert got[name] == expected[name], name
    assert got["per_category"] == expected["per_category"]


@pytest.mark.parametrize("seed", range(6))
def test_metric_split_and_merged_equals_whole(seed):
    gt, results = random_case(seed)
    expected = evaluate_ytvis(gt, results, per_category=True)
    halves = [YTVISMetric(gt["categories"]), YTVISMetric(gt["categories"])]
    whole = YTVISMetric(gt["categories"])
    for i, (item, records) in enumerate(_per_video(gt, results)):
        halves[i % 2].update(records, item)
        whole.update(records, item)
    halves[0].merge_state(halves[1])
    _assert_same(halves[0].compute(), expected)
    _assert_same(whole.compute(), expected)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_metric_mask_tensors_equal_rle_records():
    gt, results = load_case("case_011")[:2] if VECTORS.is_dir() else random_case(2)
    expected = evaluate_ytvis(gt, results, per_category=True)
    metric = YTVISMetric(gt["categories"])
    for item, records in _per_video(gt, results):
        h, w = item["height"], item["width"]
        masks = torch.zeros((len(records), item["length"], h, w), dtype=torch.bool)
        for i, r in enumerate(records):
            for t, s in enumerate(r["segmentations"]):
                if s:
                    masks[i, t] = torch.from_numpy(mask_utils.decode(s).astype(bool))
        metric.update(
            {
                "masks": masks,
                "scores": torch.tensor([r["score"] for r in records], dtype=torch.float64),
                "category_ids": torch.tensor([r["category_id"] for r in records]),
            },
            item,
        )
    _assert_same(metric.compute(), expected)


def test_metric_counts_a_repeated_video_once_and_keeps_states_compact():
    gt, results = random_case(5)
    metric = YTVISMetric(gt["categories"])
    items = list(_per_video(gt, results))
    for item, records in items + items[:1]:
        metric.update(records, item)
    _assert_same(metric.compute(), evaluate_ytvis(gt, results, per_category=True))
    assert metric.dtype == torch.float64
    assert all(
        t.dtype == torch.float64 and t.ndim == 1 for t in metric.det_rows + metric.gt_rows + metric.pair_rows
    )
    n_values = sum(t.numel() for t in metric.det_rows + metric.gt_rows + metric.pair_rows)
    assert n_values < 10 * (len(results) + len(gt["annotations"]) + 1) * 6  # rows, not masks


def test_metric_without_updates_and_bad_updates():
    gt, results = good_case()
    metric = YTVISMetric(gt["categories"])
    with pytest.warns(UserWarning):  # torchmetrics: compute before update
        stats = metric.compute()
    assert all(stats[k] == -1.0 for k in STAT_NAMES)
    item = next(ground_truth_items(gt))
    with pytest.raises(ValueError, match="category_id 9 is not a ground-truth category"):
        metric.update([{**results[0], "category_id": 9}], item)
    with pytest.raises(ValueError, match="do not fit a video of 3 frames of 20x30"):
        metric.update(
            {"masks": torch.zeros(1, 2, H, W), "scores": torch.ones(1), "category_ids": torch.ones(1)}, item
        )
    with pytest.raises(ValueError, match="missing 'category_ids'"):
        metric.update({"masks": torch.zeros(1, 3, H, W), "scores": torch.ones(1)}, item)
    metric.update([], item)  # a video without predictions: its GT still counts
    assert metric.compute()["AR100"] == 0.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, port: int, gt: dict, results: list, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        alternating, one_sided = YTVISMetric(gt["categories"]), YTVISMetric(gt["categories"])
        for i, (item, records) in enumerate(_per_video(gt, results)):
            if i % 2 == rank:
                alternating.update(records, item)
            if rank == 0:  # rank 1 sees no video at all: its empty states must sync too
                one_sided.update(records, item)
        stats = {"alternating": alternating.compute(), "one_sided": one_sided.compute()}
        Path(out_dir, f"{rank}.json").write_text(json.dumps(stats))
    finally:
        dist.destroy_process_group()


def test_metric_syncs_across_two_gloo_processes(tmp_path):
    seed = next(s for s in range(50) if len(random_case(s)[0]["videos"]) >= 3)
    gt, results = random_case(seed)
    expected = evaluate_ytvis(gt, results, per_category=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.multiprocessing.spawn(
        _ddp_worker, args=(_free_port(), gt, results, str(tmp_path)), nprocs=2, join=True
    )
    for rank in (0, 1):
        stats = json.loads((tmp_path / f"{rank}.json").read_text())
        _assert_same(stats["alternating"], expected)
        _assert_same(stats["one_sided"], expected)


@pytest.mark.parametrize("case", [c for c in vector_cases() if c not in REJECTED])
def test_pixel_counts_from_the_readers_decoding_equal_pycocotools(case):
    """The readers decode every RLE once and keep the pixel counts; the overlaps computed from them
    equal those from pycocotools' own counts (tracks given without them)."""
    gt, pred, _ = load_case(case)
    truth = load_ground_truth(gt)
    dets = load_results(pred, truth) if pred else {}
    videos, per_video = list(truth.videos.values()), [dets.get(v) for v in truth.videos]
    assert all(v.present_areas is not None for v in videos)
    known = build_tables(videos, per_video)
    for parsed in [*videos, *(d for d in per_video if d is not None)]:
        parsed.present_areas = None
    counted = build_tables(videos, per_video)
    for name in ("det_area", "pair_det", "pair_gt", "pair_iou"):
        assert np.array_equal(getattr(known, name), getattr(counted, name)), name


def _striped_case(period: int, videos: int = 3, tracks: int = 2, frames: int = 4, size: int = 120):
    """GT tracks as uncompressed RLE and matching results as compressed RLE, of masks striped every
    ``period`` pixels: a smaller period gives more runs per frame, nothing else changes."""
    h = w = size
    mask = (np.arange(h * w).reshape(w, h).T // period) % 2 == 1  # column-major runs of length `period`
    counts = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    flat = mask.T.ravel().astype(int)  # column-major, as RLE counts run
    edges = np.flatnonzero(np.diff(np.r_[-1, flat, -1]))  # where each run starts, and the end
    runs = ([0] if flat[0] else []) + np.diff(edges).tolist()  # runs start with background
    gt = {"videos": [], "categories": [{"id": 1, "name": "fish"}], "annotations": []}
    results = []
    for v in range(1, videos + 1):
        gt["videos"].append({"id": v, "height": h, "width": w, "length": frames})
        for k in range(tracks):
            gt["annotations"].append({
                "id": v * 10 + k, "video_id": v, "category_id": 1, "iscrowd": 0,
                "segmentations": [{"size": [h, w], "counts": list(runs)} for _ in range(frames)],
                "areas": [int(mask.sum())] * frames,
            })
            results.append({
                "video_id": v, "category_id": 1, "score": 0.5 + k / 10,
                "segmentations": [{"size": [h, w], "counts": counts["counts"].decode()} for _ in range(frames)],
            })
    return gt, results, len(runs)


def _python_calls(fn) -> int:
    """Python-level calls (functions, comprehensions, generator steps) made while ``fn`` runs."""
    import sys

    calls = 0

    def count(frame, event, arg):
        nonlocal calls
        if event == "call":
            calls += 1

    sys.setprofile(count)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def test_checks_do_no_python_work_per_run_or_character():
    """The input checks scale with tracks and frames, never with the runs of a mask or the characters
    of its RLE string (a Python step per integer once made the metric 4x slower): 60 times more runs
    per frame (about 170,000 more integers and characters) add only the calls of one more decoding
    chunk (64k characters each)."""
    few_gt, few_res, few_runs = _striped_case(period=240)
    many_gt, many_res, many_runs = _striped_case(period=4)
    assert many_runs > 50 * few_runs

    def load(gt, res):
        truth = load_ground_truth(gt)
        load_results(res, truth)

    assert evaluate_ytvis(few_gt, few_res)["AP"] == pytest.approx(1.0)
    assert evaluate_ytvis(many_gt, many_res)["AP"] == pytest.approx(1.0)
    few, many = _python_calls(lambda: load(few_gt, few_res)), _python_calls(lambda: load(many_gt, many_res))
    assert many < 1.5 * few, (few, many)  # one Python step per run would add > 170,000
