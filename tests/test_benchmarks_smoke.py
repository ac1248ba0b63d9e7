"""Smoke test of the benchmarks: every benchmark function runs at a tiny size and gives well-formed
rows, and run_all renders and writes them. Not a timed test: nothing here asserts a speed."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import Row, interleaved, timed_ratio_row
from benchmarks.bench_capture import bench_capture
from benchmarks.bench_inference import bench_inference
from benchmarks.bench_memory import bench_memory
from benchmarks.bench_rollout import bench_rollout, numpy_rollout, random_attention
from benchmarks.run_all import BEGIN, END, bench_metric_rows, markdown_table, write_markdown

TINY_VIDEO = dict(height=64, width=96)


def check_row(row: Row) -> None:
    assert isinstance(row, Row)
    assert row.benchmark and row.case and row.variant and row.unit
    for value in (row.value, row.base_value, row.ratio):
        assert value is None or (math.isfinite(value) and value > 0), row
    if row.ratio_kind != "size" and row.value is not None and row.base_value is not None:
        assert row.ratio is not None
    if row.spread is not None:
        lo, hi = row.spread
        assert 0 < lo <= hi
    assert row.repeats >= 1
    json.dumps(row.as_dict(), default=str)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A private cache for the synthetic sets and the metric case."""
    return tmp_path_factory.mktemp("bench_cache")


def test_interleaved_runs_every_variant_every_round():
    calls = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, warmup=1)
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b"]  # warm-up, then a rotating order
    assert {k: len(v) for k, v in times.items()} == {"a": 3, "b": 3}
    row = timed_ratio_row("x", "c", "v", "b", [2.0, 4.0, 3.0], [1.0, 2.0, 2.0], limit=2.5)
    assert row.ratio == pytest.approx(1.5) and row.spread == (1.5, 2.0) and row.met is True
    fast = timed_ratio_row("x", "c", "v", "b", [1.0, 1.0], [4.0, 2.0], ratio_kind="speedup", limit=10)
    assert fast.ratio == pytest.approx(3.0) and fast.spread == (2.0, 4.0) and fast.met is False
    with pytest.raises(ValueError, match="ratio_kind"):
        Row("x", "c", "v", "b", 1.0, 1.0, "s", ratio_kind="faster")


def test_inference_rows():
    rows = bench_inference("tiny_cpu", frames=2, repeats=1, warmup=0, **TINY_VIDEO)
    assert len(rows) == 1
    check_row(rows[0])
    assert "outputs identical: True" in rows[0].note
    assert rows[0].unit == "s/video" and "64x96" in rows[0].case


def test_capture_rows_and_bytes(cache):
    rows = bench_capture(
        videos=1,
        min_frames=3,
        max_frames=4,
        presets=("temporal", "decoder"),
        repeats=1,
        warmup=0,
        data_root=cache,
        **TINY_VIDEO,
    )
    for row in rows:
        check_row(row)
    timed = [r for r in rows if r.benchmark.startswith("capture")]
    sizes = {r.variant: r for r in rows if r.benchmark == "attention bytes"}
    assert [r.variant for r in timed] == ["capture temporal", "capture decoder"]
    assert all(r.baseline == "no capture" and r.target for r in timed)
    assert set(sizes) == {"capture temporal", "capture decoder"}
    # decoder = temporal + decoder maps, so it stores strictly more per frame
    assert sizes["capture decoder"].value > sizes["capture temporal"].value > 0
    assert sizes["capture temporal"].extra["files_per_video"] >= 3


def test_rollout_rows_and_reference_agree():
    attn = random_attention(3, 2, 5)
    from dvis_attn_pl.analysis.rollout import temporal_rollout

    ref = numpy_rollout(attn.numpy())
    assert abs(temporal_rollout(attn).numpy() - ref).max() < 1e-5
    rows = bench_rollout(((3, 5), (2, 7)), layers=2, repeats=2, numpy_repeats=1, warmup=0)
    assert len(rows) == 2
    for row in rows:
        check_row(row)
        assert row.ratio_kind == "speedup" and row.repeats == 2
    assert "3 instances x 5 frames x 2 layers" in rows[0].case


def test_metric_rows(cache, monkeypatch):
    monkeypatch.setenv("DVIS_ATTN_PL_CACHE", str(cache))
    case = {"videos": 3, "frames": 3, "height": 160, "width": 200, "predictions": 9}
    rows = bench_metric_rows(case, repeats=2, naive=True)
    assert len(rows) == 2
    for row in rows:
        check_row(row)
    assert rows[0].ratio_kind == "speedup" and rows[0].base_value == 2.5
    assert rows[1].extra["max_stat_difference"] < 1e-6  # ours and the per-pair reference agree
    quick = bench_metric_rows(case, repeats=1, naive=False)
    assert quick[1].ratio is None and "skipped" in quick[1].note


def test_metric_stage_breakdown(tmp_path):
    from benchmarks.bench_metric import make_case, stage_seconds

    gt, results = make_case(videos=3, frames=3, height=160, width=200, categories=4, predictions=9)
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps(results))
    stages = stage_seconds(tmp_path / "gt.json", tmp_path / "res.json", repeats=1)
    assert len(stages) == 5 and all(s > 0 for s in stages.values())


@pytest.mark.slow  # two fresh interpreters running the predict command
def test_memory_rows(cache):
    rows = bench_memory((1, 2), height=64, width=96, min_frames=2, max_frames=3, data_root=cache)
    host, device = rows
    check_row(host)
    assert host.unit == "MiB RSS" and host.value > 100 and host.base_value > 100
    assert host.extra["runs"][2]["vm_hwm_mib"] > 0
    assert device.value is None and device.note == "n/a (no GPU)"


def test_markdown_table_and_file_keep_the_analysis(tmp_path):
    rows = [
        timed_ratio_row(
            "capture",
            "tiny",
            "capture temporal",
            "no capture",
            [1.1, 1.2],
            [1.0, 1.0],
            unit="s/video",
            target="<= 1.05 (GPU)",
            limit=1.05,
        ),
        Row(
            "attention bytes",
            "tiny",
            "capture temporal",
            "",
            2048.0,
            None,
            "B/video-frame",
            ratio_kind="size",
        ),
        Row(
            "peak device memory",
            "tiny",
            "100 videos",
            "10 videos",
            None,
            None,
            "MiB",
            ratio_kind="growth",
            note="n/a (no GPU)",
        ),
    ]
    table = markdown_table(rows)
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert "**1.150x**" in lines[2] and "**no**" in lines[2] and "2.0 KiB/video-frame" in lines[3]
    out = tmp_path / "bench.md"
    write_markdown(out, f"{BEGIN}\nfirst\n{END}")
    text = out.read_text() + "\n## Analysis\n\nhand-written\n"
    out.write_text(text)
    write_markdown(out, f"{BEGIN}\nsecond\n{END}")
    final = out.read_text()
    assert "second" in final and "first" not in final and "hand-written" in final


def test_host_read_rows_grow_with_windows_not_frames_times_instances():
    from benchmarks.bench_loop import bench_host_reads

    frames_row, windows_row = bench_host_reads(short=3, long=6, window=3)
    for row in (frames_row, windows_row):
        check_row(row)
    assert frames_row.value - frames_row.base_value <= 6 - 3  # at most one read per extra frame
    assert windows_row.value - windows_row.base_value <= 2 * 1  # one more window, at most two reads


@pytest.mark.slow  # two in-process predict runs
def test_loop_rows(cache):
    from benchmarks.bench_loop import bench_loop

    rows = bench_loop(videos=2, height=64, width=96, min_frames=3, max_frames=4, workers=(0, 1))
    assert [r.variant for r in rows] == ["loop time per video, --num-workers 0", "loop time per video, --num-workers 1"]
    for row in rows:
        check_row(row)
        assert row.value >= row.base_value > 0  # the loop contains the forwards


@pytest.mark.slow
def test_intervention_rows():
    from benchmarks.bench_interventions import bench_interventions

    rows = bench_interventions(videos=1, repeats=1)
    assert {r.variant for r in rows} >= {"freeze", "shuffle-1", "silhouette", "uniform_pooling", "deletion"}
    for row in rows:
        check_row(row)


def test_precision_modes_against_the_official_outputs():
    """32-true reproduces the official float32 outputs of a golden case within the golden tolerance;
    tf32 changes nothing on a CPU (TF32 is a tensor-core mode); every mode gives a row."""
    import torch

    from benchmarks.bench_precision import MODES, bench_precision

    rows = {r["mode"]: r for r in bench_precision(torch.device("cpu"), repeats=1, cases=["r50_offline_tiny"])}
    assert set(rows) == set(MODES)
    exact = rows["32-true"]
    assert exact["videos_paired"] == "2/2" and exact["max_score_diff"] < 1e-5
    assert exact["max_mask_pixels_differing"] < 1e-3
    for key in ("videos_paired", "max_score_diff", "max_mask_pixels_differing"):
        assert rows["tf32"][key] == exact[key]
