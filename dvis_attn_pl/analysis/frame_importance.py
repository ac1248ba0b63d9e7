"""Frame importance: statistics of the refiner's exact temporal pooling weights.

Offline DVIS-DAQ classifies an instance from ``sum_t a_t x_t`` with ``a = softmax_t(...)``, so
``a`` (T,) is the exact share of each frame in the class decision's pooled embedding (not a
gradient, not a causal effect). All statistics are computed for a batch of predictions at once
(N, T). Definitions (also in :data:`DEFINITIONS`, written once into the summary file):

* ``valid`` frames: frames the statistics may use (default all). The official pooling softmax
  does not mask frames where the instance is absent, so these frames can hold weight;
  ``mass_on_valid`` reports the raw share they hold. ``weights`` = raw weights restricted to
  valid frames and renormalised to sum 1 over them (zeros elsewhere).
* ``entropy``: Shannon entropy in nats of ``weights``; ``entropy_normalised`` =
  ``entropy / log(n_valid)`` in [0, 1] (1 = uniform over valid frames, 0 = one frame); undefined
  (None) when fewer than two frames are valid. ``effective_frames`` = ``exp(entropy)`` (1 for a
  one-hot vector, ``n_valid`` for a uniform one).
* ``peak_frame`` / ``peak_mass``: arg-max frame (first on ties; index into the whole video) and its
  weight. ``peak_concentration`` = ``(peak_mass - 1/n) / (1 - 1/n)``: 0 for uniform, 1 for one-hot,
  comparable across video lengths (undefined for ``n < 2``).
* ``third_mass``: the weight in the first / middle / last third of the video; frame ``t`` of
  ``T`` is in third ``floor(3 (t + 1/2) / T)`` (by its centre; see ``attention_stats``).
* GT overlap (only with ``gt_present``; frames counted are valid ones): ``gt_fraction`` =
  present / valid frames (what ``gt_mass`` would be for uniform weights); ``gt_mass`` = weight on
  present frames; ``gt_mass_lift`` = ``gt_mass / gt_fraction``. The **top-mass set** is the
  smallest set of frames, taken in decreasing weight (earlier frame first on ties), whose weight
  reaches ``top_mass`` (default 0.75); ``gt_top_iou`` = ``|top ∩ present| / |top ∪ present|``,
  ``gt_top_precision`` = ``|top ∩ present| / |top|``, ``gt_top_recall`` = ``|top ∩ present| /
  |present|`` (undefined with no present frame).

With no valid frame (all padding) or zero weight on the valid frames every statistic is
undefined (None in JSON) and ``peak_frame`` is -1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..utils.arrays import as_array, json_ready
from .attention_stats import entropy, third_index

__all__ = ["DEFINITIONS", "frame_importance_stats", "top_mass_frames", "video_frame_importance"]

DEFINITIONS = {
    "weights_raw": "the refiner's temporal pooling weights (softmax over all T frames), as captured",
    "weights": "raw weights on valid frames renormalised to sum 1 over them (0 elsewhere)",
    "mass_on_valid": "sum of the raw weights on valid frames",
    "entropy": "Shannon entropy of weights, nats",
    "entropy_normalised": "entropy / log(number of valid frames); undefined for fewer than 2",
    "effective_frames": "exp(entropy)",
    "peak_frame": "arg-max frame of weights (first on ties), index in the video; -1 if undefined",
    "peak_mass": "weight of the peak frame",
    "peak_concentration": "(peak_mass - 1/n) / (1 - 1/n), n = valid frames: 0 uniform, 1 one-hot",
    "third_mass": "weight in [first, middle, last] third; frame t of T is in third floor(3(t+0.5)/T)",
    "gt_fraction": "valid frames with the ground truth present / valid frames",
    "gt_mass": "weight on valid frames with the ground truth present",
    "gt_mass_lift": "gt_mass / gt_fraction (1 = no preference for present frames)",
    "top_mass_set": "smallest set of frames, by decreasing weight (earlier first on ties), holding >= top_mass",
    "gt_top_iou": "|top_mass_set & present| / |top_mass_set | present| over valid frames",
    "gt_top_precision": "|top_mass_set & present| / |top_mass_set|",
    "gt_top_recall": "|top_mass_set & present| / |present|",
}


def _per_row_mask(mask: Any, n: int, t: int, name: str) -> np.ndarray:
    if mask is None:
        return np.ones((n, t), dtype=bool)
    m = as_array(mask, dtype=bool, name=name)
    if m.shape == (t,):
        return np.broadcast_to(m, (n, t))
    if m.shape == (n, t):
        return m
    raise ValueError(f"{name}: expected shape ({t},) or ({n}, {t}), got {m.shape}")


def top_mass_frames(weights: np.ndarray, top_mass: float) -> np.ndarray:
    """Bool (N, T): the smallest frame set per row, by decreasing weight, holding >= ``top_mass``.

    Rows are expected to sum to 1 (zero rows give an empty set).
    """
    if not 0.0 < top_mass <= 1.0:
        raise ValueError(f"top_mass must be in (0, 1], got {top_mass}")
    w = np.asarray(weights, dtype=np.float64)
    order = np.argsort(-w, axis=-1, kind="stable")
    sorted_w = np.take_along_axis(w, order, axis=-1)
    before = np.cumsum(sorted_w, axis=-1) - sorted_w
    take_sorted = (before < top_mass - 1e-9) & (sorted_w > 0)
    out = np.zeros_like(take_sorted)
    np.put_along_axis(out, order, take_sorted, axis=-1)
    return out


def frame_importance_stats(
    weights: Any, valid: Any = None, gt_present: Any = None, top_mass: float = 0.75
) -> dict[str, np.ndarray]:
    """Statistics (module doc) of pooling weights ``weights`` (N, T) or (T,).

    ``valid`` / ``gt_present``: bool (T,) or (N, T). Returns arrays with a leading N axis
    (``weights`` (N, T), ``third_mass`` (N, 3), the rest (N,)); NaN where undefined. GT keys
    are present only when ``gt_present`` is given.
    """
    raw = as_array(weights, name="weights")
    if raw.ndim == 1:
        raw = raw[None]
    if raw.ndim != 2:
        raise ValueError(f"weights: expected (T,) or (N, T), got shape {raw.shape}")
    if not np.isfinite(raw).all() or (raw < 0).any():
        raise ValueError("weights: pooling weights must be finite and non-negative")
    n, t = raw.shape
    v = _per_row_mask(valid, n, t, "valid")
    kept = np.where(v, raw, 0.0)
    mass = kept.sum(axis=1)
    n_valid = v.sum(axis=1)
    ok = (n_valid > 0) & (mass > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(ok[:, None], kept / mass[:, None], np.nan)
    w0 = np.where(ok[:, None], w, 0.0)
    h = np.where(ok, entropy(w0), np.nan)
    multi = ok & (n_valid >= 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        h_norm = np.where(multi, h / np.log(np.maximum(n_valid, 2)), np.nan)
    peak = np.where(ok, np.argmax(w0, axis=1), -1)
    peak_mass = np.where(ok, w0.max(axis=1, initial=0.0), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_n = 1.0 / np.maximum(n_valid, 1)
        peak_conc = np.where(multi, (peak_mass - inv_n) / (1.0 - inv_n), np.nan)
    thirds = np.eye(3)[third_index(t)] if t else np.zeros((0, 3))  # (T, 3) one-hot
    third_mass = np.where(ok[:, None], w0 @ thirds, np.nan)
    out: dict[str, np.ndarray] = {
        "weights_raw": raw,
        "weights": w,
        "valid_frames": n_valid.astype(np.int64),
        "mass_on_valid": np.where(n_valid > 0, mass, np.nan),
        "entropy": h,
        "entropy_normalised": h_norm,
        "effective_frames": np.exp(h),
        "peak_frame": peak.astype(np.int64),
        "peak_mass": peak_mass,
        "peak_concentration": peak_conc,
        "third_mass": third_mass,
    }
    if gt_present is not None:
        present = _per_row_mask(gt_present, n, t, "gt_present") & v
        n_present = present.sum(axis=1)
        top = top_mass_frames(w0, top_mass)
        inter = (top & present).sum(axis=1)
        union = (top | present).sum(axis=1)
        n_top = top.sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            frac = np.where(ok, n_present / n_valid, np.nan)
            gt_mass = np.where(ok, (w0 * present).sum(axis=1), np.nan)
            out.update(
                gt_fraction=frac,
                gt_mass=gt_mass,
                gt_mass_lift=np.where(ok & (n_present > 0), gt_mass / frac, np.nan),
                top_mass_frames=np.where(ok, n_top, 0).astype(np.int64),
                gt_top_iou=np.where(ok & (union > 0), inter / union, np.nan),
                gt_top_precision=np.where(ok & (n_top > 0), inter / n_top, np.nan),
                gt_top_recall=np.where(ok & (n_present > 0), inter / n_present, np.nan),
            )
    return out


def video_frame_importance(
    video_id: Any,
    weights: Any,
    predictions: Sequence[Mapping[str, Any]] | None = None,
    *,
    valid: Any = None,
    gt_present: Any = None,
    top_mass: float = 0.75,
    decimals: int | None = 7,
) -> dict[str, Any]:
    """JSON-ready record of one video's predictions.

    ``weights`` (N, T): one pooling-weight row per prediction (e.g. the top predictions);
    ``predictions``: N mappings of fields copied into each entry (``refiner_id``, ``score``,
    ``category_id``, ...); ``valid`` / ``gt_present``: (T,) or (N, T) bool. Floats are rounded to
    ``decimals`` (None keeps them exact); undefined values are None.
    """
    raw = as_array(weights, name=f"video {video_id}: weights")
    if raw.ndim == 1:
        raw = raw[None]
    meta = list(predictions) if predictions is not None else [{} for _ in range(raw.shape[0])]
    if len(meta) != raw.shape[0]:
        raise ValueError(f"video {video_id}: {len(meta)} prediction records for {raw.shape[0]} weight rows")
    try:
        stats = frame_importance_stats(raw, valid=valid, gt_present=gt_present, top_mass=top_mass)
    except ValueError as err:
        raise ValueError(f"video {video_id}: {err}") from None

    def rnd(x: Any) -> Any:
        if decimals is None or np.asarray(x).dtype.kind != "f":
            return x
        return np.round(x, decimals)

    entries = []
    for i, extra in enumerate(meta):
        entry: dict[str, Any] = dict(extra)
        for key, arr in stats.items():
            value = rnd(arr[i])
            entry[key] = dict(zip(("first", "middle", "last"), value)) if key == "third_mass" else value
        entries.append(entry)
    return json_ready(
        {
            "video_id": video_id,
            "num_frames": int(raw.shape[1]),
            "top_mass": top_mass,
            "has_gt": gt_present is not None,
            "predictions": entries,
        }
    )
