"""Test-time preprocessing against the official mapper output (golden) and detectron2's size rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from dvis_attn_pl.data.dataset import YTVISVideoDataset
from dvis_attn_pl.data.transforms import (
    ShortestEdgeResize,
    normalize_and_pad,
    padded_size,
    shortest_edge_output_shape,
)
from tests.golden import CASES, golden_case


def _write_png_video(root, name, frames_thwc):
    names = []
    (root / name).mkdir(parents=True)
    for t, frame in enumerate(frames_thwc.numpy()):
        rel = f"{name}/{t:05d}.png"
        Image.fromarray(frame).save(root / rel)
        names.append(rel)
    return names


@pytest.mark.parametrize("case_name", CASES)
def test_golden_mapper_exact_through_png_files(case_name, tmp_path):
    """Frames saved as PNG, read back, resized: equal to the official mapper's uint8 tensors bit for bit."""
    case = golden_case(case_name)
    videos = []
    for i, meta in enumerate(case.inputs_meta["videos"]):
        frames = case.inputs[f"v{i}.frames_original_rgb_uint8_THWC"]
        names = _write_png_video(tmp_path, f"v{i}", frames)
        videos.append(
            {
                "id": meta["video_id"],
                "height": meta["height"],
                "width": meta["width"],
                "length": meta["length"],
                "file_names": names,
            }
        )
    data = {"videos": videos, "categories": [{"id": 1, "name": "x"}]}
    ds = YTVISVideoDataset.from_data(data, tmp_path, case.cfg)
    assert len(ds) == case.num_videos
    for i, meta in enumerate(case.inputs_meta["videos"]):
        item = ds[i]
        ref = case.inputs[f"v{i}.image_mapper_uint8_TCHW"]
        got = torch.stack(list(item["image"]))
        assert got.dtype == torch.uint8
        assert torch.equal(got, ref), f"{case_name} v{i}: max diff {(got.int() - ref.int()).abs().max()}"
        assert list(ds.resized_hw(i)) == meta["mapper_image_hw"]
        for key in ("height", "width", "length", "video_id", "video_len", "frame_idx"):
            assert item[key] == meta[key], key
        assert item["instances"] == []
        assert [n.split("/")[-2:] for n in item["file_names"]] == [n.split("/") for n in meta["file_names"]]


@pytest.mark.parametrize("case_name", CASES)
def test_golden_mapper_exact_from_arrays(case_name):
    case = golden_case(case_name)
    videos = [
        {"video_id": m["video_id"], "frames": case.inputs[f"v{i}.frames_original_rgb_uint8_THWC"]}
        for i, m in enumerate(case.inputs_meta["videos"])
    ]
    ds = YTVISVideoDataset.from_arrays(videos, case.cfg)
    for i in range(len(ds)):
        assert torch.equal(ds[i]["image"].stack(), case.inputs[f"v{i}.image_mapper_uint8_TCHW"])


@pytest.mark.parametrize("case_name", CASES)
def test_normalize_and_pad_matches_official_backbone_input(case_name):
    case = golden_case(case_name)
    cfg = case.cfg
    with safe_open(str(case.path / "intermediates.safetensors"), "pt") as f:
        ref = f.get_tensor("v0.backbone.win0.input")
    frames = case.inputs["v0.image_mapper_uint8_TCHW"][: ref.shape[0]]
    got = normalize_and_pad(
        frames, cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY
    )
    assert got.dtype == torch.float32
    assert torch.equal(got, ref)
    # the same from a list of (3, h, w) tensors (the model's input format)
    got_list = normalize_and_pad(list(frames), cfg.MODEL.PIXEL_MEAN, cfg.MODEL.PIXEL_STD, 32)
    assert torch.equal(got_list, ref)


def test_shortest_edge_rule():
    assert shortest_edge_output_shape(720, 1280, 480, 1333) == (480, 853)  # the README's example
    assert shortest_edge_output_shape(1280, 720, 480, 1333) == (853, 480)
    assert shortest_edge_output_shape(64, 96, 96, 1333) == (96, 144)
    # the long side capped at max_size: 100 x 2000 -> 480 x 9600 -> scaled by 1333/9600
    assert shortest_edge_output_shape(100, 2000, 480, 1333) == (67, 1333)
    # rounding is half-up on the scaled float: 0.5 goes up
    assert shortest_edge_output_shape(2, 3, 3, 1000) == (3, 5)  # 4.5 -> 5
    assert shortest_edge_output_shape(240, 320, 240, 1333) == (240, 320)


def test_padded_size_rule():
    assert padded_size(96, 144, 32) == (96, 160)
    assert padded_size(480, 853, 32) == (480, 864)
    assert padded_size(97, 33, 32) == (128, 64)
    assert padded_size(97, 33, 0) == (97, 33)
    assert padded_size(97, 33, 1) == (97, 33)


def test_normalize_and_pad_values_and_padding():
    frames = torch.full((2, 3, 5, 7), 100, dtype=torch.uint8)
    out = normalize_and_pad(frames, [100.0, 50.0, 0.0], [1.0, 2.0, 4.0], 4)
    assert out.shape == (2, 3, 8, 8)
    assert torch.all(out[:, 0, :5, :7] == 0)
    assert torch.all(out[:, 1, :5, :7] == 25)
    assert torch.all(out[:, 2, :5, :7] == 25)
    assert torch.all(out[:, :, 5:, :] == 0) and torch.all(out[:, :, :, 7:] == 0)
    # frames of different sizes pad to the largest, top-left aligned
    mixed = [torch.full((3, 4, 6), 10, dtype=torch.uint8), torch.full((3, 6, 3), 20, dtype=torch.uint8)]
    out = normalize_and_pad(mixed, [0, 0, 0], [1, 1, 1], 0)
    assert out.shape == (2, 3, 6, 6)
    assert torch.all(out[0, :, :4, :6] == 10) and torch.all(out[0, :, 4:] == 0)
    assert torch.all(out[1, :, :, :3] == 20) and torch.all(out[1, :, :, 3:] == 0)


def test_resize_downscale_is_pil_bilinear_and_bgr_flips():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(300, 500, 3), dtype=np.uint8)
    out = ShortestEdgeResize(120, 1333, "RGB")(img)
    ref = np.asarray(Image.fromarray(img).resize((200, 120), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
    assert out.shape == (3, 120, 200) and out.dtype == torch.uint8
    assert np.array_equal(out.numpy(), ref)
    bgr = ShortestEdgeResize(120, 1333, "BGR")(img)
    assert torch.equal(bgr, out.flip(0))


def test_resize_from_cfg():
    class Node:
        pass

    cfg = Node()
    cfg.INPUT = Node()
    cfg.INPUT.MIN_SIZE_TEST = 0
    cfg.INPUT.MAX_SIZE_TEST = 1333
    cfg.INPUT.FORMAT = "RGB"
    assert ShortestEdgeResize.from_cfg(cfg).output_shape(37, 51) == (37, 51)  # 0 disables the resize
    assert ShortestEdgeResize.from_cfg(None) == ShortestEdgeResize(480, 1333, "RGB")
    assert ShortestEdgeResize.from_cfg(
        {"INPUT": {"MIN_SIZE_TEST": [360], "FORMAT": "BGR"}}
    ) == ShortestEdgeResize(360, 1333, "BGR")
    with pytest.raises(ValueError, match="MIN_SIZE_TEST"):
        ShortestEdgeResize.from_cfg({"INPUT": {"MIN_SIZE_TEST": [360, 480]}})
    with pytest.raises(ValueError, match="INPUT.FORMAT"):
        ShortestEdgeResize.from_cfg({"INPUT": {"FORMAT": "YUV-BT.601"}})
