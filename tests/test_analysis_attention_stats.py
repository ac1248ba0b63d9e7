"""attention_stats: hand-computed statistics, conventions for degenerate maps, aggregation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dvis_attn_pl.analysis.attention_stats import (
    aggregate,
    consecutive_correlation,
    early_late_ratio,
    entropy,
    gini,
    linear_slope,
    map_sequence_stats,
    series_stats,
    third_index,
    top_fraction_mass,
)
from dvis_attn_pl.utils.arrays import json_ready, permutation_p_value


def test_thirds_hand_cases():
    assert third_index(1).tolist() == [1]
    assert third_index(2).tolist() == [0, 2]
    assert third_index(3).tolist() == [0, 1, 2]
    assert third_index(4).tolist() == [0, 1, 1, 2]
    assert third_index(5).tolist() == [0, 0, 1, 2, 2]
    assert third_index(6).tolist() == [0, 0, 1, 1, 2, 2]
    assert third_index(8).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert third_index(0).tolist() == []


def test_thirds_symmetric_and_balanced():
    for t in range(1, 60):
        th = third_index(t)
        np.testing.assert_array_equal(th[::-1], 2 - th)
        counts = np.bincount(th, minlength=3)
        assert counts.max() - counts.min() <= 1 + (t == 2)  # T=2 leaves the middle empty
        assert (np.diff(th) >= 0).all()


def test_entropy_uniform_and_one_hot():
    for t in (1, 2, 7, 50):
        assert entropy(np.full(t, 1.0 / t)) == pytest.approx(math.log(t))
    assert entropy(np.array([0.0, 1.0, 0.0])) == 0.0
    assert entropy(np.array([0.5, 0.5, 0.0])) == pytest.approx(math.log(2))


def test_gini_hand_cases():
    assert gini(np.ones(5)) == pytest.approx(0.0)
    assert gini(np.array([0.0, 0.0, 0.0, 2.0])) == pytest.approx(0.75)
    # mean absolute difference form: sum_ij |xi - xj| / (2 n^2 mean) = 20 / 32
    assert gini(np.array([3.0, 0.0, 1.0, 0.0])) == pytest.approx(0.625)
    assert math.isnan(gini(np.zeros(3)))


def test_top_fraction_mass():
    x = np.zeros(20)
    x[[3, 7]] = 1.0
    x[0] = 2.0
    assert top_fraction_mass(x, 0.1) == pytest.approx(3.0 / 4.0)  # 2 largest of 20: 2 + 1 of 4
    assert top_fraction_mass(np.ones(5), 0.1) == pytest.approx(0.2)  # ceil(0.5) = 1 entry


def test_consecutive_correlation_conventions():
    rng = np.random.default_rng(0)
    a = rng.random(30)
    b = rng.random(30)
    maps = np.stack([a, a, 2 * a + 1, -a + 5, b, np.full(30, 0.1), np.full(30, 0.1), np.full(30, 0.3)])
    r = consecutive_correlation(maps)
    assert r[0] == pytest.approx(1.0)
    assert r[1] == pytest.approx(1.0)  # affine copy
    assert r[2] == pytest.approx(-1.0)
    assert r[3] == pytest.approx(np.corrcoef(-a + 5, b)[0, 1])
    assert math.isnan(r[4])  # non-constant vs constant: undefined
    assert r[5] == 1.0  # identical constant maps
    assert math.isnan(r[6])  # different constant maps


def test_linear_slope_and_early_late():
    y = np.arange(6, dtype=float)  # 0..5 over tau 0..1: slope 5
    assert linear_slope(y) == pytest.approx(5.0)
    y2 = y.copy()
    y2[2] = 100.0
    valid = np.ones(6, bool)
    valid[2] = False
    assert linear_slope(y2, valid) == pytest.approx(5.0)
    assert math.isnan(linear_slope(np.array([3.0])))
    # thirds of 6 frames: [0,0,1,1,2,2] -> early mean 0.5, late mean 4.5
    assert early_late_ratio(y) == pytest.approx(0.5 / 4.5)
    batch = np.stack([y, 2 * y])
    np.testing.assert_allclose(linear_slope(batch), [5.0, 10.0])


def test_series_stats_hand_case():
    s = series_stats([1, 2, 3, 4, 5, 6])
    assert s["strength"] == pytest.approx(3.5)
    assert s["variance"] == pytest.approx(np.var([1, 2, 3, 4, 5, 6]))
    assert s["slope"] == pytest.approx(5.0)
    assert s["early_late_ratio"] == pytest.approx(1.5 / 5.5)
    p = np.arange(1, 7) / 21
    assert s["entropy_normalised"] == pytest.approx(entropy(p) / math.log(6))
    u = series_stats(np.full(4, 0.25))
    assert u["entropy_normalised"] == pytest.approx(1.0)
    assert u["gini"] == pytest.approx(0.0)
    assert u["slope"] == pytest.approx(0.0)


def test_map_sequence_identical_maps():
    rng = np.random.default_rng(1)
    m = rng.random(16)
    maps = np.tile(m / m.sum(), (5, 1))
    st = map_sequence_stats(maps)
    assert st["consistency"] == pytest.approx(1.0)
    assert st["consistency_pairs"] == 4
    assert st["strength"] == pytest.approx(1.0 / 16)  # rows sum to one: mean is 1/M
    assert st["strength_slope"] == pytest.approx(0.0, abs=1e-12)
    assert st["entropy_early_late_ratio"] == pytest.approx(1.0)


def test_map_sequence_region_and_one_hot():
    t, m = 4, 10
    maps = np.zeros((t, m))
    maps[np.arange(t), [0, 1, 2, 3]] = 1.0  # the peak moves: maps uncorrelated
    region = np.zeros(m, bool)
    region[:2] = True
    st = map_sequence_stats(maps, region=region)
    assert st["region_mass"] == pytest.approx(0.5)  # frames 0 and 1 inside
    assert st["strength"] == pytest.approx(0.25)  # mean over 2 region entries x 4 frames = 2 / 8
    assert st["entropy_normalised"] == pytest.approx(0.0)
    assert st["gini"] == pytest.approx(1 - 1 / m)
    assert st["top10_mass"] == pytest.approx(1.0)
    r = -1.0 / (m - 1)  # Pearson of two one-hots at different places
    assert st["consistency"] == pytest.approx(r)
    # spatial (T, H, W) input and a padding frame
    maps3 = np.random.default_rng(0).random((3, 2, 5))
    valid = np.array([True, False, True])
    st3 = map_sequence_stats(maps3, valid=valid)
    assert st3["valid_frames"] == 2 and st3["consistency_pairs"] == 0
    assert math.isnan(st3["consistency"])


def test_map_sequence_rejects_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        map_sequence_stats(-np.ones((2, 3)))
    with pytest.raises(ValueError, match="region"):
        map_sequence_stats(np.ones((2, 3)), region=np.ones(4, bool))


def test_aggregate_per_video_then_class():
    rows = [
        {"video_id": 1, "category_id": 7, "x": 1.0},
        {"video_id": 1, "category_id": 7, "x": 3.0},  # video 1 mean 2
        {"video_id": 2, "category_id": 7, "x": 6.0},
        {"video_id": 3, "category_id": 8, "x": 5.0, "y": 1.0},
        {"video_id": 3, "category_id": 8, "x": float("nan")},
    ]
    out = aggregate(rows)
    assert out["statistics"] == ["x", "y"]
    assert out["per_video"]["1"]["x"] == {"mean": 2.0, "std": pytest.approx(math.sqrt(2)), "n": 2}
    assert out["per_video"]["3"]["x"]["n"] == 1 and out["per_video"]["3"]["x"]["std"] is None
    c7 = out["per_class"]["7"]["x"]
    assert c7["mean"] == pytest.approx(4.0) and c7["n"] == 2  # over video means 2 and 6
    assert c7["std"] == pytest.approx(math.sqrt(8))
    assert out["per_class"]["7"]["y"]["n"] == 0 and out["per_class"]["7"]["y"]["mean"] is None
    json.dumps(out, allow_nan=False)


def test_permutation_p_value_and_json_ready():
    null = np.array([0.1, -0.5, 0.2, 0.3])
    assert permutation_p_value(0.25, null, "greater") == pytest.approx(2 / 5)
    assert permutation_p_value(0.25, null, "two-sided") == pytest.approx(3 / 5)
    assert permutation_p_value(-0.4, null, "less") == pytest.approx(2 / 5)
    obj = json_ready({1: np.float32(0.5), "a": [np.nan, np.inf, np.int64(3)], "t": torch.tensor([1.0])})
    assert obj == {"1": 0.5, "a": [None, None, 3], "t": [1.0]}
