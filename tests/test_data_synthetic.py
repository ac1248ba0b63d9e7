"""The embedded synthetic fish-video set: format, masks, cues, determinism, caching, atomicity."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from dvis_attn_pl.data import synthetic
from dvis_attn_pl.data.dataset import YTVISVideoDataset
from dvis_attn_pl.data.synthetic import (
    CACHE_ENV,
    SyntheticParams,
    ensure_synthetic_dataset,
    write_synthetic_dataset,
)
from dvis_attn_pl.data.ytvis_json import load_ytvis_json

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TINY = {"num_videos": 4, "seed": 3, "height": 48, "width": 64, "min_frames": 5, "max_frames": 8}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    start = time.perf_counter()
    path = write_synthetic_dataset(tmp_path_factory.mktemp("syn") / "set", **TINY)
    return path, time.perf_counter() - start


def _decode(rle):
    return mask_utils.decode([{"size": rle["size"], "counts": rle["counts"].encode()}])[:, :, 0]


def _tree_digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_tiny_generation_is_fast_and_complete(tiny):
    path, seconds = tiny
    assert seconds < 5.0
    assert sorted(p.name for p in path.iterdir()) == ["JPEGImages", "metadata.json", "valid.json"]
    assert not list(path.parent.glob(".*tmp*"))


def test_reads_back_through_own_reader_and_dataset(tiny):
    path, _ = tiny
    data = load_ytvis_json(path / "valid.json")
    assert len(data.videos) == TINY["num_videos"] and data.has_annotations
    for v in data.videos:
        assert (v.height, v.width) == (48, 64) and 5 <= v.length <= 8
        assert all((path / "JPEGImages" / n).is_file() and n.endswith(".png") for n in v.file_names)
    ds = YTVISVideoDataset(path / "valid.json", path / "JPEGImages", {"INPUT": {"MIN_SIZE_TEST": 0}})
    item = ds[0]
    frames = item["image"].stack()
    assert frames.shape == (item["length"], 3, 48, 64)
    first = np.asarray(Image.open(path / "JPEGImages" / data.videos[0].file_names[0]))
    assert np.array_equal(frames[0].permute(1, 2, 0).numpy(), first)
    assert item["annotations"] and all(a["category_id"] in {1, 2, 3, 4, 5} for a in item["annotations"])


def test_masks_areas_boxes_and_presence_agree(tiny):
    path, _ = tiny
    gt = json.loads((path / "valid.json").read_text())
    meta = json.loads((path / "metadata.json").read_text())
    fish_meta = {f["annotation_id"]: f for v in meta["videos"] for f in v["fish"]}
    assert set(fish_meta) == {a["id"] for a in gt["annotations"]}
    for ann in gt["annotations"]:
        present = []
        for t, (seg, area, box) in enumerate(zip(ann["segmentations"], ann["areas"], ann["bboxes"])):
            if seg is None:
                assert area is None and box is None
                continue
            assert isinstance(seg["counts"], str) and seg["size"] == [48, 64]
            mask = _decode(seg)
            assert mask.sum() == area > 0  # non-empty where the fish is present, areas consistent
            ys, xs = np.nonzero(mask)
            assert box == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            present.append(t)
        info = fish_meta[ann["id"]]
        assert present and info["present_frames"] == present
        assert info["category_id"] == ann["category_id"]
        assert info["first_frame"] == present[0] and info["last_frame"] == present[-1]


def test_masks_of_one_frame_do_not_overlap(tiny):
    path, _ = tiny
    gt = json.loads((path / "valid.json").read_text())
    for video in gt["videos"]:
        anns = [a for a in gt["annotations"] if a["video_id"] == video["id"]]
        for t in range(video["length"]):
            stack = [_decode(a["segmentations"][t]) for a in anns if a["segmentations"][t]]
            if len(stack) > 1:
                assert np.sum(stack, axis=0).max() == 1  # visible (modal) masks


def test_species_cues_recorded(tiny):
    path, _ = tiny
    gt = json.loads((path / "valid.json").read_text())
    meta = json.loads((path / "metadata.json").read_text())
    cats = {c["name"]: c for c in gt["categories"]}
    assert len(cats) >= 4
    assert {c["cue"] for c in cats.values()} == {"appearance", "motion"}
    for group in ("appearance", "motion"):
        members = [c for c in cats.values() if c["group"] == group]
        assert len(members) >= 2
        same = "motion" if group == "appearance" else "appearance"
        other = "appearance" if group == "appearance" else "motion"
        # identical parameters for the cue that must not separate them, different for the one that does
        assert all(m["design"][same] == members[0]["design"][same] for m in members)
        designs = [json.dumps(m["design"][other], sort_keys=True) for m in members]
        assert len(set(designs)) == len(designs)
    motion_kinds = {c["design"]["motion"]["kind"] for c in cats.values()}
    assert motion_kinds == {"cruise", "sinusoidal", "dart", "hover"}
    assert meta["version"] == synthetic.GENERATOR_VERSION and meta["seed"] == TINY["seed"]
    assert meta["params"] == SyntheticParams(**TINY).as_dict()
    assert meta["species"] == gt["categories"]
    for video in meta["videos"]:
        assert video["species"] and video["frames_with_fish"]
        assert {"occluders", "background"} <= set(video["scene"])


def _pose_and_speed(species, runs=150, frames=36):
    """Per-frame tail bend, body tilt off the horizontal (degrees) and speed (px/frame) of simulated fish."""
    from dvis_attn_pl.data.synthetic_species import simulate_motion

    rng = np.random.default_rng(7)
    bend, tilt, speed = [], [], []
    for _ in range(runs):
        tr = simulate_motion(species.motion, frames, 320, 240, float(rng.choice([0.0, np.pi])), rng)
        bend.append(tr.tail_amp * np.sin(tr.tail_phase))
        off = np.abs(np.angle(np.exp(1j * tr.heading), deg=True))
        tilt.append(np.minimum(off, 180 - off))
        speed.append(np.hypot(np.diff(tr.x), np.diff(tr.y)))
    return np.concatenate(bend), np.concatenate(tilt), np.concatenate(speed)


def test_motion_species_share_one_posture_per_frame():
    """Generator version 2: one frame does not tell the motion species apart (same tail bend and body
    tilt distributions), their movement over frames does (speed distributions differ)."""
    from dvis_attn_pl.data.synthetic_species import SPECIES

    motion = [_pose_and_speed(sp) for sp in SPECIES if sp.group == "motion"]
    q = np.linspace(0.05, 0.95, 19)
    for bend, tilt, _ in motion[1:]:
        assert np.abs(np.quantile(bend, q) - np.quantile(motion[0][0], q)).max() < 0.01  # body lengths
        assert np.abs(np.quantile(tilt, q) - np.quantile(motion[0][1], q)).max() < 1.0  # degrees
    speeds = [np.quantile(m[2], [0.1, 0.5, 0.9]) for m in motion]
    for i in range(len(speeds)):
        for j in range(i + 1, len(speeds)):
            assert np.abs(speeds[i] - speeds[j]).max() > 1.0  # px/frame: the motion differs


def test_generation_is_deterministic(tiny, tmp_path):
    path, _ = tiny
    again = write_synthetic_dataset(tmp_path / "again", **TINY)
    assert (again / "valid.json").read_bytes() == (path / "valid.json").read_bytes()
    assert _tree_digest(again) == _tree_digest(path)
    other = write_synthetic_dataset(tmp_path / "other", **{**TINY, "seed": 4})
    assert (other / "valid.json").read_bytes() != (path / "valid.json").read_bytes()


def test_cache_reused_and_env_respected(tmp_path, monkeypatch):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    params = {**TINY, "num_videos": 2}
    first = ensure_synthetic_dataset(**params)
    assert first.parent == tmp_path / "cache" and first.name.startswith(f"synthetic_fish_v{synthetic.GENERATOR_VERSION}_")
    assert first.name == SyntheticParams(**params).dir_name

    def boom(*args, **kwargs):
        raise AssertionError("regenerated although the cache was complete")

    monkeypatch.setattr(synthetic, "_generate_into", boom)
    assert ensure_synthetic_dataset(**params) == first
    monkeypatch.undo()
    elsewhere = ensure_synthetic_dataset(root=tmp_path / "elsewhere", **params)
    assert elsewhere == tmp_path / "elsewhere" / first.name
    assert (elsewhere / "valid.json").read_bytes() == (first / "valid.json").read_bytes()


def test_crash_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic.render_video

    def flaky(params, index):
        calls["n"] += 1
        if index == 1:
            raise RuntimeError("simulated crash")
        return real(params, index)

    monkeypatch.setattr(synthetic, "render_video", flaky)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ensure_synthetic_dataset(root=tmp_path, **{**TINY, "num_videos": 2})
    assert list(tmp_path.iterdir()) == []  # no final folder, no temporary folder
    monkeypatch.setattr(synthetic, "render_video", real)
    done = ensure_synthetic_dataset(root=tmp_path, **{**TINY, "num_videos": 2})
    assert (done / "metadata.json").is_file() and [p.name for p in tmp_path.iterdir()] == [done.name]


def test_write_refuses_existing_folder(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        write_synthetic_dataset(tmp_path / "x", **TINY)


def test_bad_parameters():
    with pytest.raises(ValueError, match="min_frames"):
        SyntheticParams(min_frames=10, max_frames=5)
    with pytest.raises(ValueError, match="num_videos"):
        SyntheticParams(num_videos=0)


@pytest.mark.slow
def test_default_set_generates_in_time(tmp_path):
    start = time.perf_counter()
    path = ensure_synthetic_dataset(root=tmp_path)
    assert time.perf_counter() - start < 20.0
    meta = json.loads((path / "metadata.json").read_text())
    fish = [f for v in meta["videos"] for f in v["fish"]]
    assert len(meta["videos"]) == 12
    assert any(f["enters"] for f in fish) and any(f["leaves"] for f in fish)
    assert any(f["occluded_frames"] for f in fish)
    assert {f["species"] for f in fish} == {c["name"] for c in meta["species"]}
