"""Lazy frames: no decode before access, windows, broken files, size checks, path safety."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dvis_attn_pl.data.dataset import YTVISVideoDataset
from dvis_attn_pl.data.frames import FrameError, LazyFrames, read_frame, resolve_frame_path
from dvis_attn_pl.data.transforms import ShortestEdgeResize
from dvis_attn_pl.data.ytvis_json import YTVISFormatError

CFG = {"INPUT": {"MIN_SIZE_TEST": 24, "MAX_SIZE_TEST": 1333, "FORMAT": "RGB"}}


def _make_video(root, name="vid", num_frames=6, hw=(16, 20), ext="png"):
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, size=(num_frames, *hw, 3), dtype=np.uint8)
    (root / name).mkdir(parents=True, exist_ok=True)
    names = []
    for t, f in enumerate(frames):
        rel = f"{name}/{t:05d}.{ext}"
        Image.fromarray(f).save(root / rel)
        names.append(rel)
    return frames, names


def _json(tmp_path, names, hw=(16, 20), vid=1):
    obj = {
        "videos": [{"id": vid, "height": hw[0], "width": hw[1], "length": len(names), "file_names": names}],
        "categories": [{"id": 1, "name": "fish"}],
    }
    path = tmp_path / "valid.json"
    path.write_text(json.dumps(obj))
    return path


def test_item_decodes_nothing_until_indexed(tmp_path):
    root = tmp_path / "frames"
    frames, names = _make_video(root)
    ds = YTVISVideoDataset(_json(tmp_path, names), root, CFG)
    item = ds[0]
    image = item["image"]
    assert isinstance(image, LazyFrames)
    assert len(image) == 6 and image.decode_count == 0  # header checks do not decode
    assert image.frame_size == (24, 30) and image.decode_count == 0
    assert "annotations" not in item  # unlabelled json
    window = image[2:5]
    assert isinstance(window, LazyFrames) and len(window) == 3 and image.decode_count == 0
    stacked = torch.stack(list(window))
    assert stacked.shape == (3, 3, 24, 30) and stacked.dtype == torch.uint8
    assert image.decode_count == 3  # shared across views
    one = image[-1]
    assert image.decode_count == 4
    expected = ShortestEdgeResize(24, 1333)(frames[5])
    assert torch.equal(one, expected)
    assert torch.equal(stacked[0], ShortestEdgeResize(24, 1333)(frames[2]))
    assert len(image[::2]) == 3 and image[::2].indices == range(0, 6, 2)


def test_eager_mode_returns_tensors(tmp_path):
    root = tmp_path / "frames"
    frames, names = _make_video(root, num_frames=3)
    item = YTVISVideoDataset(_json(tmp_path, names), root, CFG, eager=True)[0]
    assert isinstance(item["image"], list) and len(item["image"]) == 3
    assert all(t.dtype == torch.uint8 and t.shape == (3, 24, 30) for t in item["image"])


def test_lossless_roundtrip_without_resize(tmp_path):
    root = tmp_path / "frames"
    frames, names = _make_video(root, num_frames=2)
    ds = YTVISVideoDataset(_json(tmp_path, names), root, {"INPUT": {"MIN_SIZE_TEST": 0}})
    assert np.array_equal(ds[0]["image"].stack().permute(0, 2, 3, 1).numpy(), frames)


@pytest.mark.parametrize("damage", ["missing", "empty", "corrupt", "truncated"])
def test_broken_frame_errors_name_the_file(tmp_path, damage):
    root = tmp_path / "frames"
    _, names = _make_video(root, num_frames=3, ext="jpg")
    bad = root / names[1]
    if damage == "missing":
        bad.unlink()
    elif damage == "empty":
        bad.write_bytes(b"")
    elif damage == "corrupt":
        bad.write_bytes(b"this is not an image at all" * 10)
    else:
        bad.write_bytes(bad.read_bytes()[:200])
    ds = YTVISVideoDataset(_json(tmp_path, names), root, CFG)
    with pytest.raises(FrameError) as info:
        frames = ds[0]["image"]  # header check catches missing / empty / unreadable headers
        list(frames)  # the decode catches the rest
    message = str(info.value)
    assert str(bad) in message and "\n" not in message
    assert {"missing": "not found", "empty": "empty", "corrupt": "cannot", "truncated": "cannot"}[
        damage
    ] in message


def test_frame_of_other_size_is_refused(tmp_path):
    root = tmp_path / "frames"
    _, names = _make_video(root, num_frames=3)
    Image.fromarray(np.zeros((16, 21, 3), np.uint8)).save(root / names[2])
    ds = YTVISVideoDataset(_json(tmp_path, names), root, CFG)
    with pytest.raises(FrameError, match=r"00002\.png: frame is 21x16 \(WxH\) but the video is 20x16"):
        ds[0]
    # without the header check, the decode of that frame fails the same way
    lazy = YTVISVideoDataset(_json(tmp_path, names), root, CFG, check_frames=False)[0]["image"]
    lazy[0]
    with pytest.raises(FrameError, match="frame is 21x16"):
        lazy[2]


@pytest.mark.parametrize(
    "name", ["../outside.png", "vid/../../outside.png", "/etc/passwd", "C:\\x.png", ".."]
)
def test_paths_outside_the_root_are_refused(tmp_path, name):
    root = tmp_path / "frames"
    root.mkdir()
    with pytest.raises(YTVISFormatError) as info:  # the json is refused when read
        YTVISVideoDataset(_json(tmp_path, [name]), root, CFG)
    assert "\n" not in str(info.value) and "file_names[0]" in str(info.value)
    with pytest.raises(FrameError) as info:  # and the path itself, for frames named elsewhere
        resolve_frame_path(root, name)
    assert "\n" not in str(info.value)


def test_inner_dotdot_that_stays_inside_is_fine(tmp_path):
    assert resolve_frame_path(tmp_path, "a/../b/0.png") == tmp_path / "b" / "0.png"


def test_read_frame_converts_to_rgb(tmp_path):
    path = tmp_path / "gray.png"
    Image.fromarray(np.full((4, 5), 77, np.uint8), mode="L").save(path)
    rgb = read_frame(path)
    assert rgb.shape == (4, 5, 3) and rgb.dtype == np.uint8 and np.all(rgb == 77)
