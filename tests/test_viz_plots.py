"""Figures over arrays: attention scalings, resampling, and each plot's content and PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dvis_attn_pl.viz.colors import PALETTE, apply_colormap, blend_heatmap, category_color
from dvis_attn_pl.viz.plots import (
    attention_overlay,
    figure_to_array,
    figure_to_png,
    plot_class_table,
    plot_decoder_attention,
    plot_frame_importance,
    plot_rollout,
    plot_temporal_attention,
    plot_tracker_attention,
    resample_maps,
    save_figure,
    scale_attention,
    true_spans,
)

T, H, W, FH, FW = 6, 48, 64, 6, 8


def make_frames(t: int = T, h: int = H, w: int = W) -> np.ndarray:
    rng = np.random.default_rng(1)
    frames = np.empty((t, h, w, 3), np.uint8)
    frames[...] = (20, 60, 80)
    frames += rng.integers(0, 20, frames.shape, dtype=np.uint8)
    return frames


def make_maps(t: int = T, h: int = FH, w: int = FW) -> np.ndarray:
    rng = np.random.default_rng(2)
    maps = rng.random((t, h, w)).astype(np.float32) * 0.1
    maps[np.arange(t), 2, np.arange(t) % w] += 1.0  # a hot cell moving right
    return maps


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "PNG"
        return im.size


# ----------------------------------------------------------------------------- scalings


def test_per_frame_scaling_maps_each_frame_to_unit_range():
    maps = make_maps() * np.arange(1, T + 1)[:, None, None]  # frames differ in magnitude
    s = scale_attention(maps, "per_frame")
    assert s.values.shape == maps.shape
    np.testing.assert_allclose(s.values.min(axis=(1, 2)), 0.0, atol=1e-6)
    np.testing.assert_allclose(s.values.max(axis=(1, 2)), 1.0, atol=1e-6)
    assert (s.vmin, s.vmax) == (0.0, 1.0)


def test_across_frames_scaling_keeps_frame_magnitudes():
    maps = make_maps() * np.arange(1, T + 1)[:, None, None]
    s = scale_attention(maps, "across_frames")
    peaks = s.values.max(axis=(1, 2))
    assert peaks[-1] == pytest.approx(1.0) and s.values.min() == pytest.approx(0.0)
    assert np.all(np.diff(peaks) > 0)  # brighter frames stay brighter
    assert s.vmin == pytest.approx(maps.min()) and s.vmax == pytest.approx(maps.max())


@pytest.mark.parametrize("scaling", ["per_frame_weighted", "across_frames_weighted"])
def test_weighted_scalings_use_importance(scaling):
    maps = make_maps()
    imp = np.array([0.0, 0.1, 0.4, 0.2, 0.2, 0.1])
    s = scale_attention(maps, scaling, imp)
    assert np.all(s.values[0] == 0)  # zero-weight frame is blank
    peaks = s.values.max(axis=(1, 2))
    assert int(np.argmax(peaks)) == 2
    if scaling == "per_frame_weighted":
        np.testing.assert_allclose(peaks, imp / imp.max(), atol=1e-6)


def test_scaling_errors_are_clear():
    with pytest.raises(ValueError, match="not one of"):
        scale_attention(make_maps(), "global")
    with pytest.raises(ValueError, match="needs the frame importance"):
        scale_attention(make_maps(), "per_frame_weighted")
    with pytest.raises(ValueError, match="frames"):
        scale_attention(make_maps(), "across_frames_weighted", np.ones(T + 1))
    with pytest.raises(ValueError, match="non-negative"):
        scale_attention(make_maps(), "per_frame_weighted", -np.ones(T))


# ----------------------------------------------------------------------------- resampling


def test_nearest_resampling_gives_flat_patches():
    maps = np.arange(FH * FW, dtype=np.float32).reshape(1, FH, FW)
    out = resample_maps(maps, (H, W), mode="nearest")
    assert out.shape == (1, H, W)
    blocks = out[0].reshape(FH, H // FH, FW, W // FW)
    assert np.all(blocks == maps[0][:, None, :, None])


def test_bilinear_resampling_is_smooth_and_bounded():
    maps = make_maps()
    out = resample_maps(maps, (H, W))
    assert out.min() >= maps.min() - 1e-6 and out.max() <= maps.max() + 1e-6
    assert len(np.unique(out[0])) > FH * FW  # interpolated, not blocky
    const = resample_maps(np.full((2, FH, FW), 0.3, np.float32), (H, W))
    np.testing.assert_allclose(const, 0.3, atol=1e-6)


def test_resampling_crops_the_padding():
    # the map covers a padded input whose right half is padding: only the left half reaches the frame
    maps = np.zeros((1, 4, 8), np.float32)
    maps[:, :, 4:] = 1.0
    out = resample_maps(maps, (20, 30), mode="nearest", input_hw=(32, 32), padded_hw=(32, 64))
    assert out.max() == 0.0
    # bilinear: only the last half cell before the boundary blends with the padding side
    out = resample_maps(maps, (20, 32), mode="bilinear", input_hw=(32, 32), padded_hw=(32, 64))
    assert out[..., :28].max() == 0.0 and 0.0 < out[..., -1].max() < 0.5
    full = resample_maps(maps, (20, 30), mode="nearest")
    assert full.max() == 1.0
    with pytest.raises(ValueError, match="exceeds"):
        resample_maps(maps, (20, 30), input_hw=(40, 32), padded_hw=(32, 64))


def test_overlay_leaves_zero_weight_frame_untouched():
    frames, maps = make_frames(), make_maps()
    imp = np.array([0.0, 0.1, 0.4, 0.2, 0.2, 0.1])
    for scaling in ("per_frame_weighted", "across_frames_weighted"):
        out, _ = attention_overlay(frames, maps, scaling=scaling, importance=imp, style="grid")
        assert np.array_equal(out[0], frames[0])
        assert not np.array_equal(out[2], frames[2])
    out, _ = attention_overlay(frames, maps, scaling="per_frame")
    assert not np.array_equal(out[0], frames[0])


def test_colors_palette_and_blend():
    assert category_color(1) == PALETTE[0] and category_color(1 + len(PALETTE)) == PALETTE[0]
    assert category_color(None) == (255, 255, 255)
    assert len({category_color(c) for c in range(1, len(PALETTE) + 1)}) == len(PALETTE)
    lut = apply_colormap(np.array([0.0, 1.0]), "viridis")
    assert lut.shape == (2, 3) and lut.dtype == np.uint8 and not np.array_equal(lut[0], lut[1])
    f = make_frames(1)
    assert np.array_equal(blend_heatmap(f, np.zeros(f.shape[:3])), f)
    with pytest.raises(ValueError, match="does not match"):
        blend_heatmap(f, np.zeros((1, 3, 3)))


def test_true_spans():
    assert true_spans([0, 1, 1, 0, 1]) == [(1, 3), (4, 5)]
    assert true_spans([]) == []


# ----------------------------------------------------------------------------- figures


def test_decoder_attention_figure_montage_colorbar_and_png(tmp_path):
    frames, maps = make_frames(), make_maps()
    fig = plot_decoder_attention(frames, maps, frame_indices=[0, 2, 5], ncols=2)
    assert len(fig.axes) == 3 + 1  # three panels and the colour bar
    assert fig.axes[-1].get_ylabel() == "attention, min-max per frame"
    path = save_figure(fig, tmp_path / "sub" / "dec.png", dpi=80)
    w, h = png_size(path.read_bytes())
    assert 400 <= w <= 1200 and 300 <= h <= 1200
    assert [p.name for p in path.parent.iterdir()] == ["dec.png"]  # no temporary left behind
    # default frame choice: evenly spaced, at most max_panels
    fig = plot_decoder_attention(make_frames(20), make_maps(20), max_panels=5)
    assert len(fig.axes) == 5 + 1
    assert [a.get_title().split()[1] for a in fig.axes[:5]] == ["0", "5", "10", "14", "19"]


def test_decoder_attention_weighted_panel_of_zero_weight_frame_is_the_plain_frame():
    frames, maps = make_frames(), make_maps()
    imp = np.array([0.3, 0.0, 0.4, 0.1, 0.1, 0.1])
    fig = plot_decoder_attention(frames, maps, scaling="per_frame_weighted", importance=imp,
                                 frame_indices=[0, 1])
    shown = [np.asarray(ax.images[0].get_array()) for ax in fig.axes[:2]]
    assert np.array_equal(shown[1], frames[1])
    assert not np.array_equal(shown[0], frames[0])
    assert "importance 0" in fig.axes[1].get_title()


def test_decoder_attention_grid_style_draws_cell_boundaries():
    fig = plot_decoder_attention(make_frames(), make_maps(), style="grid", frame_indices=[0])
    ax = fig.axes[0]
    assert len(ax.collections) == 2  # horizontal and vertical boundary lines
    shown = np.asarray(ax.images[0].get_array())
    blocks = shown.reshape(FH, H // FH, FW, W // FW, 3)
    smooth = np.asarray(plot_decoder_attention(make_frames(), make_maps(), frame_indices=[0])
                        .axes[0].images[0].get_array())
    # the heat is flat per cell in grid style: within-cell spread comes from the frame noise only
    spread_grid = np.ptp(blocks.astype(int), axis=(1, 3)).mean()
    spread_smooth = np.ptp(smooth.reshape(FH, H // FH, FW, W // FW, 3).astype(int), axis=(1, 3)).mean()
    assert spread_grid < spread_smooth


def test_grid_lines_follow_cells_inside_the_image_only():
    # map over a padded input whose right half is padding: 4 of the 8 columns of cells are visible
    fig = plot_decoder_attention(make_frames(1, 40, 40), np.ones((1, 4, 8), np.float32), style="grid",
                                 input_hw=(32, 32), padded_hw=(32, 64))
    hl, vl = fig.axes[0].collections
    assert sorted(seg[0][1] for seg in hl.get_segments()) == [9.5, 19.5, 29.5]
    assert sorted(seg[0][0] for seg in vl.get_segments()) == [9.5, 19.5, 29.5]


def test_decoder_attention_rejects_bad_inputs():
    with pytest.raises(ValueError, match="within the video"):
        plot_decoder_attention(make_frames(), make_maps(), frame_indices=[T])
    with pytest.raises(ValueError, match="uint8"):
        plot_decoder_attention(make_frames().astype(np.float32), make_maps())
    with pytest.raises(ValueError, match="style"):
        plot_decoder_attention(make_frames(), make_maps(), style="dots")


def test_temporal_attention_panels_shared_scale_and_padding():
    rng = np.random.default_rng(3)
    a = rng.random((4, 8, 8))
    a /= a.sum(-1, keepdims=True)
    valid = np.array([True] * 6 + [False] * 2)
    a[:, :, 6:] = 50.0  # huge values on padding columns must not set the colour range
    fig = plot_temporal_attention(a, valid, ncols=2)
    assert len(fig.axes) == 4 + 1
    ims = [ax.images[0] for ax in fig.axes[:4]]
    assert all(im.norm.vmax == ims[0].norm.vmax for im in ims) and ims[0].norm.vmax < 1.0
    assert ims[0].get_array().mask[:, 6:].all() and not ims[0].get_array().mask[:6, :6].any()
    assert len(fig.axes[0].patches) == 2  # one hatched row band, one column band
    assert "2 padding frames" in fig._suptitle.get_text()
    assert png_size(figure_to_png(fig))[0] > 500
    with pytest.raises(ValueError, match="square"):
        plot_temporal_attention(np.zeros((2, 3, 4)))


def test_rollout_figure_marks_peak_on_valid_frames():
    t = 7
    r = np.eye(t) * 0.5 + 0.5 / t
    readout = np.array([0.1, 0.2, 0.5, 0.1, 0.1, 0.9, 0.9])
    valid = np.array([True] * 5 + [False] * 2)
    fig = plot_rollout(r, readout, valid=valid)
    assert len(fig.axes) == 3  # matrix, curve, colour bar
    curve_ax = fig.axes[1]
    peak = [ln for ln in curve_ax.lines if ln.get_label().startswith("peak")]
    assert len(peak) == 1 and peak[0].get_xdata()[0] == 2
    with pytest.raises(ValueError, match="same"):
        plot_rollout(r, readout[:-1])


def test_frame_importance_shades_gt_and_marks_peak():
    imp = np.array([0.05, 0.1, 0.4, 0.2, 0.1, 0.1, 0.05])
    gt = np.array([0, 1, 1, 1, 0, 1, 1], bool)
    fig = plot_frame_importance({"pooling": imp, "rollout": imp[::-1]}, gt_present=gt)
    ax = fig.axes[0]
    assert len(ax.patches) == 2  # GT spans [1, 4) and [5, 7)
    stars = [ln for ln in ax.lines if ln.get_marker() == "*"]
    assert sorted(s.get_xdata()[0] for s in stars) == [2, 4]
    assert ax.get_xlabel() == "frame" and "importance" in ax.get_ylabel()
    w, h = png_size(figure_to_png(fig))
    assert w > 600 and 200 < h < 600
    with pytest.raises(ValueError, match="different lengths"):
        plot_frame_importance({"a": imp, "b": imp[:3]})


def test_tracker_attention_highlights_top_k():
    rng = np.random.default_rng(4)
    a = rng.random((5, 30))
    fig = plot_tracker_attention(a, top_k=3, row_labels=[f"seq {i}" for i in range(5)])
    assert len(fig.axes) == 2
    pts = fig.axes[0].collections[0].get_offsets()
    got = {(int(y), int(x)) for x, y in pts}
    want = {(r, int(c)) for r in range(5) for c in np.argsort(-a[r])[:3]}
    assert got == want
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == [f"seq {i}" for i in range(5)]


def test_class_table_figure():
    rows = [
        {"class": "Chinook", "reading": "appearance", "effect size": 0.42, "p-value": 0.0004, "n": 31},
        {"class": "Coho", "reading": "motion", "effect_size": -0.13, "p_value": 0.21, "n": 12},
    ]
    fig = plot_class_table(rows)
    table = fig.axes[0].tables[0]
    texts = {(r, c): cell.get_text().get_text() for (r, c), cell in table.get_celld().items()}
    assert texts[(0, 2)] == "effect size" and texts[(1, 3)] == "<0.001" and texts[(2, 2)] == "-0.130"
    assert table[1, 0].get_text().get_fontweight() == "bold"
    assert table[2, 0].get_text().get_fontweight() != "bold"
    img = figure_to_array(fig)
    assert img.ndim == 3 and img.shape[2] == 3 and img.shape[1] > 500
    with pytest.raises(ValueError, match="row 0 lacks"):
        plot_class_table([{"class": "x"}])
    assert plot_class_table([]).axes[0].texts[0].get_text() == "(no rows)"


def test_figures_do_not_touch_pyplot_state():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plot_frame_importance(np.ones(4))
    plot_tracker_attention(np.ones((2, 3)))
    assert plt.get_fignums() == before
