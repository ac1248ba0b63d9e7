"""Checks of the official VIS output dict shared by the model-level tests (not a test module)."""

from __future__ import annotations

import numpy as np
import torch

OFFICIAL_KEYS = {"image_size", "pred_scores", "pred_labels", "pred_masks", "pred_ids", "task"}


def check_vis_output(
    out: dict,
    *,
    num_frames: int,
    output_size: tuple[int, int],
    num_classes: int,
    max_num: int,
    num_rows: int,
    allow_empty: bool = False,
) -> int:
    """Assert ``out`` is the official VIS dict of a ``num_frames`` video; returns the prediction count.

    Masks: bool (T, H, W) at the original size; scores: floats in [0, 1], best first; labels in
    [0, K); ids: rows of the instance matrix (< ``num_rows``); (id, label) pairs distinct.
    """
    assert set(out) == OFFICIAL_KEYS, sorted(out)
    assert out["task"] == "vis"
    assert tuple(out["image_size"]) == tuple(output_size)
    n = len(out["pred_scores"])
    assert allow_empty or n > 0, "no prediction"
    assert n <= max_num
    assert len(out["pred_labels"]) == len(out["pred_masks"]) == len(out["pred_ids"]) == n
    scores = out["pred_scores"]
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores), scores
    assert all(a >= b for a, b in zip(scores, scores[1:])), "scores not sorted best first"
    assert all(isinstance(c, int) and 0 <= c < num_classes for c in out["pred_labels"])
    assert all(isinstance(i, int) and 0 <= i < num_rows for i in out["pred_ids"])
    assert len(set(zip(out["pred_ids"], out["pred_labels"]))) == n
    for mask in out["pred_masks"]:
        assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool
        assert tuple(mask.shape) == (num_frames, *output_size)
    return n


def smooth_frames(num_frames: int, height: int, width: int, seed: int = 0) -> list[np.ndarray]:
    """Deterministic RGB uint8 (h, w, 3) frames: a smooth background and a moving bright square."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 200 // max(width, 1), yy * 200 // max(height, 1), np.full_like(xx, 80)], -1)
    frames = []
    side = max(4, min(height, width) // 4)
    for t in range(num_frames):
        img = (base + rng.integers(0, 20, base.shape)).astype(np.uint8)
        y0 = (height // 3 + 3 * t) % max(height - side, 1)
        x0 = (width // 4 + 5 * t) % max(width - side, 1)
        img[y0 : y0 + side, x0 : x0 + side] = (235, 210, 40)
        frames.append(img)
    return frames
