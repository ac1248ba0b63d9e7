"""cue_reading: proxies, effect sizes, Holm, the permutation test, and readings on designed data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dvis_attn_pl.analysis.cue_reading import (
    READINGS,
    class_contrast,
    cohen_d,
    holm_adjust,
    importance_proxies,
    rank_biserial,
    read_cues,
    temporal_attention_proxies,
)

T = 20


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_importance_proxies_hand_cases():
    one_hot = np.zeros(5)
    one_hot[2] = 1.0
    got = importance_proxies(np.stack([np.full(5, 0.2), one_hot]))
    np.testing.assert_allclose(got["importance_entropy"], [1.0, 0.0])
    np.testing.assert_allclose(got["importance_peak_concentration"], [0.0, 1.0])
    single = importance_proxies([[1.0]])
    assert math.isnan(single["importance_entropy"][0])
    few = importance_proxies([[0.5, 0.5, 0.0]], min_frames=3, valid=[True, True, False])
    assert math.isnan(few["importance_peak_concentration"][0])


def test_temporal_attention_proxies_hand_cases():
    t = 4
    eye = np.broadcast_to(np.eye(t), (2, t, t))  # (L, T, T): every frame attends to itself
    uniform = np.full((2, t, t), 1 / t)
    got = temporal_attention_proxies(np.stack([eye, uniform]))
    np.testing.assert_allclose(got["temporal_offdiag_mass"], [0.0, 1 - 1 / t])
    # padding frames dropped: rows renormalised over the 2 valid frames
    masked = temporal_attention_proxies(uniform, valid=[True, True, False, False])
    np.testing.assert_allclose(masked["temporal_offdiag_mass"], [0.5])
    # rollout of identity attention is the identity; per-head input is averaged first
    heads = torch.eye(t).expand(1, 3, 2, t, t)
    np.testing.assert_allclose(
        temporal_attention_proxies(heads, rollout=True)["temporal_offdiag_mass"], [0.0]
    )
    # rollout of uniform attention with the residual: rows of (A + I)/2 products stay off the diagonal
    r = temporal_attention_proxies(uniform, rollout=True)["temporal_offdiag_mass"][0]
    step = (np.full((t, t), 1 / t) + np.eye(t)) / 2
    assert r == pytest.approx(1 - np.diag(step @ step).mean())


def test_effect_sizes_and_holm_hand_cases():
    x, y = np.array([3.0, 5.0]), np.array([1.0, 3.0])
    assert cohen_d(x, y) == pytest.approx(2.0 / math.sqrt(2.0))
    assert rank_biserial(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert rank_biserial(np.array([1.0]), np.array([1.0])) == 0.0
    assert rank_biserial(np.array([1.0, 2.0]), np.array([2.0, 3.0])) == pytest.approx(-0.75)
    assert cohen_d(np.array([1.0, 1.0]), np.array([0.0, 0.0])) == math.inf
    got = holm_adjust([0.01, 0.04, 0.03, np.nan])
    np.testing.assert_allclose(got[:3], [0.03, 0.06, 0.06])
    assert math.isnan(got[3])
    np.testing.assert_allclose(holm_adjust([0.5, 0.9]), [1.0, 1.0])


def test_permutation_p_small_on_clear_effect_and_not_always_small_on_none():
    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(10, bool), np.zeros(20, bool)]
    x = np.where(labels, 2.0, 0.0) + rng.normal(size=30)
    res = class_contrast(x, labels, n_permutations=1000, rng=np.random.default_rng(1))
    assert res["p_value"] <= 2 / 1001 and res["cohen_d"] > 1
    ps = np.array(
        [
            class_contrast(
                np.random.default_rng(s).normal(size=30),
                labels,
                n_permutations=300,
                rng=np.random.default_rng(100 + s),
            )["p_value"]
            for s in range(30)
        ]
    )
    assert (ps < 0.05).mean() <= 0.2
    assert ps.max() > 0.5 and 0.3 < ps.mean() < 0.7


def test_permutation_chunking_gives_the_same_p():
    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(6, bool), np.zeros(9, bool)]
    x = rng.normal(size=15) + labels
    a = class_contrast(x, labels, n_permutations=500, rng=np.random.default_rng(7))
    b = class_contrast(x, labels, n_permutations=500, rng=np.random.default_rng(7), max_elements=15 * 7)
    assert 0 < a["p_value"] < 1 and abs(a["p_value"] - b["p_value"]) < 0.1


def _designed_rows(seed=0, per_class=12, rare=3):
    """Classes with known temporal behaviour, built from raw weights through the proxy functions."""
    rng = np.random.default_rng(seed)

    def importance(kind):
        logits = 0.2 * rng.normal(size=T)
        if kind == "peak":
            logits[rng.integers(T)] += 6.0
        return softmax(logits)

    def time_attention(kind):
        logits = 0.2 * rng.normal(size=(3, T, T))
        if kind == "diag":
            logits += 5.0 * np.eye(T)
        elif kind == "strong_diag":  # frames attend to themselves even more than in "peaked"
            logits += 8.0 * np.eye(T)
        return softmax(logits)

    design = {
        "spread": ("spread", "off", per_class),
        "peaked": ("peak", "diag", per_class),
        "mixed": ("spread", "strong_diag", per_class),
        "rare": ("spread", "off", rare),
    }
    rows, vid = [], 0
    for cls, (imp, att, n) in design.items():
        for _ in range(n):
            row = {"video_id": vid, "category_id": cls}
            row.update({k: float(v[0]) for k, v in importance_proxies(importance(imp)).items()})
            row.update({k: float(v[0]) for k, v in temporal_attention_proxies(time_attention(att)).items()})
            rows.append(row)
            vid += 1
    return rows


def test_readings_on_designed_classes():
    out = read_cues(_designed_rows(), n_permutations=1000)
    json.dumps(out, allow_nan=False)
    r = out["readings"]
    assert r["spread"]["reading"] == "motion-based"
    assert r["peaked"]["reading"] == "appearance-based"
    assert r["mixed"]["reading"] == "mixed"
    assert set(r["mixed"]["votes"]["appearance"]) == {"temporal_offdiag_mass"}
    assert r["rare"]["reading"] == "inconclusive" and "too few videos" in r["rare"]["reason"]
    assert r["rare"]["n_videos"] == 3
    ev = r["peaked"]["evidence"]["importance_entropy"]
    assert ev["rank_biserial"] < -0.3 and ev["p_holm"] <= 0.05 and ev["vote"] == "appearance"
    assert "consistency" in " ".join(out["warnings"])  # default proxy not measured
    assert any("not causation" in s for s in out["limits"])
    assert out["settings"]["n_permutations"] == 1000


def test_no_effect_reads_inconclusive_and_random_weights_flag():
    rng = np.random.default_rng(5)
    rows = [
        {"video_id": i, "category_id": c, "importance_entropy": float(rng.random())}
        for i, c in enumerate(["a", "b"] * 12)
    ]
    out = read_cues(rows, proxies={"importance_entropy": "motion"}, n_permutations=500, weights_random=True)
    for c in ("a", "b"):
        assert out["readings"][c]["reading"] == "inconclusive"
        assert "no proxy separates" in out["readings"][c]["reason"]
    assert any("random" in w for w in out["warnings"])
    assert out["settings"]["weights_random"] is True


def test_single_class_and_no_measurements():
    rows = [{"video_id": i, "category_id": 1, "importance_entropy": 0.5} for i in range(10)]
    out = read_cues(rows, n_permutations=50)
    assert out["readings"]["1"]["reading"] == "inconclusive"
    assert "0 of the other classes" in out["readings"]["1"]["reason"]
    empty = read_cues([{"video_id": 0, "category_id": 2}], n_permutations=10)
    assert empty["readings"]["2"]["reason"] == "no proxy was measured"
    assert set(READINGS) >= {v["reading"] for v in out["readings"].values()}


def test_predictions_of_one_video_are_averaged_into_one_unit():
    rows = [
        {"video_id": 0, "category_id": "a", "importance_entropy": 0.2},
        {"video_id": 0, "category_id": "a", "importance_entropy": 0.4},
        {"video_id": 1, "category_id": "b", "importance_entropy": 0.9},
    ]
    out = read_cues(rows, proxies={"importance_entropy": "motion"}, min_videos=2, n_permutations=10)
    assert out["n_units"] == 2
    assert out["readings"]["a"]["level"]["importance_entropy"] == pytest.approx(0.3)


def test_bad_settings():
    with pytest.raises(ValueError, match="effect"):
        read_cues([], effect="glass")
    with pytest.raises(ValueError, match="direction"):
        read_cues([], proxies={"x": "colour"})
    with pytest.raises(ValueError, match="measurement 0"):
        read_cues([{"video_id": 1}])
