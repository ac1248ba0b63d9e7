"""Statistics of attention maps and attention time series (the "attention guide" measures).

Four families, each computed per instance on the frames marked valid, vectorised over frames
and map entries:

* **strength**: the mean attention value (over a region of the map when one is given). For
  maps whose rows sum to one (softmax attention), the whole-map mean is the constant ``1/M``;
  pass a ``region`` (e.g. the instance's mask) to make it informative. ``region_mass`` is the
  fraction of each frame's mass inside the region.
* **consistency**: the Pearson correlation between the maps of consecutive valid frames,
  averaged. Convention for constant maps (zero variance, where Pearson is undefined): a pair of
  identical constant maps counts as 1 (identical maps are perfectly consistent); a pair where
  only one map is constant, or two different constant maps, is undefined and left out of the
  mean. ``consistency_pairs`` says how many pairs were defined.
* **distribution**: the per-frame variance over map entries, the normalised entropy
  ``H(p)/log M`` of the map read as a distribution (``p = map / sum``), and the sparsity, measured
  by the **Gini coefficient** (0 for a uniform map, ``1 - 1/M`` for a one-hot map; scale-free),
  with the mass of the top 10 % of entries (``ceil(0.1 M)`` largest) reported alongside.
* **temporal evolution**: for a per-frame scalar ``s_t`` the least-squares slope of ``s`` against
  normalised time ``tau = t / (T - 1)`` in [0, 1] (the fitted change of ``s`` from the first to the
  last frame), and the early/late ratio ``mean(s over first third) / mean(s over last third)``.

Thirds of a video: frame ``t`` of ``T`` belongs to third ``floor(3 (t + 1/2) / T)``, i.e. by the
position of its centre on normalised time. No frame centre ever falls on a boundary, the split is
symmetric under time reversal, and when ``T`` is not a multiple of 3 the extra frame goes to the
middle third (``T = 3k + 1``) or one extra frame to each end third (``T = 3k + 2``). ``T = 1``:
the single frame is in the middle third; ``T = 2``: first and last, empty middle.

Aggregation (:func:`aggregate`) gives mean, sample std (ddof 1) and n per video (over its
instances) and per class (over video-level means, so the unit is the video).

The module also holds the attention-specific numeric helpers the other analyses share (entropy,
thirds). The generic ones (``as_array``, ``json_ready``, ``permutation_p_value``) live in
``dvis_attn_pl.utils.arrays``; they are re-exported here for ``analysis/cue_reading.py``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from ..utils.arrays import as_array, json_ready, permutation_p_value

__all__ = [
    "aggregate",
    "as_array",
    "consecutive_correlation",
    "early_late_ratio",
    "entropy",
    "gini",
    "group_summary",
    "json_ready",
    "linear_slope",
    "map_sequence_stats",
    "permutation_p_value",
    "series_stats",
    "third_index",
    "top_fraction_mass",
]

_EPS = 1e-12


def third_index(num_frames: int) -> np.ndarray:
    """Third (0 first, 1 middle, 2 last) of each frame: ``floor(3 (t + 1/2) / T)`` (see module doc)."""
    if num_frames < 0:
        raise ValueError(f"number of frames must be >= 0, got {num_frames}")
    t = np.arange(num_frames)
    return (3 * (2 * t + 1)) // (2 * max(num_frames, 1))


def entropy(p: np.ndarray, axis: int = -1) -> np.ndarray:
    """Shannon entropy in nats of distributions along ``axis`` (``0 log 0 = 0``; no renormalisation)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=axis)


def gini(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Gini coefficient of non-negative values along ``axis`` (NaN where the sum is zero)."""
    x = np.sort(np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1), axis=-1)
    n = x.shape[-1]
    if n == 0:
        return np.full(x.shape[:-1], np.nan)
    total = x.sum(axis=-1)
    ranks = np.arange(1, n + 1, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        g = 2.0 * (x * ranks).sum(axis=-1) / (n * total) - (n + 1.0) / n
    return np.where(total > 0, g, np.nan)


def top_fraction_mass(x: np.ndarray, fraction: float = 0.1, axis: int = -1) -> np.ndarray:
    """Share of the total held by the ``ceil(fraction * n)`` largest entries along ``axis``."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
    n = x.shape[-1]
    k = max(1, math.ceil(fraction * n - 1e-9)) if n else 0
    if k == 0:
        return np.full(x.shape[:-1], np.nan)
    top = -np.partition(-x, k - 1, axis=-1)[..., :k]
    total = x.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, top.sum(axis=-1) / total, np.nan)


def consecutive_correlation(maps: np.ndarray, rtol: float = 1e-9) -> np.ndarray:
    """Pearson r between rows ``t`` and ``t + 1`` of ``maps`` (T, M): (T - 1,).

    Identical constant rows give 1; a pair with another constant row gives NaN (see module doc).
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 2:
        raise ValueError(f"maps must be (T, M), got shape {maps.shape}")
    a, b = maps[:-1], maps[1:]
    ca = a - a.mean(axis=1, keepdims=True)
    cb = b - b.mean(axis=1, keepdims=True)
    sa = np.sqrt((ca * ca).sum(axis=1))
    sb = np.sqrt((cb * cb).sum(axis=1))
    scale = np.maximum(np.abs(a).max(axis=1, initial=0.0), np.abs(b).max(axis=1, initial=0.0))
    tol = rtol * np.maximum(scale, _EPS) * math.sqrt(max(maps.shape[1], 1))
    const_a, const_b = sa <= tol, sb <= tol
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (ca * cb).sum(axis=1) / (sa * sb)
    r = np.clip(r, -1.0, 1.0)
    same = np.isclose(a, b, rtol=1e-9, atol=tol[:, None] if tol.size else 0.0).all(axis=1)
    return np.where(const_a | const_b, np.where(const_a & const_b & same, 1.0, np.nan), r)


def _valid_mask(valid: Any, shape: tuple[int, ...], name: str = "valid") -> np.ndarray:
    if valid is None:
        return np.ones(shape, dtype=bool)
    v = as_array(valid, dtype=bool, name=name)
    try:
        return np.broadcast_to(v, shape)
    except ValueError:
        raise ValueError(f"{name}: shape {v.shape} does not match {shape}") from None


def linear_slope(values: np.ndarray, valid: Any = None) -> np.ndarray:
    """Least-squares slope of ``values`` (..., T) against ``t / (T - 1)`` over valid frames.

    NaN where fewer than two valid frames (or ``T < 2``).
    """
    y = np.asarray(values, dtype=np.float64)
    t_len = y.shape[-1]
    w = _valid_mask(valid, y.shape) & np.isfinite(y)
    if t_len < 2:
        return np.full(y.shape[:-1], np.nan)
    tau = np.arange(t_len) / (t_len - 1)
    wf = w.astype(np.float64)
    n = wf.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau_bar = (wf * tau).sum(axis=-1) / n
        y0 = np.where(w, y, 0.0)
        y_bar = y0.sum(axis=-1) / n
        dt = (tau - tau_bar[..., None]) * wf
        slope = (dt * (y0 - y_bar[..., None])).sum(axis=-1) / (dt * dt).sum(axis=-1)
    return np.where(n >= 2, slope, np.nan)


def early_late_ratio(values: np.ndarray, valid: Any = None) -> np.ndarray:
    """``mean(first third) / mean(last third)`` of ``values`` (..., T) over valid frames.

    NaN when either third has no valid frame or the late mean is zero.
    """
    y = np.asarray(values, dtype=np.float64)
    w = _valid_mask(valid, y.shape) & np.isfinite(y)
    third = third_index(y.shape[-1])
    y0 = np.where(w, y, 0.0)
    early, late = w & (third == 0), w & (third == 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        m_early = (y0 * early).sum(axis=-1) / early.sum(axis=-1)
        m_late = (y0 * late).sum(axis=-1) / late.sum(axis=-1)
        ratio = m_early / m_late
    return np.where(np.isfinite(ratio), ratio, np.nan)


def _nanmean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    ok = np.isfinite(x)
    n = ok.sum(axis=axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n > 0, np.where(ok, x, 0.0).sum(axis=axis) / n, np.nan)


def series_stats(values: Any, valid: Any = None) -> dict[str, float]:
    """Strength, spread and evolution of one per-frame series ``values`` (T,).

    Keys: ``strength`` (mean), ``variance`` (population), ``slope``, ``early_late_ratio``,
    ``valid_frames``; for non-negative series also ``entropy_normalised`` (of the series read as a
    distribution over valid frames, divided by ``log n``; NaN for ``n < 2``) and ``gini``.
    """
    y = as_array(values, name="values")
    if y.ndim != 1:
        raise ValueError(f"values must be a 1-D series (T,), got shape {y.shape}")
    w = _valid_mask(valid, y.shape) & np.isfinite(y)
    sel = y[w]
    n = int(sel.size)
    out: dict[str, float] = {
        "valid_frames": n,
        "strength": float(sel.mean()) if n else math.nan,
        "variance": float(sel.var()) if n else math.nan,
        "slope": float(linear_slope(y, w)),
        "early_late_ratio": float(early_late_ratio(y, w)),
    }
    if n and (sel >= 0).all():
        total = sel.sum()
        out["entropy_normalised"] = (
            float(entropy(sel / total) / math.log(n)) if n >= 2 and total > 0 else math.nan
        )
        out["gini"] = float(gini(sel))
    return out


def map_sequence_stats(maps: Any, valid: Any = None, region: Any = None) -> dict[str, float]:
    """The guide's statistics for one instance's sequence of maps.

    ``maps``: (T, M) or (T, *spatial) non-negative attention, one map per frame; ``valid``: (T,)
    bool, frames to use (default all); ``region``: (M,) / (T, M) bool (or spatial-shaped), the part
    of the map whose mean is the strength (default: the whole map).
    Returns floats (NaN where undefined): ``strength``, ``region_mass`` (only with a region),
    ``consistency``, ``consistency_pairs``, ``variance``, ``entropy_normalised``, ``gini``,
    ``top10_mass``, ``strength_slope``, ``strength_early_late_ratio``, ``entropy_slope``,
    ``entropy_early_late_ratio``, ``valid_frames``.
    """
    m = as_array(maps, name="maps")
    if m.ndim < 2:
        raise ValueError(f"maps must be (T, M) or (T, H, W), got shape {m.shape}")
    t_len = m.shape[0]
    m = m.reshape(t_len, -1)
    if np.any(m < 0):
        raise ValueError("maps: attention maps must be non-negative")
    n_entries = m.shape[1]
    v = _valid_mask(valid, (t_len,)).copy()
    v &= np.isfinite(m).all(axis=1)
    reg = None
    if region is not None:
        r = as_array(region, dtype=bool, name="region")
        if r.size == n_entries:
            reg = np.broadcast_to(r.reshape(1, n_entries), (t_len, n_entries))
        elif r.size == t_len * n_entries:
            reg = r.reshape(t_len, n_entries)
        else:
            raise ValueError(f"region: shape {r.shape} matches neither one map ({n_entries}) nor all maps")
    sel = reg if reg is not None else np.ones((t_len, n_entries), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        per_frame_strength = np.where(sel, m, 0.0).sum(axis=1) / sel.sum(axis=1)
        totals = m.sum(axis=1)
        p = m / totals[:, None]
        per_frame_entropy = entropy(p) / math.log(n_entries) if n_entries > 1 else np.full(t_len, np.nan)
    per_frame_entropy = np.where(totals > 0, per_frame_entropy, np.nan)
    pair_ok = v[:-1] & v[1:]
    corr = consecutive_correlation(m)[pair_ok] if t_len > 1 else np.zeros(0)
    corr_ok = np.isfinite(corr)
    n_valid = int(v.sum())

    def mean_over_valid(x: np.ndarray) -> float:
        return float(_nanmean(np.where(v, x, np.nan))) if n_valid else math.nan

    out: dict[str, float] = {
        "valid_frames": n_valid,
        "strength": float((np.where(sel, m, 0.0) * v[:, None]).sum() / max((sel & v[:, None]).sum(), 1))
        if n_valid
        else math.nan,
    }
    if reg is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            out["region_mass"] = mean_over_valid(np.where(reg, m, 0.0).sum(axis=1) / totals)
    out.update(
        consistency=float(corr[corr_ok].mean()) if corr_ok.any() else math.nan,
        consistency_pairs=int(corr_ok.sum()),
        variance=mean_over_valid(m.var(axis=1)),
        entropy_normalised=mean_over_valid(per_frame_entropy),
        gini=mean_over_valid(gini(m)),
        top10_mass=mean_over_valid(top_fraction_mass(m, 0.1)),
        strength_slope=float(linear_slope(per_frame_strength, v)),
        strength_early_late_ratio=float(early_late_ratio(per_frame_strength, v)),
        entropy_slope=float(linear_slope(per_frame_entropy, v)),
        entropy_early_late_ratio=float(early_late_ratio(per_frame_entropy, v)),
    )
    return out


def group_summary(
    values: np.ndarray, groups: Sequence[Any]
) -> tuple[list[Any], np.ndarray, np.ndarray, np.ndarray]:
    """Mean, sample std (ddof 1) and count of each column of ``values`` (n, K) per group, NaN-aware.

    Returns ``(keys, mean (G, K), std (G, K), n (G, K))``; keys in sorted order.
    """
    x = np.asarray(values, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    keys, inverse = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
    first = {}
    for g in groups:
        first.setdefault(str(g), g)
    onehot = np.zeros((len(keys), x.shape[0]))
    onehot[inverse, np.arange(x.shape[0])] = 1.0
    ok = np.isfinite(x)
    x0 = np.where(ok, x, 0.0)
    n = onehot @ ok.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (onehot @ x0) / n
        dev = np.where(ok, x - mean[inverse], 0.0)
        std = np.sqrt((onehot @ (dev * dev)) / (n - 1))
    mean = np.where(n > 0, mean, np.nan)
    std = np.where(n > 1, std, np.nan)
    return [first[k] for k in keys.tolist()], mean, std, n.astype(np.int64)


def aggregate(
    records: Iterable[Mapping[str, Any]],
    stats: Sequence[str] | None = None,
    video_key: str = "video_id",
    class_key: str = "category_id",
) -> dict[str, Any]:
    """Per-video and per-class mean/std/n of numeric statistics (JSON-ready).

    ``records``: one mapping per instance with ``video_key``, ``class_key`` and the statistics
    (default: every numeric key, listed under ``statistics``).
    ``per_video``: over the video's instances. ``per_class``: instances are first averaged per
    (video, class), then mean/std/n are taken over those video-level values (n = videos).
    """
    rows = list(records)
    if not rows:
        return {"statistics": list(stats or []), "per_video": {}, "per_class": {}}
    for i, r in enumerate(rows):
        if video_key not in r or class_key not in r:
            raise ValueError(f"record {i}: needs keys {video_key!r} and {class_key!r}")
    if stats is None:
        stats = sorted(
            {k for r in rows for k, v in r.items() if k not in (video_key, class_key) and _is_number(v)}
        )
    stats = list(stats)
    x = np.array([[_as_float(r.get(s)) for s in stats] for r in rows], dtype=np.float64).reshape(
        len(rows), len(stats)
    )

    def table(keys: list[Any], mean: np.ndarray, std: np.ndarray, n: np.ndarray) -> dict[str, Any]:
        return {
            str(k): {
                s: {"mean": mean[g, j], "std": std[g, j], "n": int(n[g, j])} for j, s in enumerate(stats)
            }
            for g, k in enumerate(keys)
        }

    per_video = table(*group_summary(x, [r[video_key] for r in rows]))
    pair_keys, pair_mean, _, _ = group_summary(x, [f"{r[video_key]}\x1f{r[class_key]}" for r in rows])
    pair_class = {f"{r[video_key]}\x1f{r[class_key]}": r[class_key] for r in rows}
    per_class = table(*group_summary(pair_mean, [pair_class[str(k)] for k in pair_keys]))
    return json_ready({"statistics": stats, "per_video": per_video, "per_class": per_class})


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))


def _as_float(v: Any) -> float:
    return float(v) if _is_number(v) else math.nan
