"""The YTVIS metric against the official evaluator's outputs, hand cases, and the torchmetrics class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from dvis_attn_pl.cli import main
from dvis_attn_pl.metrics import STAT_NAMES, YTVISMetric, evaluate_ytvis

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "ytvis_vectors"
REJECTED = {  # quirk and error cases we reject, with a phrase of the message
    "case_019": "segmentations for a video of",
    "case_020": "is not a ground-truth category",
    "case_021": "annotation id 0",
    "case_023": "not in the ground truth",
    "case_024": "empty",
}


def vector_cases() -> list[str]:
    if not VECTORS.is_dir():
        return []
    return sorted(p.name[:8] for p in VECTORS.glob("case_*_expected.json"))


@pytest.mark.parametrize("case", vector_cases())
def test_official_vectors(case):
    expected = json.loads((VECTORS / f"{case}_expected.json").read_text())
    gt, pred = VECTORS / f"{case}_gt.json", VECTORS / f"{case}_pred.json"
    if case in REJECTED:
        with pytest.raises(ValueError, match=REJECTED[case]) as info:
            evaluate_ytvis(gt, pred)
        assert "\n" not in str(info.value) and ".json" in str(info.value)
        return
    assert expected["error"] is None
    got = evaluate_ytvis(gt, pred)
    for name, value in zip(STAT_NAMES, expected["stats"]):
        assert got[name] == pytest.approx(value, abs=1e-6), name


def test_vectors_present():
    if not VECTORS.is_dir():
        pytest.skip("shared/ytvis_vectors not present")
    assert len(vector_cases()) >= 25


# ---------------------------------------------------------------- hand-made cases
H, W = 20, 30


def rle(mask: np.ndarray) -> dict:
    out = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    out["counts"] = out["counts"].decode()
    return out


def box(y0, y1, x0, x1) -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def make_gt(tracks, categories=(1, 2), frames=3):
    anns = []
    for i, (vid, cat, masks, crowd) in enumerate(tracks, start=1):
        anns.append(
            {
                "id": i,
                "video_id": vid,
                "category_id": cat,
                "iscrowd": int(crowd),
                "segmentations": [None if m is None else rle(m) for m in masks],
                "areas": [None if m is None else int(m.sum()) for m in masks],
            }
        )
    vids = sorted({t[0] for t in tracks} | {1})
    return {
        "videos": [{"id": v, "height": H, "width": W, "length": frames} for v in vids],
        "categories": [{"id": c, "name": f"c{c}"} for c in categories],
        "annotations": anns,
    }


def pred(vid, cat, score, masks):
    return {"video_id": vid, "category_id": cat, "score": score, "segmentations": [rle(m) for m in masks]}


def test_perfect_prediction_scores_one():
    track = [box(2, 8, 3, 9), box(3, 9, 4, 10), None]
    gt = make_gt([(1, 1, track, False)])
    res = [pred(1, 1, 0.9, [m if m is not None else np.zeros((H, W), bool) for m in track])]
    stats = evaluate_ytvis(gt, res)
    assert stats["AP"] == pytest.approx(1.0) and stats["AR1"] == pytest.approx(1.0)
    assert stats["APm"] == -1.0  # no medium-sized GT


def test_wrong_category_scores_zero():
    track = [box(2, 8, 3, 9)] * 3
    gt = make_gt([(1, 1, track, False)])
    res = [pred(1, 2, 0.9, track)]
    stats = evaluate_ytvis(gt, res)
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0


def test_video_iou_is_summed_over_frames():
    # GT 2 frames of 36 px; prediction covers frame 0 exactly and is empty on frame 1 -> IoU 0.5
    a = box(0, 6, 0, 6)
    gt = make_gt([(1, 1, [a, a, None], False)])
    res = [pred(1, 1, 0.9, [a, np.zeros((H, W), bool), np.zeros((H, W), bool)])]
    stats = evaluate_ytvis(gt, res)
    assert stats["AP50"] == pytest.approx(1.0)
    assert stats["AP75"] == pytest.approx(0.0)


def test_crowd_match_is_ignored_not_false_positive():
    a, b = box(0, 6, 0, 6), box(10, 16, 10, 16)
    gt = make_gt([(1, 1, [a] * 3, False), (1, 1, [b] * 3, True)])
    res = [pred(1, 1, 0.9, [b] * 3), pred(1, 1, 0.8, [a] * 3)]
    assert evaluate_ytvis(gt, res)["AP"] == pytest.approx(1.0)


def test_bad_inputs_are_one_line_value_errors(tmp_path):
    track = [box(0, 4, 0, 4)] * 3
    gt = make_gt([(1, 1, track, False)])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not valid JSON"):
        evaluate_ytvis(gt, bad)
    with pytest.raises(ValueError, match="missing 'score'"):
        evaluate_ytvis(gt, [{"video_id": 1, "category_id": 1, "segmentations": []}])
    uncompressed = pred(1, 1, 0.5, track)
    uncompressed["segmentations"][0] = {"size": [H, W], "counts": [0, H * W]}
    with pytest.raises(ValueError, match="uncompressed RLE"):
        evaluate_ytvis(gt, [uncompressed])
    wrong_size = pred(1, 1, 0.5, track)
    wrong_size["segmentations"][1]["size"] = [H + 1, W]
    with pytest.raises(ValueError, match="differs from the video"):
        evaluate_ytvis(gt, [wrong_size])
    del gt["annotations"][0]["iscrowd"]
    with pytest.raises(ValueError, match="missing 'iscrowd'"):
        evaluate_ytvis(gt, [pred(1, 1, 0.5, track)])


def random_case(seed: int, videos: int = 4, frames: int = 3):
    rng = np.random.default_rng(seed)
    tracks, res = [], []
    for v in range(1, videos + 1):
        for _ in range(int(rng.integers(0, 4))):
            y, x = rng.integers(0, H - 6), rng.integers(0, W - 6)
            masks = [box(y + t, y + t + 5, x, x + 6) if rng.uniform() > 0.2 else None for t in range(frames)]
            tracks.append((v, int(rng.integers(1, 3)), masks, bool(rng.uniform() < 0.1)))
        for _ in range(int(rng.integers(0, 6))):
            y, x = rng.integers(0, H - 6), rng.integers(0, W - 6)
            masks = [box(y, y + int(rng.integers(2, 7)), x, x + 6) for _ in range(frames)]
            res.append(pred(v, int(rng.integers(1, 3)), float(np.round(rng.uniform(), 1)), masks))
    gt = make_gt(tracks, frames=frames)
    gt["videos"] = [{"id": v, "height": H, "width": W, "length": frames} for v in range(1, videos + 1)]
    return gt, res


@pytest.mark.parametrize("seed", range(6))
def test_metric_class_split_across_ranks_equals_whole(seed):
    """Two metric objects fed halves and merged give the file evaluator's numbers."""
    gt, res = random_case(seed)
    if not res:
        res = [pred(1, 1, 0.5, [box(0, 3, 0, 3)] * 3)]
    expected = evaluate_ytvis(gt, res, per_category=True)
    metrics = [YTVISMetric(gt["categories"]) for _ in range(2)]
    whole = YTVISMetric(gt["categories"])
    for i, video in enumerate(gt["videos"]):
        item = {
            "video_id": video["id"],
            "height": H,
            "width": W,
            "length": 3,
            "annotations": [a for a in gt["annotations"] if a["video_id"] == video["id"]],
        }
        records = [r for r in res if r["video_id"] == video["id"]]
        metrics[i % 2].update(records, item)
        whole.update(records, item)
    metrics[0].merge_state(metrics[1])
    for metric in (metrics[0], whole):
        got = metric.compute()
        for name in STAT_NAMES:
            assert got[name] == pytest.approx(expected[name], abs=1e-12), name
        assert got["per_category"] == pytest.approx(expected["per_category"])


def test_evaluate_cli_table_json_and_errors(tmp_path, capsys):
    gt, res = random_case(1)
    res = res or [pred(1, 1, 0.5, [box(0, 3, 0, 3)] * 3)]
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "res.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(res))
    assert main(["evaluate", "--gt", str(gt_path), "--results", str(res_path)]) == 0
    out = capsys.readouterr().out
    assert "Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]" in out
    assert main(["evaluate", "--gt", str(gt_path), "--results", str(res_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert list(stats) == list(STAT_NAMES)
    assert stats == pytest.approx(evaluate_ytvis(gt_path, res_path))
    res_path.write_text(json.dumps([{**res[0], "video_id": 999}]))
    assert main(["evaluate", "--gt", str(gt_path), "--results", str(res_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "res.json" in err and "999" in err
