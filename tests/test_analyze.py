"""``analyze RUN_DIR`` on a real run directory (tiny synthetic set, random weights, --capture decoder).

One ``predict`` run is made per module; the analyses then run on a *copy* of it with the original
deleted, in a fresh process that must never import the model, twice (byte-identical outputs). The
JSON contents are checked against ``results_temporal.json``, the ground truth and each other; the
PNG / MP4 / TensorBoard outputs for their frame counts; missing inputs for their one-line errors
(exit 2) and skip notes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dvis_attn_pl.cli import main
from dvis_attn_pl.data.rle import decode_rles

REPO = Path(__file__).resolve().parents[1]
TOP_K = 1  # the visual outputs cost about one second per prediction drawn
ANALYZE_FLAGS = ["--top-k", str(TOP_K)]
JSON_TOP_K = 3  # the JSON checks run on more predictions per video
JSON_OUTPUTS = ("frame_importance.json", "tracker_attention.json", "attention_stats.json", "cue_reading.json",
                "decision_timing.json")

# Runs analyze in a fresh interpreter and reports whether the model code (or Lightning) got imported.
_PROBE = """
import json, sys
from dvis_attn_pl.cli import main
code = main(sys.argv[1:])
loaded = sorted(m for m in sys.modules if m.startswith(("dvis_attn_pl.model", "lightning", "callbacks")))
print(json.dumps({"code": code, "loaded": loaded}))
"""


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "2")
    return env


def _analyze_subprocess(run_dir: Path, *flags: str) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, "analyze", str(run_dir), *ANALYZE_FLAGS, *flags],
        cwd=run_dir.parent, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "tensorboard" not in p.parts
    }


@pytest.fixture(scope="module")
def made_run(tmp_path_factory, small_set) -> dict:
    """A predict run on 3 tiny synthetic videos; analysed (twice) on a copy whose original is gone."""
    base = tmp_path_factory.mktemp("analyze")
    data = small_set
    original = base / "original_run"
    proc = subprocess.run(
        [sys.executable, "-m", "dvis_attn_pl", "predict", "--data", str(data / "valid.json"),
         "--frames", str(data / "JPEGImages"), "--out", str(original), "--capture", "decoder",
         "--random-weights", "INPUT.MIN_SIZE_TEST", "64"],
        cwd=base, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = base / "copied_run"
    shutil.copytree(original, run)
    shutil.rmtree(original)  # the copy alone must suffice
    before = _hashes(run)
    first, stderr1 = _analyze_subprocess(run)
    after_first = _hashes(run)
    events_first = sorted((run / "tensorboard" / "analyze").glob("events.out.tfevents.*"))
    second = {"code": main(["analyze", str(run), *ANALYZE_FLAGS])}  # in this process: no second start-up
    stderr2 = ""
    return {
        "run": run, "data": data, "before": before, "first": first, "second": second,
        "after_first": after_first, "after_second": _hashes(run), "stderr": stderr1 + stderr2,
        "events_first": events_first,
    }


@pytest.fixture(scope="module")
def json_run(made_run, tmp_path_factory) -> Path:
    """The run's inputs analysed again with the JSON analyses only, on more predictions per video."""
    run = tmp_path_factory.mktemp("json_run") / "run"
    shutil.copytree(made_run["run"], run, ignore=shutil.ignore_patterns("plots", "videos", "tensorboard"))
    assert main(["analyze", str(run), "--only", "frame_importance,tracker,stats,cues,decision",
                 "--top-k", str(JSON_TOP_K)]) == 0
    return run


def _load(run: Path, name: str):
    return json.loads((run / "inference" / name).read_text())


def _top(records: list[dict], video_id, k: int = TOP_K) -> list[dict]:
    mine = [dict(r, index=i) for i, r in enumerate(r for r in records if r["video_id"] == video_id)]
    return sorted(mine, key=lambda r: -r["score"])[:k]


# ----------------------------------------------------------------------------- run-level behaviour


def test_copy_alone_suffices_without_the_model_and_rerun_is_identical(made_run):
    run = made_run["run"]
    assert made_run["first"] == {"code": 0, "loaded": []}, made_run["first"]
    assert made_run["second"]["code"] == 0
    written = set(made_run["after_first"]) - set(made_run["before"])
    for name in JSON_OUTPUTS:
        assert f"inference/{name}" in written
    assert any(p.startswith("inference/plots/") for p in written)
    assert any(p.startswith("inference/videos/") for p in written)
    # the inputs are untouched and a second run changes no byte of any output
    assert {k: v for k, v in made_run["after_first"].items() if k in made_run["before"]} == made_run["before"]
    assert made_run["after_second"] == made_run["after_first"]
    # TensorBoard: the folder is replaced, not appended to; no temporary folder is left behind
    events = sorted((run / "tensorboard" / "analyze").glob("events.out.tfevents.*"))
    assert len(events) == 1 and len(made_run["events_first"]) == 1 and events != made_run["events_first"]
    assert not [p for p in run.iterdir() if p.name.startswith(".analyze-")]
    assert "analyze:" in made_run["stderr"]  # the progress bar went to stderr


def test_frame_importance_matches_results_and_ground_truth(made_run, json_run):
    run = json_run
    temporal = _load(run, "results_temporal.json")
    dims = _load(run, "image_dimensions.json")
    doc = _load(run, "frame_importance.json")
    gt = json.loads((made_run["data"] / "valid.json").read_text())
    assert [v["video_id"] for v in doc["videos"]] == sorted(int(k) for k in dims)
    checked_gt = 0
    for video in doc["videos"]:
        vid, t = video["video_id"], dims[str(video["video_id"])]["num_frames"]
        assert video["num_frames"] == t and video["has_gt"] is True
        top = _top(temporal, vid, JSON_TOP_K)
        assert len(top) == JSON_TOP_K
        assert [e["index"] for e in video["predictions"]] == [r["index"] for r in top]
        anns = [a for a in gt["annotations"] if a["video_id"] == vid]
        h, w = dims[str(vid)]["original"]
        gt_masks = np.stack([decode_rles(a["segmentations"], h, w) for a in anns])
        for entry, rec in zip(video["predictions"], top):
            assert (entry["score"], entry["category_id"], entry["refiner_id"]) == (
                rec["score"], rec["category_id"], rec["refiner_id"])
            assert len(entry["weights_raw"]) == t == len(rec["segmentations"])
            np.testing.assert_allclose(entry["weights_raw"], rec["frame_importance"], atol=1e-7)
            assert entry["present_frames"] == len(rec["present_frames"])
            # the GT match, recomputed frame by frame
            pred = decode_rles(rec["segmentations"], h, w)
            inter = np.array([(pred & g).sum() for g in gt_masks], dtype=float)
            union = np.array([(pred | g).sum() for g in gt_masks], dtype=float)
            iou = inter / np.maximum(union, 1)
            if iou.max() <= 0:
                assert entry["gt_match"] is None and entry["gt_mass"] is None
                continue
            j = int(np.argmax(iou))
            assert entry["gt_match"]["annotation_id"] == anns[j]["id"]
            assert entry["gt_match"]["iou"] == pytest.approx(iou[j], rel=1e-6)
            present = gt_masks[j].any(axis=(1, 2))
            wts = np.asarray(rec["frame_importance"])
            assert entry["gt_mass"] == pytest.approx(wts[present].sum() / wts.sum(), abs=1e-6)
            assert entry["gt_fraction"] == pytest.approx(present.mean(), abs=1e-9)
            checked_gt += 1
    assert checked_gt > 0
    assert doc["ground_truth"]["available"] is True


def test_tracker_stats_cues_and_decision_are_consistent(made_run, json_run):
    run = json_run
    temporal = _load(run, "results_temporal.json")
    dims = _load(run, "image_dimensions.json")
    tracker = _load(run, "tracker_attention.json")
    assert tracker["settings"]["k"] == 5 and tracker["videos_without_capture"] == []
    for video in tracker["videos"]:
        t = dims[str(video["video_id"])]["num_frames"]
        top = _top(temporal, video["video_id"], JSON_TOP_K)
        assert sorted(int(s) for s in video["sequences"]) == sorted({r["sequence_id"] for r in top})
        for s in video["sequences"].values():
            for frame, entry in s["frames"].items():
                assert 0 <= int(frame) < t
                assert set(entry["layers"]) == set(tracker["settings"]["layers"])
                vals = entry["sum_over_layers"]["values"]
                assert vals == sorted(vals, reverse=True) and len(vals) == min(5, entry["num_queries"])
                assert all(0 <= q < entry["num_queries"] for q in entry["sum_over_layers"]["indices"])

    stats = _load(run, "attention_stats.json")
    assert set(stats["sources"]) == {"refiner_time", "rollout", "decoder_cross"}
    keys = {(r["video_id"], r["index"], r["score"]) for v in dims for r in _top(temporal, int(v), JSON_TOP_K)}
    assert {(i["video_id"], i["index"], i["score"]) for i in stats["instances"]} <= keys
    inst = stats["instances"][0]
    assert 0.0 <= inst["refiner_time"]["layer0"]["entropy_normalised"] <= 1.0
    assert set(stats["aggregate"]["per_video"]) == {str(v["video_id"]) for v in tracker["videos"]}

    cues = _load(run, "cue_reading.json")
    assert cues["settings"]["weights_random"] is True
    assert "random" in cues["control_experiment"]["note"] and "uninformative" in cues["control_experiment"]["note"]
    gt = json.loads((made_run["data"] / "valid.json").read_text())
    designed = {c["id"]: c["cue"] for c in gt["categories"]}
    assert {row["category_id"] for row in cues["table"]} == set(designed)
    for row in cues["table"]:
        assert row["designed_cue"] == designed[row["category_id"]]
        assert row["reading"] in ("appearance-based", "motion-based", "mixed", "inconclusive", "not predicted")

    decision = _load(run, "decision_timing.json")
    assert decision["summary"]["predictions"] == len(temporal) and decision["videos"] == len(dims)


# ----------------------------------------------------------------------------- visual outputs


def test_plots_videos_and_tensorboard_have_the_right_frames(made_run):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = made_run["run"]
    plots = run / "inference" / "plots"
    dims = _load(run, "image_dimensions.json")
    temporal = _load(run, "results_temporal.json")
    tracker = _load(run, "tracker_attention.json")
    assert (plots / "cue_table.png").is_file()
    acc = EventAccumulator(str(run / "tensorboard" / "analyze"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    image_tags, scalar_tags = set(acc.Tags()["images"]), set(acc.Tags()["scalars"])
    for key, d in dims.items():
        t, top = d["num_frames"], _top(temporal, int(key))
        for rec in top:
            for kind in ("frame_importance", "temporal_attention", "rollout"):
                assert (plots / kind / f"video_{key}" / f"pred{rec['index']}.png").is_file()
            assert (plots / "decoder_attention" / f"video_{key}" / f"pred{rec['index']}_layer2_per_frame_smooth.png"
                    ).is_file()
            curve = f"frame_importance/video_{key}/instance_{rec['index']}"
            assert [e.step for e in acc.Scalars(curve)] == list(range(t))
        sequences = tracker["videos"][int(key) - 1]["sequences"]
        with_rows = {r["index"] for r in top if sequences[str(r["sequence_id"])]["frames"]}
        pngs = sorted(p.name for p in (plots / "tracker_attention" / f"video_{key}").glob("*.png"))
        assert pngs == sorted(f"pred{k}.png" for k in with_rows) and with_rows
        assert {t for t in image_tags if t.startswith(f"tracker_attention/video_{key}/")} == {
            f"tracker_attention/video_{key}/instance_{k}" for k in with_rows}
        n_frames, _ = imageio_ffmpeg.count_frames_and_secs(str(run / "inference" / "videos" / f"video_{key}.mp4"))
        assert n_frames == t
        best = top[0]["index"]
        assert [e.step for e in acc.Images(f"decoder_attention/video_{key}/instance_{best}/layer2")] == list(range(t))
        assert f"predictions/video_{key}" in image_tags
    assert "summary/cue_table" in image_tags and not scalar_tags - {
        t for t in scalar_tags if t.startswith(("frame_importance/", "metrics/"))}


# ----------------------------------------------------------------------------- missing inputs


def _run_main(capsys, *argv: str) -> tuple[int, str]:
    code = main(["analyze", *argv])
    return code, capsys.readouterr().err


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.startswith("dvis_attn_pl: error:")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def bare_copy(made_run, tmp_path) -> Path:
    """A copy of the run's inputs only (no analysis outputs, no attention)."""
    run = tmp_path / "run"
    shutil.copytree(made_run["run"], run, ignore=shutil.ignore_patterns("plots", "videos", "tensorboard", "*.mp4"))
    for name in JSON_OUTPUTS:
        (run / "inference" / name).unlink()
    return run


def test_missing_attention_is_an_error_when_asked_and_a_note_otherwise(capsys, bare_copy):
    shutil.rmtree(bare_copy / "attention_maps")
    code, err = _run_main(capsys, str(bare_copy), "--only", "tracker")
    assert code == 2
    assert _error_line(err) == (f"dvis_attn_pl: error: {bare_copy}/attention_maps/manifest.json: missing; "
                                "the tracker analysis needs a run with --capture temporal or more")
    assert not (bare_copy / "inference" / "tracker_attention.json").exists()
    code, err = _run_main(capsys, str(bare_copy), "--no-video", "--no-tensorboard", "--top-k", "1")
    assert code == 0
    notes = [ln for ln in err.splitlines() if "skipped" in ln]
    assert any(ln.endswith("skipped tracker: " f"{bare_copy}/attention_maps/manifest.json: missing; the tracker "
                           "analysis needs a run with --capture temporal or more") for ln in notes), err
    assert any("skipped stats:" in ln for ln in notes)
    assert (bare_copy / "inference" / "frame_importance.json").is_file()
    assert not (bare_copy / "inference" / "tracker_attention.json").exists()


def test_broken_or_wrong_inputs_are_one_line_errors(capsys, bare_copy, tmp_path):
    (tmp_path / "empty").mkdir()
    code, err = _run_main(capsys, str(tmp_path / "empty"))
    assert code == 2 and "inference/results_temporal.json: missing" in _error_line(err)
    code, err = _run_main(capsys, str(bare_copy), "--videos", "99")
    assert code == 2 and "--videos 99: no such video" in _error_line(err)
    code, err = _run_main(capsys, str(bare_copy), "--only", "compare")
    assert code == 2 and "needs --compare OTHER_RUN_DIR" in _error_line(err)
    code, err = _run_main(capsys, str(bare_copy), "--only", "nonsense")
    assert code == 2 and "unknown analysis nonsense" in _error_line(err)
    code, err = _run_main(capsys, str(bare_copy), "--scalings", "per_frame,loudest")
    assert code == 2 and _error_line(err).startswith("dvis_attn_pl: error: --scalings loudest: not one of per_frame")
    code, err = _run_main(capsys, str(bare_copy), "--only", "plots", "--layers", "9", "--videos", "1")
    assert code == 2 and _error_line(err) == (
        "dvis_attn_pl: error: --layers 9: decoder layer not captured (captured: 0, 1, 2)")
    assert not list(bare_copy.glob(".analyze-*"))
    artifact = bare_copy / "attention_maps" / "video_1" / "refiner_time.safetensors"
    data = bytearray(artifact.read_bytes())
    data[-1] ^= 0xFF
    artifact.write_bytes(bytes(data))
    code, err = _run_main(capsys, str(bare_copy), "--only", "stats", "--videos", "1")
    assert code == 2 and _error_line(err).endswith("checksum differs from attention_maps/manifest.json "
                                                   "(file changed or truncated)")
    artifact.unlink()
    code, err = _run_main(capsys, str(bare_copy), "--only", "stats", "--videos", "1")
    assert code == 2 and _error_line(err) == (
        f"dvis_attn_pl: error: {artifact}: missing although listed in attention_maps/manifest.json "
        "(incomplete copy of the run directory?); reading its refiner_time attention needs it")


def test_compare_with_an_identical_run(capsys, bare_copy, made_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(bare_copy, other)
    code, err = _run_main(capsys, str(bare_copy), "--only", "compare", "--compare", str(other), "--top-k", "3")
    assert code == 0, err
    doc = _load(bare_copy, "run_comparison.json")
    temporal = _load(bare_copy, "results_temporal.json")
    expected = sum(len(_top(temporal, v, 3)) for v in {r["video_id"] for r in temporal})
    assert doc["n_pairs"] == expected == len(doc["matches"])
    assert all(m["index_a"] == m["index_b"] and m["iou"] == 1.0 for m in doc["matches"])
    assert doc["jsd"]["mean"] == 0.0 and doc["run_b"] == str(other)


# ----------------------------------------------------------------------------- helpers, against brute force


def test_mask_on_grid_marks_exactly_the_cells_a_mask_pixel_overlaps():
    from dvis_attn_pl.analysis.video_inputs import mask_on_grid

    rng = np.random.default_rng(3)
    h, w, resized, padded = 30, 45, (20, 22), (32, 32)  # the image fills the top-left of the padded input
    masks = rng.random((3, h, w)) < 0.02
    for grid in ((4, 4), (8, 8), (3, 5)):
        got = mask_on_grid(masks, resized, padded, grid).reshape(3, *grid)
        cell_h, cell_w = padded[0] / grid[0], padded[1] / grid[1]
        sy, sx = resized[0] / h, resized[1] / w  # original pixel -> padded-input coordinates
        want = np.zeros_like(got)
        for t, y, x in zip(*np.nonzero(masks)):  # a pixel covers [y, y+1) x [x, x+1) of the frame
            for gy in range(grid[0]):
                for gx in range(grid[1]):
                    if (y * sy < (gy + 1) * cell_h and (y + 1) * sy > gy * cell_h
                            and x * sx < (gx + 1) * cell_w and (x + 1) * sx > gx * cell_w):
                        want[t, gy, gx] = True
        np.testing.assert_array_equal(got, want)
        if grid == (4, 4):  # the last row and column of cells lie in the padding
            assert got.any() and not got[:, -1].any() and not got[:, :, -1].any()


def test_video_mask_iou_and_lazy_masks_match_dense_masks():
    from pycocotools import mask as mask_utils

    from dvis_attn_pl.analysis.compare_runs import temporal_mask_iou
    from dvis_attn_pl.data.rle import RLEMasks, video_mask_iou

    rng = np.random.default_rng(5)
    dense = rng.random((5, 7, 12, 16)) < 0.3  # 5 instances, 7 frames
    dense[1, 2] = False  # an empty frame is stored as null

    def rles(m):
        out = []
        for frame in m:
            if not frame.any():
                out.append(None)
                continue
            r = mask_utils.encode(np.asfortranarray(frame.astype(np.uint8)))
            out.append({"size": r["size"], "counts": r["counts"].decode()})
        return out

    lazy = [RLEMasks(rles(m), 12, 16) for m in dense]
    np.testing.assert_array_equal(np.asarray(lazy[1]), dense[1])
    np.testing.assert_array_equal(lazy[3][[6, 0, 2]], dense[3][[6, 0, 2]])
    np.testing.assert_array_equal(lazy[1].present(), dense[1].any(axis=(1, 2)))
    want = temporal_mask_iou(dense[:2], dense[2:])
    np.testing.assert_allclose(video_mask_iou(lazy[:2], lazy[2:], max_elements=400), want, rtol=1e-6)
