"""frame_importance: hand-computed statistics of pooling weights, GT overlap, degenerate videos."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dvis_attn_pl.analysis.frame_importance import (
    frame_importance_stats,
    top_mass_frames,
    video_frame_importance,
)


def test_uniform_weights():
    t = 6
    st = frame_importance_stats(np.full(t, 1 / t))
    assert st["entropy"][0] == pytest.approx(math.log(t))
    assert st["entropy_normalised"][0] == pytest.approx(1.0)
    assert st["effective_frames"][0] == pytest.approx(t)
    assert st["peak_concentration"][0] == pytest.approx(0.0)
    assert st["peak_frame"][0] == 0  # first on ties
    np.testing.assert_allclose(st["third_mass"][0], [1 / 3, 1 / 3, 1 / 3])


def test_one_hot_weights():
    w = np.zeros(6)
    w[4] = 1.0
    st = frame_importance_stats(w)
    assert st["entropy"][0] == 0.0
    assert st["entropy_normalised"][0] == 0.0
    assert st["effective_frames"][0] == 1.0
    assert st["peak_frame"][0] == 4 and st["peak_mass"][0] == 1.0
    assert st["peak_concentration"][0] == pytest.approx(1.0)
    np.testing.assert_allclose(st["third_mass"][0], [0.0, 0.0, 1.0])


def test_thirds_for_lengths_not_divisible_by_three():
    st4 = frame_importance_stats([0.1, 0.2, 0.3, 0.4])  # thirds [0, 1, 1, 2]
    np.testing.assert_allclose(st4["third_mass"][0], [0.1, 0.5, 0.4])
    st5 = frame_importance_stats([0.1, 0.2, 0.3, 0.15, 0.25])  # thirds [0, 0, 1, 2, 2]
    np.testing.assert_allclose(st5["third_mass"][0], [0.3, 0.3, 0.4])


def test_valid_mask_renormalises_and_reports_padding_mass():
    w = np.array([0.1, 0.3, 0.2, 0.4])
    valid = np.array([True, True, False, False])
    st = frame_importance_stats(w, valid=valid)
    np.testing.assert_allclose(st["weights"][0], [0.25, 0.75, 0.0, 0.0])
    assert st["mass_on_valid"][0] == pytest.approx(0.4)
    assert st["valid_frames"][0] == 2
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert st["entropy"][0] == pytest.approx(h)
    assert st["entropy_normalised"][0] == pytest.approx(h / math.log(2))
    assert st["peak_concentration"][0] == pytest.approx((0.75 - 0.5) / 0.5)


def test_single_frame_and_all_padding():
    one = frame_importance_stats([1.0])
    assert one["entropy"][0] == 0.0 and one["effective_frames"][0] == 1.0
    assert math.isnan(one["entropy_normalised"][0]) and math.isnan(one["peak_concentration"][0])
    np.testing.assert_allclose(one["third_mass"][0], [0.0, 1.0, 0.0])
    pad = frame_importance_stats([[0.5, 0.5]], valid=[False, False], gt_present=[True, False])
    assert pad["peak_frame"][0] == -1 and pad["valid_frames"][0] == 0
    for key in ("entropy", "entropy_normalised", "peak_mass", "gt_mass", "gt_top_iou", "mass_on_valid"):
        assert math.isnan(pad[key][0]), key
    rec = video_frame_importance("v", [[0.5, 0.5]], valid=[False, False])
    json.dumps(rec, allow_nan=False)
    assert rec["predictions"][0]["entropy"] is None


def test_gt_overlap_hand_case():
    w = [0.1, 0.6, 0.1, 0.1, 0.1]
    present = [False, True, True, False, False]
    st = frame_importance_stats(w, gt_present=present, top_mass=0.75)
    # top-mass set: frame 1 (0.6), then frame 0, frame 2 (ties by order): 0.8 >= 0.75
    assert st["top_mass_frames"][0] == 3
    assert st["gt_mass"][0] == pytest.approx(0.7)
    assert st["gt_fraction"][0] == pytest.approx(0.4)
    assert st["gt_mass_lift"][0] == pytest.approx(0.7 / 0.4)
    assert st["gt_top_iou"][0] == pytest.approx(2 / 3)  # {0,1,2} vs {1,2}
    assert st["gt_top_precision"][0] == pytest.approx(2 / 3)
    assert st["gt_top_recall"][0] == pytest.approx(1.0)
    none = frame_importance_stats(w, gt_present=[False] * 5)
    assert none["gt_top_iou"][0] == 0.0 and math.isnan(none["gt_top_recall"][0])
    assert math.isnan(none["gt_mass_lift"][0]) and none["gt_mass"][0] == 0.0


def test_top_mass_set_exact_reach_and_ties():
    w = np.array([[0.25, 0.25, 0.25, 0.25], [0.1, 0.2, 0.3, 0.4]])
    got = top_mass_frames(w, 0.5)
    assert got[0].tolist() == [True, True, False, False]
    assert got[1].tolist() == [False, False, True, True]  # 0.4 + 0.3 = 0.7 >= 0.5
    assert top_mass_frames(w, 1.0)[1].all()
    with pytest.raises(ValueError):
        top_mass_frames(w, 0.0)


def test_batch_matches_single_rows_and_torch_input():
    rng = np.random.default_rng(0)
    w = rng.random((4, 9))
    w /= w.sum(axis=1, keepdims=True)
    valid = rng.random((4, 9)) > 0.3
    batch = frame_importance_stats(torch.from_numpy(w), valid=valid, gt_present=valid[::-1].copy())
    for i in range(4):
        single = frame_importance_stats(w[i], valid=valid[i], gt_present=valid[::-1][i])
        for key, arr in single.items():
            np.testing.assert_allclose(batch[key][i], arr[0], err_msg=key)


def test_video_record_is_json_and_carries_meta():
    rec = video_frame_importance(
        12,
        [[0.2, 0.3, 0.5], [1 / 3, 1 / 3, 1 / 3]],
        [
            {"refiner_id": 4, "score": 0.9, "category_id": 2},
            {"refiner_id": 7, "score": 0.5, "category_id": 1},
        ],
        gt_present=[True, True, False],
        decimals=4,
    )
    text = json.dumps(rec, allow_nan=False)
    assert rec["video_id"] == 12 and rec["num_frames"] == 3 and rec["has_gt"]
    p0 = rec["predictions"][0]
    assert p0["refiner_id"] == 4 and p0["peak_frame"] == 2
    assert p0["third_mass"] == {"first": 0.2, "middle": 0.3, "last": 0.5}
    h = -sum(x * math.log(x) for x in (0.2, 0.3, 0.5))
    assert p0["entropy"] == round(h, 4)
    assert p0["entropy_normalised"] == round(h / math.log(3), 4)
    assert rec["predictions"][1]["entropy_normalised"] == 1.0
    assert "NaN" not in text


def test_bad_input_messages():
    with pytest.raises(ValueError, match="video 3: .*2 prediction records for 1"):
        video_frame_importance(3, [[0.5, 0.5]], [{}, {}])
    with pytest.raises(ValueError, match="video 3: weights"):
        video_frame_importance(3, [[0.5, -0.5]])
    with pytest.raises(ValueError, match="valid"):
        frame_importance_stats([[0.5, 0.5]], valid=[True, True, True])
