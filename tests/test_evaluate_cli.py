"""``python -m dvis_attn_pl evaluate``: the official table, ``--json``, and one-line errors with exit 2."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from dvis_attn_pl.cli import main
from dvis_attn_pl.commands.evaluate import run_evaluate
from dvis_attn_pl.metrics import STAT_NAMES, evaluate_ytvis
from dvis_attn_pl.metrics.ytvis_eval import summary_lines
from dvis_attn_pl.utils.errors import UserError
from tests.shared_data import SHARED, require_shared

ROOT = Path(__file__).resolve().parents[1]
VECTORS = SHARED / "ytvis_vectors"


def _rle(y0, y1, x0, x1, h=24, w=32) -> dict:
    """Compressed RLE of a box."""

    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    out = mask_utils.encode(np.asfortranarray(m))
    return {"size": [h, w], "counts": out["counts"].decode()}


@pytest.fixture
def files(tmp_path):
    """A 2-video GT (categories 1 and 2) and results with a TP, a FP and a wrong-category prediction."""
    a, b = _rle(2, 10, 2, 12), _rle(12, 20, 14, 30)
    gt = {
        "videos": [{"id": v, "height": 24, "width": 32, "length": 2} for v in (1, 2)],
        "categories": [{"id": 1, "name": "salmon"}, {"id": 2, "name": "trout"}],
        "annotations": [
            {
                "id": 1,
                "video_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "segmentations": [a, a],
                "areas": [80, 80],
            },
            {
                "id": 2,
                "video_id": 2,
                "category_id": 2,
                "iscrowd": 0,
                "segmentations": [b, None],
                "areas": [128, None],
            },
        ],
    }
    results = [
        {"video_id": 1, "category_id": 1, "score": 0.9, "segmentations": [a, a]},
        {"video_id": 1, "category_id": 1, "score": 0.4, "segmentations": [b, b]},
        {"video_id": 2, "category_id": 1, "score": 0.8, "segmentations": [b, b]},
    ]
    gt_path, res_path = tmp_path / "gt.json", tmp_path / "results.json"
    gt_path.write_text(json.dumps(gt))
    res_path.write_text(json.dumps(results))
    return gt_path, res_path, gt, results


def test_table_is_the_official_summary_plus_per_category(files, capsys):
    gt_path, res_path, _, _ = files
    assert main(["evaluate", "--gt", str(gt_path), "--results", str(res_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    stats = evaluate_ytvis(gt_path, res_path, per_category=True)
    assert out[:12] == summary_lines(stats)
    assert out[0].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = ")
    assert out[11].startswith(
        " Average Recall     (AR) @[ IoU=0.50:0.95 | area= large | maxDets=100 ] = -1.000"
    )
    assert "per-category AP" in out[13]
    assert out[14].split() == ["salmon", f"{stats['per_category']['salmon']:0.3f}"]
    assert out[15].split() == ["trout", "0.000"]  # GT but only a wrong-category prediction


def test_json_has_exactly_the_twelve_statistics(files, capsys):
    gt_path, res_path, gt, results = files
    assert main(["evaluate", "--gt", str(gt_path), "--results", str(res_path), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert list(stats) == list(STAT_NAMES)
    assert stats == evaluate_ytvis(gt, results)
    assert stats["AP50"] == pytest.approx(0.5)  # salmon: TP ranked first; trout: missed


@pytest.mark.parametrize(
    "broken, phrase",
    [
        (lambda g, r: "{not json", "results.json: not valid JSON"),
        (
            lambda g, r: r[:1] + [{k: v for k, v in r[1].items() if k != "score"}],
            "results.json: results[1]: missing 'score'",
        ),
        (
            lambda g, r: [{**r[0], "video_id": 7}],
            "results.json: results[0]: video_id 7 is not in the ground truth",
        ),
        (
            lambda g, r: [{**r[0], "category_id": 0}],
            "results[0]: category_id 0 is not a ground-truth category",
        ),
        (
            lambda g, r: [{**r[0], "segmentations": r[0]["segmentations"] * 2}],
            "4 segmentations for video 1 of 2 frames",
        ),
        (
            lambda g, r: [{**r[0], "segmentations": [{**r[0]["segmentations"][0], "size": [32, 24]}, None]}],
            "mask size [32, 24] differs",
        ),
        (lambda g, r: [], "results.json: the results list is empty"),
    ],
)
def test_bad_results_exit_2_with_one_line(files, capsys, broken, phrase):
    gt_path, res_path, gt, results = files
    value = broken(gt, results)
    res_path.write_text(value if isinstance(value, str) else json.dumps(value))
    assert main(["evaluate", "--gt", str(gt_path), "--results", str(res_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    err = captured.err
    assert err.count("\n") == 1 and err.startswith("dvis_attn_pl: error: ") and str(res_path) in err
    assert phrase in err, err


def test_bad_ground_truth_names_the_gt_file(files, capsys):
    gt_path, res_path, gt, _ = files
    gt["annotations"][1]["areas"] = [128]
    gt_path.write_text(json.dumps(gt))
    assert main(["evaluate", "--gt", str(gt_path), "--results", str(res_path), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{gt_path}: annotations[1]: 1 areas for video 2 of 2 frames" in err


def test_missing_file_is_a_usage_error(files, capsys):
    gt_path, _, _, _ = files
    assert main(["evaluate", "--gt", str(gt_path), "--results", str(gt_path.parent / "nope.json")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_run_evaluate_raises_user_error(files):
    gt_path, res_path, _, _ = files
    res_path.write_text("[]")
    with pytest.raises(UserError, match="results list is empty"):
        run_evaluate(argparse.Namespace(gt=str(gt_path), results=str(res_path), json=True))


def test_module_entry_point_on_an_official_vector():
    require_shared(VECTORS, "official metric vectors (shared/ytvis_vectors)")
    proc = subprocess.run(
        [sys.executable, "-m", "dvis_attn_pl", "evaluate", "--json",
         "--gt", str(VECTORS / "case_010_gt.json"), "--results", str(VECTORS / "case_010_pred.json")],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    expected = json.loads((VECTORS / "case_010_expected.json").read_text())["stats"]
    assert list(json.loads(proc.stdout).values()) == pytest.approx(expected, abs=1e-6)
