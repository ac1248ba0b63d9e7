"""A 300-frame video through the online and the offline model on CPU: bounded memory, frames decoded
lazily window by window, and masks for all 300 frames.

The model is ``tiny_cpu`` with random weights, the frames 128x192 made on demand in memory.
Random weights make every query foreground, so the tracker would open NUM_NEW_INS sequences at
every frame (3,000 over 300 frames; measured: 1.3 GB and ~25 s), which says nothing about a trained
model. The background logit of every class head is therefore raised by 3, which leaves 10
sequences, a realistic count.

Memory bound (peak RSS during the call minus RSS before it), from what the model must hold:
the bool output masks (k*T*H*W bytes), the final resize's two float32 chunks (2*4*k*T*H*W), the
tracker's per-frame sequence masks (S*T*h*w*4, h, w = padded size / 4), for the offline model the
whole-video mask features and queries (T*C*h*w*4 + T*Q*C*4), plus 64 MiB for one window's
activations and the allocator. A float32 copy of every frame (what must not happen) would be
T*3*H*W*4 = 88 MiB here. Measured in a fresh process with 2 threads: growth online 146-158 MiB
(bound 208 MiB), offline 256-270 MiB (bound 321 MiB); with a float32 copy of every window kept,
243 and 345 MiB. Each 300-frame run takes ~6 s on an idle 2-core machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from dvis_attn_pl import build_model, load_config
from dvis_attn_pl.config import config_path
from dvis_attn_pl.data.frames import LazyFrames
from tests.rss import peak_mib, release_free_memory, reset_peak, rss_mib
from tests.vis_output import check_vis_output

T, H, W = 300, 128, 192
MAX_NUM = 2
BACKGROUND_BIAS = 3.0
SLACK_BYTES = 64 * 2**20
MIB = 2**20


class MovingSquare:
    """A :class:`~dvis_attn_pl.data.frames.FrameSource` that draws frame i when asked and records,
    for every decode, the model's segmenter window at that moment."""

    def __init__(self, num_frames: int, height: int, width: int, model=None) -> None:
        self.num_frames, self.height, self.width = num_frames, height, width
        self.model = model
        self.decoded_in: dict[int, list[tuple[int, int]]] = {}
        yy, xx = np.mgrid[0:height, 0:width]
        self.background = np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 90)], -1).astype(
            np.uint8
        )

    def __len__(self) -> int:
        return self.num_frames

    def load(self, index: int) -> np.ndarray:
        if self.model is not None:
            ctx = self.model.capture_context
            self.decoded_in.setdefault(index, []).append((ctx.frame_start, ctx.frame_end))
        img = self.background.copy()
        side = self.height // 4
        y0 = int(self.height / 2 + self.height / 5 * np.sin(index / 15)) - side // 2
        x0 = (index * 2) % (self.width - side)
        img[y0 : y0 + side, x0 : x0 + side] = (230, 200, 40)
        return img

    def name(self, index: int) -> str:
        return f"moving_square[{index}]"

    def size(self, index: int) -> tuple[int, int]:
        return self.height, self.width


def _model(arch: str):
    cfg = load_config(
        config_path("tiny_cpu"),
        ["MODEL.META_ARCHITECTURE", arch, "MODEL.MASK_FORMER.TEST.MAX_NUM", str(MAX_NUM)],
    )
    torch.manual_seed(0)
    model = build_model(cfg)
    heads = [model.sem_seg_head.predictor.class_embed, model.tracker.class_embed]
    heads += [model.refiner.class_embed] if hasattr(model, "refiner") else []
    with torch.no_grad():
        for head in heads:
            head.bias[-1] += BACKGROUND_BIAS
    return cfg, model


def _video(frames, height: int, width: int) -> list[dict]:
    return [{"image": frames, "height": height, "width": width, "length": len(frames), "video_id": 3}]


def _bound_bytes(model, cfg, num_sequences: int) -> int:
    k, pixels = MAX_NUM, H * W  # frames are 128x192: already multiples of 32, no padding
    feature_pixels = (H // 4) * (W // 4)
    bound = k * T * pixels + 2 * 4 * k * T * pixels + num_sequences * T * feature_pixels * 4
    if hasattr(model, "refiner"):
        channels, queries = (
            int(cfg.MODEL.SEM_SEG_HEAD.MASK_DIM),
            int(cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES),
        )
        bound += T * channels * feature_pixels * 4 + T * queries * int(cfg.MODEL.MASK_FORMER.HIDDEN_DIM) * 4
    return bound + SLACK_BYTES


def run_long_video(arch: str) -> dict:
    """The 300-frame run with every check but the memory bound; returns the measurements.

    Meant for a fresh process (see :func:`test_300_frames_bounded_memory_and_lazy_frames`): heap
    memory freed by earlier work would otherwise be reused and hide part of the growth. Two
    threads, as measured, since per-thread scratch memory grows with the thread count.
    """
    torch.set_num_threads(2)
    cfg, model = _model(arch)
    with torch.no_grad():  # warm-up: first-call allocations are not the video's cost
        model(_video(LazyFrames(MovingSquare(7, H, W), expected_hw=(H, W)), H, W))
    source = MovingSquare(T, H, W, model)
    frames = LazyFrames(source, expected_hw=(H, W))
    release_free_memory()
    before = rss_mib()
    measured = reset_peak() and before is not None
    start = time.perf_counter()
    with torch.no_grad():
        out, info = model.run_with_trace(_video(frames, H, W))
    seconds = time.perf_counter() - start
    growth = (peak_mib() - before) * MIB if measured else None

    check_vis_output(
        out, num_frames=T, output_size=(H, W), num_classes=5, max_num=MAX_NUM, num_rows=len(info.row_seq_ids)
    )
    assert all(m.shape == (T, H, W) for m in out["pred_masks"])
    num_sequences = len({s for s in info.row_seq_ids if s >= 0})
    assert 0 < num_sequences <= 50, num_sequences  # the background bias keeps the tracker realistic

    # every frame decoded exactly once, while its own segmenter window ran
    assert frames.decode_count == T and sorted(source.decoded_in) == list(range(T))
    for index, windows in source.decoded_in.items():
        assert len(windows) == 1
        first, last = windows[0]
        assert first <= index < last <= first + model.window_size, (index, windows)
    return {
        "growth": growth,
        "bound": _bound_bytes(model, cfg, num_sequences),
        "sequences": num_sequences,
        "seconds": seconds,
    }


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["DVIS_DAQ_online", "DVIS_DAQ_offline"])
def test_300_frames_bounded_memory_and_lazy_frames(arch):
    root = Path(__file__).resolve().parents[1]
    code = "import json, sys; from tests.test_long_video import run_long_video as r; print(json.dumps(r(sys.argv[1])))"
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, arch], cwd=root, env=env, capture_output=True, text=True, timeout=540
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["growth"] is None:
        pytest.skip("peak RSS cannot be reset on this platform; the memory bound was not checked")
    print(
        f"\n{arch}: {T} frames in {result['seconds']:.1f} s, {result['sequences']} sequences, "
        f"RSS growth {result['growth'] / MIB:.0f} MiB, bound {result['bound'] / MIB:.0f} MiB"
    )
    assert result["growth"] < result["bound"]


def test_lazy_frames_without_known_size_decode_the_first_frame_once_more():
    cfg, model = _model("DVIS_DAQ_online")
    frames = LazyFrames(MovingSquare(7, 64, 96))  # no expected size: read it from frame 0
    assert frames.frame_size is None
    with torch.no_grad():
        out, info = model.run_with_trace(_video(frames, 64, 96))
    assert frames.decode_count == 7 + 1
    assert all(m.shape == (7, 64, 96) for m in out["pred_masks"])
    assert info.image_size == (64, 96) and info.padded_size == (64, 96)


def test_lazy_and_listed_frames_give_the_same_result():
    cfg, model = _model("DVIS_DAQ_offline")
    lazy = LazyFrames(MovingSquare(12, 64, 96), expected_hw=(64, 96))
    with torch.no_grad():
        a = model(_video(lazy, 64, 96))
        b = model(_video(lazy.materialize(), 64, 96))
    assert a["pred_scores"] == b["pred_scores"] and a["pred_ids"] == b["pred_ids"]
    assert all(torch.equal(x, y) for x, y in zip(a["pred_masks"], b["pred_masks"]))


class GrowingFrames(MovingSquare):
    """Frames that get larger after the first window, with no size declared."""

    def load(self, index: int) -> np.ndarray:
        img = super().load(index)
        return img if index < 5 else np.pad(img, ((0, 64), (0, 0), (0, 0)))


def test_a_later_frame_larger_than_the_first_is_a_clear_error():
    cfg, model = _model("DVIS_DAQ_online")
    frames = LazyFrames(GrowingFrames(7, 64, 96))
    with torch.no_grad(), pytest.raises(ValueError, match="exceeds the video's padded size"):
        model(_video(frames, 64, 96))
