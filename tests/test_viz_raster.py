"""Charts drawn straight into pixels (``viz.raster``): what the pictures must show."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dvis_attn_pl.viz.raster import (
    PAD,
    _lut,
    draw_frame_importance,
    draw_rollout,
    draw_temporal_attention,
    draw_tracker_attention,
    png,
)


def _has_color(image: np.ndarray, color) -> bool:
    return bool((image == np.asarray(color, np.uint8)).all(-1).any())


def test_temporal_attention_shares_one_scale_and_greys_padding():
    t = 6
    mats = np.full((2, t, t), 0.1, np.float32)
    mats[1, 2, 3] = 0.5  # the maximum over valid frames: the top of the shared scale
    mats[0, 5, 5] = 9.0  # inside a padding frame: excluded from the scale
    valid = np.ones(t, bool)
    valid[5] = False
    image = draw_temporal_attention(mats, valid)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3
    top, low = _lut("viridis")[255], _lut("viridis")[int(0.1 / 0.5 * 255 + 0.5)]
    assert _has_color(image, top) and _has_color(image, low) and _has_color(image, PAD)
    no_pad = draw_temporal_attention(mats[:, :5, :5])
    assert not _has_color(no_pad, PAD)


def test_curves_mark_their_peak_and_inputs_are_checked():
    y = np.array([0.1, 0.2, 0.9, 0.3], np.float32)
    star = (213, 94, 0)
    drawn = draw_rollout(np.eye(4, dtype=np.float32), y)
    assert _has_color(drawn, star)
    with pytest.raises(ValueError):
        draw_rollout(np.eye(4, dtype=np.float32), y[:3])
    with pytest.raises(ValueError):
        draw_frame_importance({"a": y, "b": y[:3]})
    image = draw_frame_importance({"a": y}, gt_present=[False, True, True, False], valid=[1, 1, 0, 1])
    assert image.shape[1] > image.shape[0] > 200


def test_tracker_attention_outlines_the_top_queries_and_png_round_trips():
    a = np.zeros((3, 8), np.float32)
    a[:, 2] = 1.0
    image = draw_tracker_attention(a, top_k=1)
    assert _has_color(image, (255, 255, 255))
    decoded = np.asarray(Image.open(io.BytesIO(png(image))).convert("RGB"))
    assert np.array_equal(decoded, image)
    with pytest.raises(ValueError):
        draw_tracker_attention(np.zeros((0, 3)))
