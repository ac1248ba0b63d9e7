"""Two-run comparison of frame importance (e.g. original vs frame-scrambled input, two checkpoints).

Predictions of run A and run B are matched within a video (by category and best temporal-mask
IoU, or by an id such as the refiner id); each matched pair gives two frame-importance vectors of
the same video, in the same frame order (undo a frame scramble first: :func:`restore_frame_order`).
Pairs whose vectors differ in length cannot be compared frame by frame: they are skipped and
counted. The divergence of a pair is the Jensen-Shannon divergence

    JSD(p, q) = 1/2 KL(p || m) + 1/2 KL(q || m),   m = (p + q) / 2,

in nats (0 for identical vectors, symmetric, at most ln 2; ``base=2`` gives bits, at most 1).

Why not the original follow-up's test. fish-dvis's ``jensen_shannon_test.py`` swapped the two
runs' weights at each frame independently (probability 1/2), renormalised, and compared the mean
JSD with that null. JSD is a sum over frames of a term symmetric in ``(p_t, q_t)``, so a swap
changes it only through the renormalisation: the "null" measures a renormalisation artefact, and
the p-value is near zero even for two independent draws of the same process (see the tests).
Swapping whole vectors within a pair leaves every JSD unchanged, so no label shuffle can test a
symmetric divergence. Its other defects: it ran 10 permutations and reported 5000, truncated
vectors of different lengths to the shorter one (misaligning frames), excluded a hard-coded video,
rebuilt the weights from min-max-normalised fields, and guessed run identity from paths.

Tests offered instead (all with a fixed seed, a configurable, reported permutation count,
vectorised over permutations, and p = (1 + #{null as extreme}) / (1 + P)):

* **difference test** (run labels shuffled within each pair, the follow-up's idea made valid):
  each vector is summarised as its mass in ``bins`` equal bins of normalised time (frame t of T in
  bin ``floor(bins (t + 1/2) / T)``); the statistic is the squared norm of the mean over pairs of
  ``profile_A - profile_B``. Swapping A and B within a pair flips the sign of its difference, so
  under H0 "the two runs are exchangeable within every pair" the test is exact. It detects a
  systematic shift of importance in time (e.g. towards early frames), not pair-specific
  disagreement without a common direction.
* **agreement test**: is the matched pairs' mean JSD smaller than when run B's vectors are
  shuffled among pairs of the same length? H0: run B's vector is unrelated to which video run A's
  came from. A small p means the runs pick the same frames of a video more than chance.
* **paired sign-flip tests** on per-prediction scalars (normalised entropy, peak concentration).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from ..data.rle import video_mask_iou
from ..utils.arrays import as_array, json_ready, permutation_p_value
from .frame_importance import frame_importance_stats

__all__ = [
    "agreement_test",
    "compare_frame_importance",
    "difference_test",
    "js_divergence",
    "match_by_id",
    "match_by_iou",
    "paired_sign_flip_test",
    "pairs_from_matches",
    "restore_frame_order",
    "temporal_mask_iou",
    "time_profile",
]


def js_divergence(p: Any, q: Any, axis: int = -1, base: float | None = None) -> np.ndarray:
    """Jensen-Shannon divergence between non-negative vectors along ``axis`` (renormalised to sum 1).

    Natural log by default (<= ln 2); ``base=2`` gives bits. NaN where a vector sums to zero.
    """
    p = as_array(p, name="p")
    q = as_array(q, name="q")
    if p.shape != q.shape:
        raise ValueError(f"JS divergence needs equal shapes, got {p.shape} and {q.shape}")
    if (p < 0).any() or (q < 0).any():
        raise ValueError("JS divergence needs non-negative vectors")
    sp = p.sum(axis=axis, keepdims=True)
    sq = q.sum(axis=axis, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = p / sp
        q = q / sq
        m = 0.5 * (p + q)
        kl_p = np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0) / np.where(m > 0, m, 1.0)), 0.0)
        kl_q = np.where(q > 0, q * np.log(np.where(q > 0, q, 1.0) / np.where(m > 0, m, 1.0)), 0.0)
    d = 0.5 * (kl_p.sum(axis=axis) + kl_q.sum(axis=axis))
    d = np.clip(d, 0.0, math.log(2.0))
    ok = (np.squeeze(sp, axis=axis) > 0) & (np.squeeze(sq, axis=axis) > 0)
    d = np.where(ok, d, np.nan)
    return d / math.log(base) if base is not None else d


def restore_frame_order(weights: Any, frame_numbers: Sequence[int]) -> np.ndarray:
    """Put the weights (..., T) of a frame-scrambled run back in ascending frame-number order."""
    w = as_array(weights, name="weights")
    nums = np.asarray(frame_numbers)
    if nums.shape != (w.shape[-1],):
        raise ValueError(
            f"frame_numbers: {nums.shape[0] if nums.ndim else 0} numbers for {w.shape[-1]} frames"
        )
    if np.unique(nums).size != nums.size:
        raise ValueError("frame_numbers: repeated frame numbers")
    return w[..., np.argsort(nums, kind="stable")]


def temporal_mask_iou(masks_a: Any, masks_b: Any, chunk: int = 1 << 20) -> np.ndarray:
    """IoU over the whole video of every pair of instance masks: (Na, T, H, W) x (Nb, T, H, W) -> (Na, Nb).

    ``|A ∩ B| / |A ∪ B|`` summed over all frames (0 when both are empty): dense masks through
    :func:`dvis_attn_pl.data.rle.video_mask_iou` (the one implementation), in chunks of whole frames
    holding about ``chunk`` pixels per instance, so memory stays bounded.
    """
    a = as_array(masks_a, dtype=bool, name="masks_a")
    b = as_array(masks_b, dtype=bool, name="masks_b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"masks of the two runs differ in (T, H, W): {a.shape[1:]} vs {b.shape[1:]}")
    return video_mask_iou(list(a), list(b), max_elements=max(chunk, 1) * (len(a) + len(b)))


def match_by_iou(
    iou: Any,
    categories_a: Sequence[Any] | None = None,
    categories_b: Sequence[Any] | None = None,
    min_iou: float = 0.5,
) -> list[tuple[int, int, float]]:
    """One-to-one matches ``(i, j, iou)`` of one video's predictions (Hungarian assignment).

    ``iou`` (Na, Nb) (e.g. :func:`temporal_mask_iou`). Only pairs with IoU >= ``min_iou`` (and, with
    categories, of the same category) may match; among those, the assignment has the most matches
    and, among such, the largest total IoU. Sorted by ``i``.
    """
    m = as_array(iou, name="iou")
    if m.ndim != 2:
        raise ValueError(f"iou: expected (Na, Nb), got shape {m.shape}")
    allowed = m >= min_iou
    if categories_a is not None and categories_b is not None:
        ca, cb = np.asarray(categories_a, dtype=object), np.asarray(categories_b, dtype=object)
        if ca.shape != (m.shape[0],) or cb.shape != (m.shape[1],):
            raise ValueError("categories: one per prediction of each run is needed")
        allowed &= ca[:, None] == cb[None, :]
    if not allowed.any():
        return []
    # allowed pairs get a bonus larger than any total IoU: the most matches first, then the best IoU
    bonus = float(min(m.shape)) + 1.0
    score = np.where(allowed, m + bonus, 0.0)
    rows, cols = linear_sum_assignment(score, maximize=True)
    keep = allowed[rows, cols]
    return [(int(i), int(j), float(m[i, j])) for i, j in zip(rows[keep], cols[keep])]


def match_by_id(ids_a: Sequence[Any], ids_b: Sequence[Any]) -> list[tuple[int, int]]:
    """Matches ``(i, j)`` of one video's predictions with equal ids (e.g. refiner ids); ids must be unique."""
    for name, ids in (("ids_a", ids_a), ("ids_b", ids_b)):
        if len(set(ids)) != len(ids):
            raise ValueError(f"{name}: ids repeat within the video, cannot match by id")
    where_b = {v: j for j, v in enumerate(ids_b)}
    return [(i, where_b[v]) for i, v in enumerate(ids_a) if v in where_b]


def _normalised_rows(vectors: Sequence[Any], name: str) -> list[np.ndarray]:
    out = []
    for i, v in enumerate(vectors):
        x = as_array(v, name=f"{name} vector {i}").reshape(-1)
        total = x.sum()
        if not np.isfinite(x).all() or (x < 0).any() or not total > 0:
            raise ValueError(f"{name} vector {i}: weights must be finite, non-negative, with positive sum")
        out.append(x / total)
    return out


def _check_pairs(
    vectors_a: Sequence[Any], vectors_b: Sequence[Any]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    if len(vectors_a) != len(vectors_b):
        raise ValueError(f"{len(vectors_a)} vectors of run A for {len(vectors_b)} of run B")
    a = _normalised_rows(vectors_a, "run A")
    b = _normalised_rows(vectors_b, "run B")
    for i, (x, y) in enumerate(zip(a, b)):
        if x.size != y.size:
            raise ValueError(f"pair {i}: lengths {x.size} and {y.size} differ")
    return a, b


def time_profile(weights: Any, bins: int = 10) -> np.ndarray:
    """Mass of ``weights`` (..., T) in ``bins`` equal bins of normalised time: (..., bins)."""
    w = as_array(weights, name="weights")
    t = w.shape[-1]
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    which = (bins * (2 * np.arange(t) + 1)) // (2 * max(t, 1))
    return w @ np.eye(bins)[which]


def difference_test(
    vectors_a: Sequence[Any],
    vectors_b: Sequence[Any],
    *,
    bins: int = 10,
    n_permutations: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Run labels shuffled within pairs: is importance shifted in time between the runs? (module doc)

    Returns ``profile_a``/``profile_b`` (mean time profiles, (bins,)), ``statistic``, ``p_value``.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    a, b = _check_pairs(vectors_a, vectors_b)
    if not a:
        return {"profile_a": [], "profile_b": [], "statistic": math.nan, "p_value": math.nan}
    pa = np.stack([time_profile(x, bins) for x in a])
    pb = np.stack([time_profile(y, bins) for y in b])
    diff = pa - pb  # (n, bins)
    n = diff.shape[0]
    observed = float(((diff.mean(axis=0)) ** 2).sum())
    rng = np.random.default_rng(seed)
    signs = np.where(rng.random((n_permutations, n)) < 0.5, -1.0, 1.0)
    null = ((signs @ diff / n) ** 2).sum(axis=1)
    return {
        "profile_a": pa.mean(axis=0),
        "profile_b": pb.mean(axis=0),
        "statistic": observed,
        "p_value": float(permutation_p_value(observed, null, "greater")),
    }


def agreement_test(
    vectors_a: Sequence[Any],
    vectors_b: Sequence[Any],
    *,
    n_permutations: int = 10000,
    seed: int = 0,
    max_chunk_elements: int = 1 << 22,
) -> dict[str, Any]:
    """Matched-pair mean JSD vs run B's vectors shuffled among pairs of equal length (module doc).

    Returns ``observed`` (per pair JSD), ``observed_mean``, ``null`` (P,), ``p_value`` (small =
    the runs agree on a video's frames more than chance), ``pairs_in_test`` (pairs whose length is
    shared by at least one other pair; only those can be shuffled). NaN when none.
    """
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be >= 1, got {n_permutations}")
    a, b = _check_pairs(vectors_a, vectors_b)
    observed = np.array([float(js_divergence(x, y)) for x, y in zip(a, b)])
    lengths = np.array([x.size for x in a], dtype=np.int64)
    values, counts = np.unique(lengths, return_counts=True)
    groups = [np.flatnonzero(lengths == t) for t, c in zip(values, counts) if c >= 2]
    in_test = int(sum(g.size for g in groups))
    out = {"observed": observed, "observed_mean": float(observed.mean()) if observed.size else math.nan}
    if in_test == 0:
        return {**out, "null": np.zeros(0), "p_value": math.nan, "pairs_in_test": 0}
    rng = np.random.default_rng(seed)
    null_sum = np.zeros(n_permutations)
    obs_sum = 0.0
    for idx in groups:  # loop over distinct video lengths
        ga = np.stack([a[i] for i in idx])  # (g, T)
        gb = np.stack([b[i] for i in idx])
        obs_sum += observed[idx].sum()
        step = max(1, max_chunk_elements // ga.size)
        for s in range(0, n_permutations, step):  # chunks of permutations
            p = min(step, n_permutations - s)
            order = rng.random((p, idx.size)).argsort(axis=1)
            d = js_divergence(np.broadcast_to(ga, (p, *ga.shape)), gb[order])
            null_sum[s : s + p] += d.sum(axis=1)
    null = null_sum / in_test
    obs_mean_in_test = obs_sum / in_test
    return {
        **out,
        "observed_mean_in_test": obs_mean_in_test,
        "null": null,
        "p_value": float(permutation_p_value(obs_mean_in_test, null, "less")),
        "pairs_in_test": in_test,
    }


def paired_sign_flip_test(
    x_a: Any, x_b: Any, *, n_permutations: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """Two-sided paired permutation test of ``mean(x_a - x_b)`` (run labels swapped per pair).

    NaN pairs are dropped. Returns ``mean_difference``, ``n``, ``p_value`` (NaN with no pair).
    """
    d = as_array(x_a, name="x_a").reshape(-1) - as_array(x_b, name="x_b").reshape(-1)
    d = d[np.isfinite(d)]
    if d.size == 0:
        return {"mean_difference": math.nan, "n": 0, "p_value": math.nan}
    rng = np.random.default_rng(seed)
    signs = np.where(rng.random((n_permutations, d.size)) < 0.5, -1.0, 1.0)
    null = signs @ d / d.size
    obs = float(d.mean())
    return {"mean_difference": obs, "n": int(d.size), "p_value": float(permutation_p_value(obs, null))}


def _summary(x: np.ndarray) -> dict[str, float]:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return {"mean": math.nan, "std": math.nan, "q05": math.nan, "median": math.nan, "q95": math.nan}
    return {
        "mean": float(x.mean()),
        "std": float(x.std(ddof=1)) if x.size > 1 else math.nan,
        "q05": float(np.quantile(x, 0.05)),
        "median": float(np.median(x)),
        "q95": float(np.quantile(x, 0.95)),
    }


def compare_frame_importance(
    pairs: Sequence[tuple[Any, Any, Any]],
    *,
    n_permutations: int = 10000,
    seed: int = 0,
    bins: int = 10,
    run_names: tuple[str, str] = ("A", "B"),
    base: float | None = None,
) -> dict[str, Any]:
    """JSON-ready comparison of matched frame-importance vectors.

    ``pairs``: ``(key, weights_a, weights_b)`` per matched prediction (e.g. from
    :func:`pairs_from_matches`). Pairs of different lengths, and pairs where a vector has no mass,
    are skipped and counted. Reports per-pair JSD and its summary, the difference test, the
    agreement test and paired sign-flip tests on normalised entropy and peak concentration.
    ``base`` only changes the unit of the reported divergences.
    """
    kept_keys, a_vecs, b_vecs = [], [], []
    skipped: dict[str, list[str]] = {"different_length": [], "no_mass": []}
    for key, wa, wb in pairs:
        a = as_array(wa, name=f"pair {key}: run A").reshape(-1)
        b = as_array(wb, name=f"pair {key}: run B").reshape(-1)
        if a.size != b.size:
            skipped["different_length"].append(str(key))
        elif not (a.sum() > 0 and b.sum() > 0):
            skipped["no_mass"].append(str(key))
        else:
            kept_keys.append(str(key))
            a_vecs.append(a)
            b_vecs.append(b)
    unit = 1.0 if base is None else math.log(base)
    result: dict[str, Any] = {
        "runs": list(run_names),
        "divergence": "Jensen-Shannon divergence of matched frame-importance vectors",
        "unit": "nats" if base is None else f"log base {base:g}",
        "n_pairs": len(kept_keys),
        "skipped": {k: {"count": len(v), "keys": v} for k, v in skipped.items()},
        "n_permutations": int(n_permutations),
        "seed": int(seed),
    }
    if not kept_keys:
        result.update(per_pair_jsd={}, jsd=_summary(np.zeros(0)))
        return json_ready(result)
    agree = agreement_test(a_vecs, b_vecs, n_permutations=n_permutations, seed=seed)
    diff = difference_test(a_vecs, b_vecs, bins=bins, n_permutations=n_permutations, seed=seed)
    obs = agree["observed"] / unit
    result.update(
        per_pair_jsd=dict(zip(kept_keys, obs)),
        jsd=_summary(obs),
        difference_test={
            "null_hypothesis": "the two runs are exchangeable within every matched pair",
            "statistic": "squared norm of the mean difference of time profiles",
            "bins": bins,
            f"profile_{run_names[0]}": diff["profile_a"],
            f"profile_{run_names[1]}": diff["profile_b"],
            "value": diff["statistic"],
            "p_value": diff["p_value"],
        },
        agreement_test={
            "null_hypothesis": f"run {run_names[1]}'s vector is unrelated to the video among pairs of equal length",
            "pairs_in_test": agree["pairs_in_test"],
            "mean_jsd_matched": agree.get("observed_mean_in_test", math.nan) / unit,
            "mean_jsd_shuffled": _summary(agree["null"] / unit),
            "p_value": agree["p_value"],
        },
    )
    summaries = {}
    stats_a = frame_importance_stats_list(a_vecs)
    stats_b = frame_importance_stats_list(b_vecs)
    for name in ("entropy_normalised", "peak_concentration"):
        xa, xb = stats_a[name], stats_b[name]
        summaries[name] = {
            f"mean_{run_names[0]}": float(np.nanmean(xa)) if np.isfinite(xa).any() else math.nan,
            f"mean_{run_names[1]}": float(np.nanmean(xb)) if np.isfinite(xb).any() else math.nan,
            **paired_sign_flip_test(xa, xb, n_permutations=n_permutations, seed=seed),
        }
    result["paired_sign_flip_tests"] = summaries
    return json_ready(result)


def frame_importance_stats_list(vectors: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Normalised entropy and peak concentration of vectors of possibly different lengths: {name: (n,)}."""
    out: dict[str, list[float]] = {"entropy_normalised": [], "peak_concentration": []}
    for v in vectors:  # loop over predictions; each call is vectorised over frames
        st = frame_importance_stats(v)
        for k in out:
            out[k].append(float(st[k][0]))
    return {k: np.asarray(v) for k, v in out.items()}


def pairs_from_matches(
    video_id: Any,
    weights_a: Sequence[Any],
    weights_b: Sequence[Any],
    matches: Sequence[tuple[int, ...]],
    ids_a: Sequence[Any] | None = None,
    ids_b: Sequence[Any] | None = None,
) -> list[tuple[str, Any, Any]]:
    """``(key, weights_a[i], weights_b[j])`` for each match ``(i, j, ...)`` of one video.

    Keys are ``"<video>:<id_a>:<id_b>"`` (ids default to the prediction indices).
    """
    out = []
    for match in matches:
        i, j = int(match[0]), int(match[1])
        ka = ids_a[i] if ids_a is not None else i
        kb = ids_b[j] if ids_b is not None else j
        out.append((f"{video_id}:{ka}:{kb}", weights_a[i], weights_b[j]))
    return out
