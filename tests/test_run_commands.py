"""`test` and `predict` end to end through the CLI, on one process and under CPU DDP (gloo, 2 processes)."""

from __future__ import annotations

import json

import pytest

from tests.cli_run import SMALL, data_args, run_cli

RUN_FILES = (
    "results.json",
    "results_temporal.json",
    "results_temporal_summary.json",
    "image_dimensions.json",
)


def test_predict_writes_the_run_directory(small_set, tmp_path):
    out = tmp_path / "run"
    proc = run_cli(["predict", *data_args(small_set), "--out", str(out), "--capture", "none", *SMALL])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "weights: the shipped tiny_fish model" in proc.stderr
    assert json.loads((out / "run.json").read_text())["weights"] == "shipped"
    inference = out / "inference"
    for name in RUN_FILES:
        assert (inference / name).is_file(), name
    results = json.loads((inference / "results.json").read_text())
    videos = json.loads((small_set / "valid.json").read_text())["videos"]
    lengths = {v["id"]: v["length"] for v in videos}
    assert {r["video_id"] for r in results} == set(lengths)
    for r in results:
        assert len(r["segmentations"]) == lengths[r["video_id"]]
        assert 0.0 <= r["score"] <= 1.0
    temporal = json.loads((inference / "results_temporal.json").read_text())
    assert len(temporal) == len(results)
    assert all("refiner_id" in t and "score_after_k_frames" in t for t in temporal)
    assert not (inference / "metrics.json").exists()  # predict has no metric
    assert (out / "config.yaml").is_file() and (out / "run.json").is_file()
    assert not list(out.rglob("*.tmp")), "no temporary files may be left behind"


def test_ddp_two_processes_match_one(small_set, tmp_path):
    """`test` under CPU DDP: every video once, merged on rank 0, files identical to one process."""
    from dvis_attn_pl.metrics import STAT_NAMES, evaluate_ytvis

    one, two = tmp_path / "one", tmp_path / "two"
    common = ["test", *data_args(small_set), "--accelerator", "cpu"]
    p1 = run_cli([*common, "--devices", "1", "--out", str(one), *SMALL])
    assert p1.returncode == 0, p1.stderr[-2000:]
    p2 = run_cli([*common, "--devices", "2", "--out", str(two), *SMALL])
    assert p2.returncode == 0, p2.stderr[-2000:]
    assert "2 x cpu" in p2.stderr
    assert "Average Precision" in p1.stdout and "random weights" not in p1.stdout
    parts = sorted(p.name for p in (two / "inference" / "parts").glob("*.json"))
    assert parts == ["1.json", "2.json", "3.json"]
    for name in (*RUN_FILES, "metrics.json"):
        assert (one / "inference" / name).read_bytes() == (two / "inference" / name).read_bytes(), name
    assert (one / "attention_maps" / "manifest.json").read_bytes() == (two / "attention_maps" / "manifest.json").read_bytes()
    # the in-loop metric equals the file evaluator on what was written
    metrics = json.loads((one / "inference" / "metrics.json").read_text())
    offline = evaluate_ytvis(small_set / "valid.json", one / "inference" / "results.json")
    assert metrics["ytvis"] == pytest.approx({k: offline[k] for k in STAT_NAMES})
    assert set(metrics["decision_timing"]["AP_after_fraction_of_frames"]) == {"25%", "50%", "75%", "100%"}
    assert metrics["decision_timing"]["AP_after_fraction_of_frames"]["100%"] == pytest.approx(offline["AP"])


def test_test_requires_annotations(small_set, tmp_path):
    data = json.loads((small_set / "valid.json").read_text())
    data.pop("annotations")
    unlabelled = tmp_path / "unlabelled.json"
    unlabelled.write_text(json.dumps(data))
    proc = run_cli(["test", "--data", str(unlabelled), "--frames", str(small_set / "JPEGImages"), "--out", str(tmp_path / "r")])
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "no annotations" in proc.stderr and "unlabelled.json" in proc.stderr


def test_class_count_mismatch_is_one_line(small_set, tmp_path):
    proc = run_cli(
        ["predict", *data_args(small_set), "--out", str(tmp_path / "r"), "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"]
    )
    assert proc.returncode == 2
    assert "NUM_CLASSES 3" in proc.stderr and "valid.json" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
