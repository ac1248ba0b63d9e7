"""RunBoard events, read back with TensorBoard's own loader and served by a real TensorBoard.

The server test starts ``python -m tensorboard.main`` on a free port, checks its HTTP API for the
scalar, image and text tags with the right counts, decodes the animated GIF it serves, and, where
Chromium is installed, screenshots the Images tab headlessly (filtered to the animation's tag) and
checks the logged frames are visible in it.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2

from dvis_attn_pl.viz.plots import plot_frame_importance
from dvis_attn_pl.viz.tensorboard import (
    TENSORBOARD_ARGS,
    RunBoard,
    encode_gif,
    flatten_config,
    make_tag,
    markdown_table,
    metrics_layout,
)

T = 12  # more frames than TensorBoard's default of 10 images per tag
MAGENTA = np.array((255, 0, 255), np.uint8)
METRICS = {"AP": 0.4125, "AP50": 0.61, "AP75": 0.42, "AR1": 0.33, "AR10": 0.5}
CONFIG = {"MODEL": {"META_ARCHITECTURE": "DVIS_DAQ_offline", "MASK_FORMER": {"NUM_OBJECT_QUERIES": 20},
                    "PIXEL_MEAN": [123.7, 116.3, 103.5]},
          "INPUT": {"MIN_SIZE_TEST": 240, "FORMAT": "RGB"}, "SEED": None, "TEST": {"AMP": True}}
DECODER_TAG = "decoder_attention/video_3/instance_0"
VIDEO_TAG = "predictions/video_3"


def frames_with_counter(t: int = T, h: int = 72, w: int = 96) -> np.ndarray:
    """Magenta frames with a dark bar whose length encodes the frame index."""
    frames = np.broadcast_to(MAGENTA, (t, h, w, 3)).copy()
    cols = np.arange(w)[None, :] < (np.arange(1, t + 1)[:, None] * w // (t + 1))
    frames[:, h // 2 - 4 : h // 2 + 4] = np.where(cols[:, None, :, None], 30, frames[:, h // 2 - 4 : h // 2 + 4])
    return frames


def write_run(log_dir: Path) -> dict:
    frames = frames_with_counter()
    with RunBoard(log_dir) as board:
        logged = board.add_metrics(METRICS)
        board.add_layout(metrics_layout(list(logged)))
        board.add_hparams(CONFIG, logged)
        decoder_tag = board.add_frame_images("decoder_attention", frames, video_id=3, instance=0)
        board.add_curve("frame_importance", np.linspace(0, 1, T), video_id=3, instance=0)
        board.add_figure(make_tag("frame_importance", 3, 0, "plot"), plot_frame_importance(np.linspace(0, 1, T)))
        board.add_text_table("summary/metrics", [{"metric": k, "value": v} for k, v in METRICS.items()])
        board.add_animation(VIDEO_TAG, frames, fps=6)
    return {"decoder": decoder_tag, "metrics": logged}


def test_tags_and_helpers():
    assert make_tag("decoder_attention", 12, 0) == "decoder_attention/video_12/instance_0"
    assert make_tag("tracker_attention", "a b/c", None, "layer 5") == "tracker_attention/video_a_b_c/layer_5"
    with pytest.raises(ValueError, match="empty"):
        make_tag("kind", "///")
    flat = flatten_config(CONFIG)
    assert flat == {"MODEL.META_ARCHITECTURE": "DVIS_DAQ_offline", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": 20,
                    "INPUT.MIN_SIZE_TEST": 240, "INPUT.FORMAT": "RGB", "TEST.AMP": True}
    md = markdown_table([{"a": 1, "b": "x|y"}, {"a": float("nan")}])
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |", "| n/a |  |"]
    layout = metrics_layout(["metrics/AP", "metrics/AP50", "metrics/AR1", "metrics/loss"])
    assert sorted(layout["metrics"]) == ["AP", "AR", "loss"]
    assert layout["metrics"]["AP"] == ["Multiline", ["^metrics/AP$", "^metrics/AP50$"]]


def test_runboard_events_read_back(tmp_path):
    tags = write_run(tmp_path)
    assert tags["decoder"] == DECODER_TAG
    ea = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    ea.Reload()
    found = ea.Tags()
    assert set(tags["metrics"]) <= set(found["scalars"])
    assert ea.Scalars("metrics/AP")[0].value == pytest.approx(METRICS["AP"])
    importance = ea.Scalars("frame_importance/video_3/instance_0")
    assert [e.step for e in importance] == list(range(T))
    assert importance[-1].value == pytest.approx(1.0)
    # per-frame images: the frame index is the step, and the decoded image is that frame
    images = ea.Images(DECODER_TAG)
    assert [e.step for e in images] == list(range(T))
    decoded = np.asarray(Image.open(io.BytesIO(images[5].encoded_image_string)).convert("RGB"))
    assert np.array_equal(decoded, frames_with_counter()[5])
    # the animation: a GIF with every frame
    (gif_event,) = ea.Images(VIDEO_TAG)
    with Image.open(io.BytesIO(gif_event.encoded_image_string)) as gif:
        assert gif.format == "GIF" and gif.n_frames == T and gif.size == (96, 72)
    (fig_event,) = ea.Images("frame_importance/video_3/instance_0/plot")
    with Image.open(io.BytesIO(fig_event.encoded_image_string)) as fig_png:
        assert fig_png.format == "PNG" and fig_png.size == (fig_event.width, fig_event.height)
        assert fig_png.size[0] > 600
    # text table, hparams, custom-scalars layout
    assert "summary/metrics" in ea.PluginTagToContent("text")
    (text_event,) = ea.Tensors("summary/metrics")
    md = text_event.tensor_proto.string_val[0].decode()
    assert md.splitlines()[:3] == ["| metric | value |", "|---|---|", "| AP | 0.4125 |"]
    hp = ea.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(hp)
    assert b"MODEL.MASK_FORMER.NUM_OBJECT_QUERIES" in hp["_hparams_/session_start_info"]
    (layout_event,) = ea.Tensors("custom_scalars__config__")
    layout = layout_pb2.Layout.FromString(layout_event.tensor_proto.string_val[0])
    charts = {c.title: list(c.multiline.tag) for c in layout.category[0].chart}
    assert charts == {"AP": ["^metrics/AP$", "^metrics/AP50$", "^metrics/AP75$"],
                      "AR": ["^metrics/AR1$", "^metrics/AR10$"]}


def test_add_png_refuses_other_formats(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="JPEG")
    with RunBoard(tmp_path) as board, pytest.raises(ValueError, match="not PNG"):
        board.add_png("x", buf.getvalue())


def test_encode_gif_round_trip():
    clip = frames_with_counter(4, 20, 30)
    with Image.open(io.BytesIO(encode_gif(clip, fps=5))) as gif:
        assert gif.n_frames == 4
        gif.seek(2)
        assert np.abs(np.asarray(gif.convert("RGB")).astype(int) - clip[2]).max() <= 8
    with pytest.raises(ValueError, match="non-empty"):
        encode_gif(np.zeros((0, 2, 2, 3), np.uint8))


# ----------------------------------------------------------------------------- real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(base: str, path: str, **params):
    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def wait_for_tags(base: str, proc: subprocess.Popen, deadline: float) -> dict:
    """Poll until the server answers and has loaded the scalar tags (bounded)."""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"tensorboard exited with {proc.returncode}")
        try:
            tags = get_json(base, "/data/plugin/scalars/tags")
            if tags.get(".", {}).get("metrics/AP"):
                return tags
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("tensorboard did not serve the run's scalars within the time limit")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def test_tensorboard_server_serves_run_and_browser_shows_images(tmp_path):
    log_dir = tmp_path / "run"
    write_run(log_dir)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "tensorboard.log", "wb")
    cmd = [sys.executable, "-m", "tensorboard.main", "--logdir", str(log_dir), "--host", "127.0.0.1",
           "--port", str(port), "--load_fast=false", *TENSORBOARD_ARGS]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        scalars = wait_for_tags(base, proc, time.monotonic() + 25)
        assert set(METRICS) <= {t.removeprefix("metrics/") for t in scalars["."]}
        (ap,) = get_json(base, "/data/plugin/scalars/scalars", tag="metrics/AP", run=".")
        assert ap[1] == 0 and ap[2] == pytest.approx(METRICS["AP"])

        images = get_json(base, "/data/plugin/images/tags")["."]
        assert {DECODER_TAG, VIDEO_TAG, "frame_importance/video_3/instance_0/plot"} <= set(images)
        per_frame = get_json(base, "/data/plugin/images/images", tag=DECODER_TAG, run=".")
        assert [e["step"] for e in per_frame] == list(range(T))  # every frame, not a sample of 10
        (gif_entry,) = get_json(base, "/data/plugin/images/images", tag=VIDEO_TAG, run=".")
        with urllib.request.urlopen(f"{base}/data/plugin/images/individualImage?{gif_entry['query']}",
                                    timeout=5) as r:
            with Image.open(io.BytesIO(r.read())) as gif:
                assert gif.format == "GIF" and gif.n_frames == T

        assert get_json(base, "/data/plugin/text/tags")["."] == ["summary/metrics"]
        (entry,) = get_json(base, "/data/plugin/text/text", tag="summary/metrics", run=".")
        assert "<table>" in entry["text"] and "0.4125" in entry["text"]  # markdown rendered as a table

        browser = chromium()
        if browser is None:
            pytest.skip("Chromium is not installed: server checks passed, screenshot not taken")
        shot = tmp_path / "images_tab.png"
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'chromium-profile'}", f"--screenshot={shot}",
             "--window-size=1400,1000", "--virtual-time-budget=8000", f"{base}/#images&tagFilter=predictions"],
            check=True, timeout=60, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        img = np.asarray(Image.open(shot).convert("RGB"))
        assert img.shape == (1000, 1400, 3)
        assert len(np.unique(img.reshape(-1, 3), axis=0)) > 50, "screenshot is nearly uniform"
        near_magenta = (np.abs(img.astype(int) - MAGENTA.astype(int)).sum(-1) < 60).sum()
        # the filter puts the animation's card first; each card shows a ~350x260 px magenta clip
        assert near_magenta > 40_000, f"the logged frames are not visible in the Images tab ({near_magenta} px)"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
