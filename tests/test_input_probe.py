"""The position probe of the refiner's inputs (``training/input_probe.py``)."""

from __future__ import annotations

import numpy as np

from dvis_attn_pl.training.input_probe import TrackInputs, collect_track_inputs, decodability


def _tracks(encode_position: bool, seed: int = 0, videos: int = 10, frames: int = 20) -> list[TrackInputs]:
    rng = np.random.default_rng(seed)
    mixing = rng.normal(size=(2, 16))
    tracks = []
    for v in range(videos):
        start, step = rng.uniform(0.2, 0.8, size=2), rng.normal(0, 0.02, size=2)
        centre = start + step * np.arange(frames)[:, None] + rng.normal(0, 0.01, size=(frames, 2))
        noise = rng.normal(size=(frames, 16))
        embeds = centre @ mixing * 5 + 0.01 * noise if encode_position else noise
        present = np.ones(frames, bool)
        other = rng.normal(size=(frames, 16))  # the frame queries carry nothing here
        tracks.append(TrackInputs(v, v % 3, embeds, centre, present, other, present))
    return tracks


def test_decodability_finds_a_planted_position_code_and_nothing_in_noise():
    coded = decodability(_tracks(encode_position=True))
    instance, frame = coded["sources"]["instance"], coded["sources"]["frame"]
    assert min(instance["position_r2"]) > 0.95 and min(instance["displacement_r2"]) > 0.8, coded
    assert max(frame["position_r2"]) < 0.2 and max(frame["displacement_r2"]) < 0.2, coded
    noise = decodability(_tracks(encode_position=False))["sources"]["instance"]
    assert max(noise["position_r2"]) < 0.2 and max(noise["displacement_r2"]) < 0.2, noise
    assert coded["tracks"] == 10 and coded["videos"] == 10 and instance["frames"] == 200


def test_decodability_needs_two_videos():
    one = [t for t in _tracks(True) if t.video_id == 0]
    assert decodability(one)["sources"]["instance"]["position_r2"] is None


def test_collect_track_inputs_on_the_shipped_model():
    import torch

    from dvis_attn_pl.config import config_path, load_config
    from dvis_attn_pl.data.synthetic import ensure_synthetic_dataset
    from dvis_attn_pl.data.ytvis_json import load_ytvis_json
    from dvis_attn_pl.model.build import build_model
    from dvis_attn_pl.model.checkpoint import load_state_strict, read_checkpoint
    from dvis_attn_pl.training.data import load_training_videos
    from dvis_attn_pl.weights import SHIPPED_WEIGHTS

    cfg = load_config(config_path("tiny_fish"))
    model = build_model(cfg).eval()
    load_state_strict(model, *read_checkpoint(SHIPPED_WEIGHTS), SHIPPED_WEIGHTS)
    root = ensure_synthetic_dataset()
    videos = load_training_videos(load_ytvis_json(root / "valid.json"), root / "JPEGImages", cfg)[:3]
    with torch.no_grad():
        tracks = collect_track_inputs(model, videos)
    assert tracks, "the shipped model segments the first val videos"
    for t in tracks:
        frames = next(v.num_frames for v in videos if v.video_id == t.video_id)
        assert t.embeds.shape == (frames, cfg.MODEL.MASK_FORMER.HIDDEN_DIM)
        assert t.centre.shape == (frames, 2) and t.present.shape == (frames,)
        assert np.all((t.centre >= 0) & (t.centre <= 1)) and t.present.any()
        assert t.frame_queries.shape == t.embeds.shape and t.frame_found.shape == (frames,)
        assert t.frame_found.any() and not (t.frame_found & ~t.present).any()  # found only where visible


def _moving_tracks(encode_position: bool, videos: int = 24, frames: int = 20) -> list[TrackInputs]:
    """Three classes that differ only in motion: still, travelling in x, bobbing in y."""
    rng = np.random.default_rng(3)
    mixing = rng.normal(size=(2, 16))
    t = np.arange(frames)[:, None]
    tracks = []
    for v in range(videos):
        label = v % 3
        start = rng.uniform(0.3, 0.7, size=2)
        path = [np.zeros((frames, 2)), np.hstack([0.02 * t, 0 * t]), np.hstack([0 * t, 0.1 * np.sin(t / 2.0)])][label]
        centre = start + path + rng.normal(0, 0.003, size=(frames, 2))
        noise = rng.normal(size=(frames, 16))
        embeds = centre @ mixing * 5 + 0.01 * noise if encode_position else noise
        present = np.ones(frames, bool)
        tracks.append(TrackInputs(v, label, embeds, centre, present, rng.normal(size=(frames, 16)), present))
    return tracks


def test_trajectory_separability_reads_motion_only_where_the_inputs_carry_position():
    from dvis_attn_pl.training.input_probe import trajectory_separability

    coded = trajectory_separability(_moving_tracks(encode_position=True), {0, 1, 2})["kinds"]
    assert coded["true"]["accuracy"] == 1.0 and coded["true"]["scored"] == 24
    assert coded["instance"]["accuracy"] >= 0.9, coded  # position planted in the instance queries
    assert coded["frame"]["accuracy"] <= 0.6, coded  # the frame queries carry nothing
    noise = trajectory_separability(_moving_tracks(encode_position=False), {0, 1, 2})
    assert noise["kinds"]["instance"]["accuracy"] <= 0.6 and noise["chance"] == 1 / 3
    assert trajectory_separability(_moving_tracks(True), {1, 2})["tracks"] == 16  # only the named classes
