"""Prediction videos: outlines, the importance strip, ordering, the MP4 writer read back."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest

from dvis_attn_pl.viz.colors import category_color
from dvis_attn_pl.viz.video import (
    PredictionTrack,
    fit_video,
    importance_strip,
    iter_prediction_video,
    mask_outlines,
    render_prediction_video,
    write_mp4,
)

T, H, W = 5, 96, 128


def make_frames(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    frames = np.zeros((t, h, w, 3), np.uint8)
    frames[..., 2] = 90
    frames[..., 1] = (np.arange(t) * 40)[:, None, None]  # each frame has its own colour
    return frames


def box_masks(t: int = T, h: int = H, w: int = W, top: int = 40, left: int = 30, size: int = 30) -> np.ndarray:
    m = np.zeros((t, h, w), bool)
    m[:, top : top + size, left : left + size] = True
    return m


def test_mask_outlines_are_rings_inside_the_mask():
    m = np.zeros((2, 20, 20), bool)
    m[0, 5:15, 5:15] = True
    m[1, :8, :8] = True  # touches the image border
    out = mask_outlines(m, thickness=2)
    assert out.shape == m.shape and out.dtype == bool
    assert not (out & ~m).any()
    ring = m[0].copy()
    ring[7:13, 7:13] = False
    assert np.array_equal(out[0], ring)
    assert out[1, 0, 3] and out[1, 3, 0]  # the image border counts as background
    assert not out[1, 3, 3]
    with pytest.raises(ValueError, match="thickness"):
        mask_outlines(m, thickness=0)


def test_importance_strip_marks_current_frame():
    imp = np.array([0.0, 0.25, 1.0, 0.5])
    strips = importance_strip(imp, width=40, height=20, current=[2, 0])
    assert strips.shape == (2, 20, 40, 3) and strips.dtype == np.uint8
    white = (strips == 255).all(-1)
    cols = np.flatnonzero(white[0].any(0))
    assert cols.min() >= 19 and cols.max() <= 30  # frame 2 occupies columns 20..29
    assert white[0, :, 20:30].any(0).all()  # its whole bar is highlighted (it is the tallest)
    assert np.flatnonzero(white[1].any(0)).max() <= 9  # frame 0 (columns 0..9): a tick, no bar
    assert not white[1, -1].any()
    # bar heights follow the importance: frame 3 (0.5) is about half of frame 2's height
    bar = (strips[1] != strips[1, 0, 35]).any(-1)
    heights = bar[:, [15, 25, 35]].sum(0)
    assert heights[1] > heights[2] > heights[0] > 0


def test_render_outlines_in_species_colour_with_strip():
    frames = make_frames()
    preds = [PredictionTrack(box_masks(), category_id=2, score=0.87, true_category_id=1)]
    imp = np.array([0.1, 0.3, 0.2, 0.0, 0.4])
    out = render_prediction_video(frames, preds, category_names={1: "Chinook", 2: "Coho"},
                                  importance=imp, strip_height=24)
    assert out.shape == (T, H + 24, W, 3) and out.dtype == np.uint8
    color = np.array(category_color(2))
    # bottom edge of the box (text sits above the mask and in the corners, not here)
    assert (out[:, 69, 40:50] == color).all()
    assert (out[:, 55, 45] == frames[:, 55, 45]).all()  # the mask interior is not painted
    legend = out[:, :14, :60]
    assert not np.array_equal(legend, frames[:, :14, :60])  # legend box drawn
    assert not np.array_equal(out[0, H:], out[4, H:])  # the strip marks a different frame


def test_render_order_by_importance_and_attention_weighting():
    frames = make_frames()
    imp = np.array([0.1, 0.3, 0.2, 0.0, 0.4])
    attn = np.random.default_rng(0).random((T, 6, 8)).astype(np.float32) + 0.5
    attn[:, :, :4] = 0.0  # left half of every map is cold: those pixels keep the source frame
    out = render_prediction_video(frames, importance=imp, order_by_importance=True, attention=attn,
                                  attention_scaling="per_frame_weighted", chunk_frames=2)
    assert out.shape[0] == T
    order = [4, 1, 2, 0, 3]  # decreasing importance
    cold = (slice(30, 60), slice(10, 48))  # left half, away from the footer text
    hot = (slice(30, 60), slice(72, 120))
    for k, f in enumerate(order):
        assert np.array_equal(out[k][cold], frames[f][cold]), f"position {k} should show frame {f}"
    # frame 3 has zero importance: no heat anywhere; the others are heated on the right half
    assert np.array_equal(out[-1][hot], frames[3][hot])
    assert not np.array_equal(out[0][hot], frames[4][hot])
    with pytest.raises(ValueError, match="needs the frame importance"):
        render_prediction_video(frames, order_by_importance=True)


def test_chunks_match_whole_render_and_stream_into_mp4(tmp_path):
    frames = make_frames(7)
    preds = [PredictionTrack(box_masks(7), 4, 0.7)]
    opts = dict(importance=np.linspace(1, 0, 7), attention=np.ones((7, 3, 4), np.float32),
                attention_scaling="across_frames_weighted", order_by_importance=True)
    chunks = list(iter_prediction_video(frames, preds, chunk_frames=3, **opts))
    assert [len(c) for c in chunks] == [3, 3, 1]
    whole = render_prediction_video(frames, preds, chunk_frames=100, **opts)
    assert np.array_equal(np.concatenate(chunks), whole)
    path = write_mp4(iter_prediction_video(frames, preds, chunk_frames=3, **opts), tmp_path / "s.mp4")
    assert iio.imread(path).shape == whole.shape


def test_render_rejects_mismatched_masks():
    with pytest.raises(ValueError, match="prediction masks"):
        render_prediction_video(make_frames(), [PredictionTrack(box_masks(h=50), 1, 0.5)])
    with pytest.raises(ValueError, match="uint8"):
        render_prediction_video(make_frames().astype(float))


def test_write_mp4_reads_back(tmp_path):
    frames = make_frames()
    preds = [PredictionTrack(box_masks(), 1, 0.9)]
    clip = render_prediction_video(frames, preds, importance=np.linspace(0, 1, T), strip_height=20)
    path = write_mp4(clip, tmp_path / "videos" / "v.mp4", fps=5)
    assert sorted(p.name for p in path.parent.iterdir()) == ["v.mp4"]
    back = iio.imread(path)
    assert back.shape == (T, H + 20, W, 3)
    err = np.abs(back.astype(int) - clip.astype(int)).mean()
    assert err < 12, f"decoded video differs from the rendered one by {err:.1f} on average"


def test_write_mp4_pads_odd_sizes_and_refuses_empty(tmp_path):
    odd = np.full((3, 33, 47, 3), 128, np.uint8)
    back = iio.imread(write_mp4(odd, tmp_path / "odd.mp4"))
    assert back.shape == (3, 34, 48, 3)
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(np.zeros((0, 4, 4, 3), np.uint8), tmp_path / "e.mp4")
    with pytest.raises(ValueError, match="size changed"):
        write_mp4(iter([odd, odd[:, :20]]), tmp_path / "e.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mp4"]  # nothing half-written left


def test_fit_video_downscales_long_side():
    v = make_frames(2, 300, 600)
    small = fit_video(v, 200)
    assert small.shape == (2, 100, 200, 3) and small.dtype == np.uint8
    assert fit_video(v, 1000) is v
