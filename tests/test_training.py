"""``fit``: the three training stages on a tiny synthetic set, their losses, exported weights and bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dvis_attn_pl import build_model, load_config
from dvis_attn_pl.config import config_path
from dvis_attn_pl.data.synthetic import write_synthetic_dataset
from dvis_attn_pl.data.ytvis_json import load_ytvis_json
from dvis_attn_pl.training import STAGES
from dvis_attn_pl.training.data import ClipSamples, collate_clips, load_training_videos
from dvis_attn_pl.training.losses import LossWeights, hungarian_match, set_losses, weighted_total
from dvis_attn_pl.training.module import trainable_parameters
from dvis_attn_pl.training.position import mask_centroids
from dvis_attn_pl.training.stages import STAGE_LOSSES
from tests.cli_run import run_cli

SMALL = ["INPUT.MIN_SIZE_TEST", "64"]


@pytest.fixture(scope="module")
def train_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fit") / "train"
    return write_synthetic_dataset(root, num_videos=3, seed=3, height=64, width=96, min_frames=6, max_frames=6)


@pytest.fixture(scope="module")
def val_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fit") / "val"
    return write_synthetic_dataset(root, num_videos=1, seed=4, height=64, width=96, min_frames=4, max_frames=4)


def _fit_args(train: Path, val: Path, out: Path, stage: str, steps: int = 3) -> list[str]:
    return [
        "fit", "--stage", stage, "--out", str(out), "--max-steps", str(steps), "--batch-size", "2",
        "--data", str(train / "valid.json"), "--frames", str(train / "JPEGImages"),
        "--val-data", str(val / "valid.json"), "--val-frames", str(val / "JPEGImages"), *SMALL,
    ]


def _scalars(event_dir: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_dir))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


# ----------------------------------------------------------------------------- the criterion
def test_hungarian_match_finds_the_planted_assignment():
    torch.manual_seed(0)
    targets = (torch.rand(3, 8, 8) > 0.5).float()
    labels = torch.tensor([0, 2, 1])
    order = torch.tensor([4, 0, 2])  # prediction row of each target
    logits = torch.full((5, 4), -4.0)
    masks = torch.full((5, 8, 8), -6.0)
    logits[order, labels] = 4.0
    masks[order] = targets * 12 - 6
    rows, cols = hungarian_match(logits, masks, labels, targets, LossWeights())
    assert dict(zip(cols.tolist(), rows.tolist())) == {0: 4, 1: 0, 2: 2}
    losses = set_losses(logits, masks, rows, cols, labels, targets, torch.ones(4), 3.0)
    worse = set_losses(logits, masks, rows.flip(0), cols, labels, targets, torch.ones(4), 3.0)
    assert all(losses[k] < worse[k] for k in ("loss_ce", "loss_mask", "loss_dice"))


def test_no_object_weight_scales_unmatched_rows():
    logits = torch.zeros(4, 3)
    empty = torch.tensor([1.0, 1.0, 0.1])
    none = torch.zeros(0, dtype=torch.int64)
    loss = set_losses(logits, torch.zeros(4, 2, 2), none, none, none, torch.zeros(0, 2, 2), empty, 1.0)
    assert math.isclose(float(loss["loss_ce"]), math.log(3), rel_tol=1e-5)
    assert float(loss["loss_mask"]) == 0.0 and float(loss["loss_dice"]) == 0.0


# ----------------------------------------------------------------------------- the stages learn
@pytest.mark.parametrize("stage", STAGES)
def test_stage_loss_is_finite_and_falls_on_a_fixed_batch(stage, train_set):
    overrides = ["INPUT.MIN_SIZE_TEST", "64"] + (["MODEL.RESNETS.NORM", "BN"] if stage == "segmenter" else [])
    cfg = load_config(config_path("tiny_cpu"), overrides=overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    model.eval()
    if stage == "segmenter":
        model.backbone.train()
    params = trainable_parameters(model, stage)
    frozen_before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(("backbone", "sem_seg_head"))}
    videos = load_training_videos(load_ytvis_json(train_set / "valid.json"), train_set / "JPEGImages", cfg)
    clip_frames = {"segmenter": 1, "tracker": 3, "refiner": 6}[stage]
    batch = collate_clips([ClipSamples(videos, 4, clip_frames, 2, seed=0)[0]])
    weights = LossWeights.from_cfg(cfg)
    opt = torch.optim.AdamW(params, lr=1e-3)
    totals = []
    for _ in range(12):
        losses = STAGE_LOSSES[stage](model, batch, weights)
        total = weighted_total(losses, weights)
        assert all(torch.isfinite(v) for v in losses.values()), losses
        opt.zero_grad()
        total.backward()
        opt.step()
        totals.append(float(total.detach()))
    assert sum(totals[-3:]) < 0.9 * sum(totals[:3]), totals
    if stage != "segmenter":  # only the stage's own child changes
        after = model.state_dict()
        changed = {k for k, v in frozen_before.items() if not torch.equal(v, after[k])}
        assert changed and all(k.startswith(stage) for k in changed), sorted(changed)[:5]


@pytest.mark.parametrize(("stage", "shuffle"), [("tracker", False), ("refiner", True)])
def test_segmenter_cache_gives_the_losses_of_running_the_segmenter(stage, shuffle, train_set):
    from dvis_attn_pl.training.segmenter_cache import SegmenterCache

    cfg = load_config(config_path("tiny_cpu"), overrides=["INPUT.MIN_SIZE_TEST", "64"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    videos = load_training_videos(load_ytvis_json(train_set / "valid.json"), train_set / "JPEGImages", cfg)
    clip_frames = {"tracker": 3, "refiner": 5}[stage]
    samples = ClipSamples(videos, 6, clip_frames, 2, seed=0, shuffle_frames=shuffle)
    batch = collate_clips([samples[i] for i in range(2)])
    assert {c.source.flip for c in batch} == {False, True}  # both mirrorings are looked up
    weights = LossWeights.from_cfg(cfg)
    cache = SegmenterCache(videos, chunk=clip_frames if stage == "tracker" else model.window_size)
    cached = STAGE_LOSSES[stage](model, batch, weights, None, cache)
    chunks = [(c.source, c.source.frames[i : i + cache.chunk]) for c in batch for i in range(0, len(c.source.frames), cache.chunk)]
    held = {(src.video, src.flip, int(f)) for src, part in chunks if len(part) == cache.chunk for f in part}
    assert held and len(cache) == len(held)  # the frames of every full chunk held, no other
    again = STAGE_LOSSES[stage](model, batch, weights, None, cache)  # served from the cache
    direct = STAGE_LOSSES[stage](model, batch, weights)
    assert cached.keys() == direct.keys() and float(direct["loss_mask"].detach()) > 0  # real losses, not the empty fallback
    for k in direct:  # the same computation; only float reduction order may differ with the batch of frames
        assert torch.equal(cached[k], again[k])
        assert torch.allclose(cached[k], direct[k], rtol=1e-5, atol=1e-6), (k, cached[k], direct[k])
    cache.clear()
    assert len(cache) == 0


def test_mask_centroids_are_the_mass_centres():
    masks = torch.zeros(3, 4, 8)
    masks[0, 1, 2] = 1.0  # one cell: its centre
    masks[1, :, 6:] = 0.5  # a soft band over the last two columns
    centres = mask_centroids(masks)
    assert torch.allclose(centres[0], torch.tensor([2.5 / 8, 1.5 / 4]))
    assert torch.allclose(centres[1], torch.tensor([7.0 / 8, 0.5]))
    assert torch.allclose(centres[2], torch.tensor([0.5, 0.5]))  # empty: the middle, not NaN


@pytest.mark.parametrize("stage", ["segmenter", "tracker"])
def test_position_loss_falls_and_its_head_stays_out_of_the_model(stage, train_set):
    from dvis_attn_pl.training.module import FitModule

    overrides = ["INPUT.MIN_SIZE_TEST", "64"] + (["MODEL.RESNETS.NORM", "BN"] if stage == "segmenter" else [])
    cfg = load_config(config_path("tiny_cpu"), overrides=overrides)
    torch.manual_seed(0)
    model = build_model(cfg)
    keys = set(model.state_dict())
    module = FitModule(model, stage, lr=1e-3, weight_decay=0.0, max_steps=12, contiguous_to_dataset_id=range(5),
                       position_weight=2.0)
    assert set(module.model.state_dict()) == keys  # the exported weights keep the official keys
    assert all(any(p is q for q in module.params) for p in module.position_head.parameters())
    videos = load_training_videos(load_ytvis_json(train_set / "valid.json"), train_set / "JPEGImages", cfg)
    batch = collate_clips([ClipSamples(videos, 4, {"segmenter": 1, "tracker": 3}[stage], 2, seed=0)[0]])
    opt = torch.optim.AdamW(module.params, lr=1e-3)
    values = []
    module._set_modes()
    for _ in range(12):
        losses = STAGE_LOSSES[stage](model, batch, module.weights, module.position_head)
        opt.zero_grad()
        weighted_total(losses, module.weights).backward()
        opt.step()
        values.append(float(losses["loss_position"].detach()))
    assert all(math.isfinite(v) for v in values)
    assert sum(values[-3:]) < 0.7 * sum(values[:3]), values


# ----------------------------------------------------------------------------- the command
def test_fit_all_stages_export_weights_that_test_loads_strictly(train_set, val_set, tmp_path):
    out = tmp_path / "fit"
    for stage in STAGES:
        proc = run_cli(_fit_args(train_set, val_set, out, stage), timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        weights = out / stage / "model_final.safetensors"
        assert weights.is_file()
        summary = json.loads((out / stage / "stage.json").read_text())
        assert summary["steps"] == 3 and summary["val"] is not None and "AP" in summary["val"]
        scalars = _scalars(out / "tensorboard" / stage)
        terms = ("loss_ce", "loss_mask", "loss_dice", "loss") + (("loss_position",) if stage != "refiner" else ())
        for term in terms:
            values = scalars[f"train_{stage}/{term}"]
            assert values and all(math.isfinite(v) for v in values), term
        assert summary["position_loss"] == (0.0 if stage == "refiner" else 2.0)
        assert f"val_{stage}/AP" in scalars
        assert (out / stage / "checkpoints" / "last.ckpt").is_file()
    run = tmp_path / "run"
    proc = run_cli(
        [
            "test", "--ckpt", str(out / "refiner" / "model_final.safetensors"), "--model-config", "tiny_cpu",
            "--data", str(val_set / "valid.json"), "--frames", str(val_set / "JPEGImages"),
            "--out", str(run), "--capture", "none", *SMALL,
        ]
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["weights"] == "checkpoint"
    # the tracker stage changed only the tracker, the refiner stage only the refiner
    from safetensors.torch import load_file

    seg, trk, ref = (load_file(out / s / "model_final.safetensors") for s in STAGES)
    assert all(torch.equal(seg[k], trk[k]) for k in seg if not k.startswith("tracker."))
    assert any(not torch.equal(seg[k], trk[k]) for k in seg if k.startswith("tracker."))
    assert all(torch.equal(trk[k], ref[k]) for k in trk if not k.startswith("refiner."))


def test_fit_resume_continues_from_the_last_checkpoint(train_set, val_set, tmp_path):
    out = tmp_path / "fit"
    first = run_cli(_fit_args(train_set, val_set, out, "segmenter", steps=2))
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_cli([*_fit_args(train_set, val_set, out, "segmenter", steps=4)[:-2], "--resume", *SMALL])
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((out / "segmenter" / "stage.json").read_text())
    assert summary["steps"] == 4 and summary["val"] is not None


# ----------------------------------------------------------------------------- bad input
def _one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_fit_refuses_a_json_without_annotations(train_set, val_set, tmp_path):
    gt = json.loads((train_set / "valid.json").read_text())
    gt.pop("annotations")
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(gt))
    args = _fit_args(train_set, val_set, tmp_path / "out", "segmenter")
    args[args.index("--data") + 1] = str(bare)
    _one_line_error(run_cli(args), "bare.json", "annotations")
    assert not (tmp_path / "out").exists()


def test_fit_refuses_a_category_count_that_differs_from_num_classes(train_set, val_set, tmp_path):
    args = _fit_args(train_set, val_set, tmp_path / "out", "segmenter") + ["MODEL.SEM_SEG_HEAD.NUM_CLASSES", "3"]
    _one_line_error(run_cli(args), "valid.json", "NUM_CLASSES")
    assert not (tmp_path / "out").exists()


def test_fit_refuses_a_stage_whose_previous_weights_are_missing(train_set, val_set, tmp_path):
    _one_line_error(run_cli(_fit_args(train_set, val_set, tmp_path / "out", "refiner")), "tracker", "missing")
    assert not (tmp_path / "out").exists()


def test_fit_refuses_a_negative_position_loss(train_set, val_set, tmp_path):
    args = _fit_args(train_set, val_set, tmp_path / "out", "segmenter")
    _one_line_error(run_cli([*args[:-2], "--position-loss", "-1", *SMALL]), "--position-loss", ">= 0")
    assert not (tmp_path / "out").exists()


def test_a_clip_without_objects_trains_every_query_towards_no_object():
    from dvis_attn_pl.training.data import Clip

    cfg = load_config(config_path("tiny_cpu"), overrides=["INPUT.MIN_SIZE_TEST", "64"])
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    empty = Clip(
        frames=torch.zeros(3, 3, 64, 96, dtype=torch.uint8),
        padded=(64, 96),
        masks=torch.zeros(0, 3, 16, 24),
        labels=torch.zeros(0, dtype=torch.int64),
    )
    for stage in ("tracker", "refiner"):
        losses = STAGE_LOSSES[stage](model, [empty], LossWeights.from_cfg(cfg))
        ce = losses["loss_ce"].detach()
        assert torch.isfinite(ce) and float(ce) > 0
        assert float(losses["loss_mask"].detach()) == 0.0 and float(losses["loss_dice"].detach()) == 0.0


@pytest.mark.slow
def test_fit_under_cpu_ddp_with_two_processes(train_set, val_set, tmp_path):
    out = tmp_path / "fit"
    args = _fit_args(train_set, val_set, out, "segmenter", steps=2)
    proc = run_cli([*args[:-2], "--devices", "2", "--accelerator", "cpu", "--strategy", "ddp", *SMALL], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "segmenter" / "stage.json").read_text())
    assert summary["steps"] == 2 and summary["val"] is not None
    assert (out / "segmenter" / "model_final.safetensors").is_file()


# ----------------------------------------------------------------------------- the shipped weights
def test_shipped_weights_score_the_first_val_videos(tmp_path):
    """``test`` with no weights argument runs the shipped model; on the first four videos of the
    embedded (val) set it finds the fish (a random model scores 0 there)."""
    from dvis_attn_pl.weights import shipped_info

    out = tmp_path / "run"
    proc = run_cli(["test", "--max-videos", "4", "--capture", "none", "--out", str(out)], threads=2, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "weights: the shipped tiny_fish model" in proc.stderr
    metrics = json.loads((out / "inference" / "metrics.json").read_text())
    assert metrics["random_weights"] is False
    assert metrics["ytvis"]["AP50"] >= 0.5, metrics["ytvis"]
    assert json.loads((out / "run.json").read_text())["weights"] == "shipped"
    info = shipped_info()
    assert info["config"] == "tiny_fish" and info["val"]["AP"] >= 0.0
