"""Per-class reading of temporal cues: "appearance-based", "motion-based", "mixed" or "inconclusive".

What is measured. Every proxy is a number per (video, class) unit (predictions of the same class
in a video are averaged first), computed from the offline model's temporal attention:

* ``importance_entropy`` (direction: motion). Normalised entropy ``H(a) / log n`` of the frame
  importance ``a`` (the refiner's exact temporal pooling weights over the n valid frames): 1 when
  the class decision pools all frames equally, 0 when it rests on one frame.
* ``temporal_offdiag_mass`` (direction: motion). Mean over layers and valid query frames of
  ``1 - A[t, t]``, the share of a frame's refiner time self-attention that goes to *other* frames
  (``A`` restricted to valid frames and row-renormalised); or the same of the temporal rollout
  ``R`` (``rollout=True``, via ``analysis.rollout``), whose diagonal includes the residual path.
* ``importance_peak_concentration`` (direction: appearance). ``(max_t a_t - 1/n) / (1 - 1/n)``:
  0 for uniform importance, 1 when one frame holds all of it.
* ``consistency`` (direction: motion; used when supplied, e.g. from
  ``attention_stats.map_sequence_stats``): mean Pearson correlation of consecutive frames' maps.
  The attention guide this follows cites stable maps both for motion ("temporal consistency") and
  for appearance; treat its vote as the weakest.

"Motion reliance" thus means: the temporal evidence of the decision is spread over many frames and
frames draw on each other. "Appearance reliance" means: the evidence is concentrated on single
frames and frames mostly attend to themselves. Custom proxies can be given as
``{name: "motion" | "appearance"}``.

How a class is read. For each proxy and class, the class's units are compared with the units of
all other classes: effect sizes (Cohen's d with pooled SD, and the rank-biserial correlation
``2 U / (n1 n2) - 1``), and a two-sided permutation test of the difference of means (class labels
shuffled across units, ``n_permutations`` vectorised permutations, RNG seeded from ``seed``, the
proxy and the class; ``p = (1 + #{|null| >= |observed|}) / (1 + P)``). p-values are Holm-adjusted
across the classes tested on that proxy (``correct_over="all"``: across all class x proxy tests).
A proxy votes when the adjusted p <= ``alpha`` and ``|effect| >= min_effect`` (``effect`` picks the
effect size): towards its direction if the class is higher, towards the other if lower.

* votes only towards motion -> "motion-based"; only towards appearance -> "appearance-based";
* votes both ways (the proxies disagree, e.g. pooling spread over frames while each frame mostly
  attends to itself) -> "mixed";
* no vote -> "inconclusive" (no proxy separates the class from the others); also "inconclusive"
  when the class or the other classes have fewer than ``min_videos`` units on every proxy, or no
  proxy was measured. The reason is always stated.

Limits (also written into the output):

* Attention is not causation. These proxies say where the pooling and the time self-attention put
  weight, not what the decision depends on; confirm with interventions (frame scrambling or
  dropping, see ``compare_runs``).
* Readings are relative to the other classes of the same run: "motion-based" means more spread than
  the others, not spread in an absolute sense. ``level`` reports the class means for absolute
  reading.
* Spreading weight over many frames is consistent with using motion, but also with averaging
  appearance over views; a single-frame peak may be the frame where the fish is best seen.
* Units are (video, class) pairs; a video holding two classes contributes to both. With few videos
  per class, effects are imprecise and the test has little power: an "inconclusive" reading is an
  absence of evidence, not evidence of a balanced strategy.
* Video length: normalised entropy and peak concentration are length-adjusted; off-diagonal mass is
  not (uniform attention over n frames gives ``1 - 1/n``).
* The official temporal pooling does not mask frames where the instance is absent; restrict the
  inputs to valid frames (``valid``) to avoid reading padding.
* With random (untrained) weights the readings describe an untrained network and mean nothing
  about the task; pass ``weights_random=True`` to flag this in the output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from .attention_stats import as_array, group_summary, json_ready, permutation_p_value
from .frame_importance import frame_importance_stats
from .rollout import mask_padding, temporal_rollout

__all__ = [
    "DEFAULT_PROXIES",
    "READINGS",
    "class_contrast",
    "cohen_d",
    "holm_adjust",
    "importance_proxies",
    "rank_biserial",
    "read_cues",
    "temporal_attention_proxies",
]

READINGS = ("appearance-based", "motion-based", "mixed", "inconclusive")
DIRECTIONS = ("motion", "appearance")
DEFAULT_PROXIES: dict[str, str] = {
    "importance_entropy": "motion",
    "temporal_offdiag_mass": "motion",
    "importance_peak_concentration": "appearance",
    "consistency": "motion",
}
PROXY_DEFINITIONS = {
    "importance_entropy": "normalised entropy H(a)/log n of the frame importance over valid frames",
    "temporal_offdiag_mass": "mean over layers and valid frames of 1 - A[t,t] of the refiner time "
    "self-attention (or its rollout), rows renormalised over valid frames",
    "importance_peak_concentration": "(max a - 1/n) / (1 - 1/n) of the frame importance",
    "consistency": "mean Pearson r of consecutive frames' attention maps",
}
LIMITS = [
    "Attention is not causation: the proxies show where temporal pooling and time self-attention put "
    "weight, not what the decision depends on; confirm with interventions (frame scrambling/dropping).",
    "Readings are relative to the other classes of this run ('motion-based' = temporal evidence more "
    "spread over frames than the other classes'), not absolute.",
    "Spread over frames is consistent with motion use but also with averaging appearance over views.",
    "Units are (video, class) pairs; with few videos effects are imprecise and tests have little power: "
    "'inconclusive' is absence of evidence.",
    "Off-diagonal mass is not adjusted for video length (uniform attention over n frames gives 1 - 1/n).",
    "Holm correction is across classes per proxy unless correct_over='all'; several proxies vote.",
]


# ----------------------------------------------------------------------------- proxies


def importance_proxies(weights: Any, valid: Any = None, min_frames: int = 2) -> dict[str, np.ndarray]:
    """``importance_entropy`` and ``importance_peak_concentration`` (N,) from pooling weights (N, T).

    NaN for predictions with fewer than ``min_frames`` valid frames.
    """
    st = frame_importance_stats(weights, valid=valid)
    enough = st["valid_frames"] >= max(min_frames, 2)
    return {
        "importance_entropy": np.where(enough, st["entropy_normalised"], np.nan),
        "importance_peak_concentration": np.where(enough, st["peak_concentration"], np.nan),
    }


def temporal_attention_proxies(
    attn: Any, valid: Any = None, *, rollout: bool = False, **rollout_kwargs: Any
) -> dict[str, np.ndarray]:
    """``temporal_offdiag_mass`` (N,) from refiner time self-attention.

    ``attn``: (N, L, T, T), (N, L, H, T, T) or (L, T, T) rows = querying frame; ``valid``: (T,) or
    (N, T) bool. ``rollout=True`` measures the rollout ``R`` (``rollout_kwargs`` go to
    :func:`analysis.rollout.temporal_rollout`) instead of the per-layer maps.
    """
    a = attn if isinstance(attn, torch.Tensor) else torch.as_tensor(as_array(attn, name="attn"))
    a = a.detach().to(torch.float64)
    if a.dim() == 3:
        a = a[None]
    if a.dim() not in (4, 5) or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"attn: expected (N, L, T, T) or (N, L, H, T, T), got {tuple(a.shape)}")
    n, t = a.shape[0], a.shape[-1]
    if valid is None:
        v = torch.ones(n, t, dtype=torch.bool, device=a.device)
    else:
        v = torch.as_tensor(as_array(valid, dtype=bool, name="valid"), device=a.device)
        v = v.expand(n, t) if v.shape == (t,) else v
        if v.shape != (n, t):
            raise ValueError(f"valid: expected ({t},) or ({n}, {t}), got {tuple(v.shape)}")
    if rollout:
        r = temporal_rollout(a, valid=v, **rollout_kwargs)[:, None]  # (N, 1, T, T)
    else:
        if a.dim() == 5:
            a = a.mean(dim=2)
        r = mask_padding(a, v)
    diag = torch.diagonal(r, dim1=-2, dim2=-1)  # (N, L', T)
    vf = v.to(r.dtype)[:, None, :]
    n_valid = vf.sum(dim=-1)
    off = ((1.0 - diag) * vf).sum(dim=-1) / n_valid.clamp_min(1)
    off = torch.where(n_valid >= 2, off, torch.full_like(off, float("nan")))
    return {"temporal_offdiag_mass": off.mean(dim=1).cpu().numpy()}


# ----------------------------------------------------------------------------- statistics


def cohen_d(x: np.ndarray, y: np.ndarray) -> float:
    """Cohen's d of ``x`` vs ``y`` with the pooled sample SD (+-inf for separated constant groups)."""
    nx, ny = x.size, y.size
    if nx < 2 or ny < 2:
        return math.nan
    diff = float(x.mean() - y.mean())
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    if pooled == 0.0:
        return 0.0 if diff == 0.0 else math.copysign(math.inf, diff)
    return diff / pooled


def rank_biserial(x: np.ndarray, y: np.ndarray) -> float:
    """Rank-biserial correlation ``2 U_x / (n_x n_y) - 1`` in [-1, 1] (positive: ``x`` tends larger)."""
    nx, ny = x.size, y.size
    if nx == 0 or ny == 0:
        return math.nan
    ranks = rankdata(np.concatenate([x, y]))
    u_x = ranks[:nx].sum() - nx * (nx + 1) / 2.0
    return 2.0 * u_x / (nx * ny) - 1.0


def holm_adjust(p_values: Any) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN entries are ignored and stay NaN)."""
    p = as_array(p_values, name="p_values").reshape(-1)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out[order] = np.minimum(adj, 1.0)
    return out


def class_contrast(
    x: np.ndarray,
    in_class: np.ndarray,
    *,
    n_permutations: int,
    rng: np.random.Generator,
    max_elements: int = 1 << 24,
) -> dict[str, float]:
    """Class vs the rest on one proxy: means, SDs, n, Cohen's d, rank-biserial, permutation p."""
    xc, xr = x[in_class], x[~in_class]
    nc, nr = xc.size, xr.size
    observed = float(xc.mean() - xr.mean())
    null = np.empty(n_permutations)
    step = max(1, max_elements // max(x.size, 1))
    base = np.tile(in_class, (min(step, n_permutations), 1))
    for s in range(0, n_permutations, step):  # chunks of permutations, each one matrix product
        p = min(step, n_permutations - s)
        labels = rng.permuted(base[:p], axis=1)
        sum_c = labels.astype(np.float64) @ x
        null[s : s + p] = sum_c / nc - (x.sum() - sum_c) / nr
    return {
        "class_mean": float(xc.mean()),
        "class_std": float(xc.std(ddof=1)) if nc > 1 else math.nan,
        "class_n": int(nc),
        "other_mean": float(xr.mean()),
        "other_std": float(xr.std(ddof=1)) if nr > 1 else math.nan,
        "other_n": int(nr),
        "mean_difference": observed,
        "cohen_d": cohen_d(xc, xr),
        "rank_biserial": rank_biserial(xc, xr),
        "p_value": float(permutation_p_value(observed, null, "two-sided")),
    }


# ----------------------------------------------------------------------------- reading


def _units(
    rows: list[Mapping[str, Any]], proxies: list[str], video_key: str, class_key: str
) -> tuple[np.ndarray, np.ndarray]:
    """Average rows per (video, class): returns class labels (U,) and values (U, K)."""
    vals = np.array([[_num(r.get(p)) for p in proxies] for r in rows], dtype=np.float64).reshape(
        len(rows), len(proxies)
    )
    keys = [f"{r[video_key]}\x1f{r[class_key]}" for r in rows]
    cls_of = {k: r[class_key] for k, r in zip(keys, rows)}
    unit_keys, mean, _, _ = group_summary(vals, keys)
    return np.array([str(cls_of[str(k)]) for k in unit_keys], dtype=object), mean


def _num(v: Any) -> float:
    if v is None or isinstance(v, (bool, np.bool_)):
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def read_cues(
    measurements: Iterable[Mapping[str, Any]],
    *,
    proxies: Mapping[str, str] | None = None,
    alpha: float = 0.05,
    min_effect: float = 0.3,
    effect: str = "rank_biserial",
    min_videos: int = 5,
    n_permutations: int = 5000,
    seed: int = 0,
    correct_over: str = "classes",
    weights_random: bool = False,
    video_key: str = "video_id",
    class_key: str = "category_id",
) -> dict[str, Any]:
    """Per-class cue readings with their evidence (module doc), JSON-ready.

    ``measurements``: one mapping per prediction (or per video and class) with ``video_key``,
    ``class_key`` and proxy values (missing/None = not measured). ``proxies``: name -> direction
    (default :data:`DEFAULT_PROXIES`; those absent from every row are reported as not measured).
    """
    if effect not in ("rank_biserial", "cohen_d"):
        raise ValueError(f"effect must be 'rank_biserial' or 'cohen_d', got {effect!r}")
    if correct_over not in ("classes", "all"):
        raise ValueError(f"correct_over must be 'classes' or 'all', got {correct_over!r}")
    if not 0 < alpha < 1 or min_effect < 0 or min_videos < 2 or n_permutations < 1:
        raise ValueError("need 0 < alpha < 1, min_effect >= 0, min_videos >= 2, n_permutations >= 1")
    proxy_dirs = dict(DEFAULT_PROXIES if proxies is None else proxies)
    for name, d in proxy_dirs.items():
        if d not in DIRECTIONS:
            raise ValueError(f"proxy {name!r}: direction must be 'motion' or 'appearance', got {d!r}")
    rows = list(measurements)
    for i, r in enumerate(rows):
        if video_key not in r or class_key not in r:
            raise ValueError(f"measurement {i}: needs keys {video_key!r} and {class_key!r}")
    names = list(proxy_dirs)
    labels, values = (
        _units(rows, names, video_key, class_key)
        if rows
        else (np.zeros(0, object), np.zeros((0, len(names))))
    )
    classes = sorted(set(labels.tolist()), key=str)
    measured = [j for j in range(len(names)) if np.isfinite(values[:, j]).any()]
    warnings = []
    if weights_random:
        warnings.append(
            "The run's weights are random (untrained): the readings describe an untrained network, not the task."
        )
    unmeasured = [names[j] for j in range(len(names)) if j not in measured]
    if unmeasured:
        warnings.append(f"Proxies not measured in any video: {', '.join(unmeasured)}.")

    # contrasts: loop over proxies and classes (few), permutations vectorised inside
    evidence: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in classes}
    tests: list[tuple[str, str]] = []
    for j in measured:
        name = names[j]
        col = values[:, j]
        ok = np.isfinite(col)
        for ci, c in enumerate(classes):
            in_c = labels == c
            nc, nr = int((ok & in_c).sum()), int((ok & ~in_c).sum())
            entry: dict[str, Any] = {"direction": proxy_dirs[name], "class_n": nc, "other_n": nr}
            if nc < min_videos or nr < min_videos:
                if nc:
                    entry["class_mean"] = float(col[ok & in_c].mean())
                if nr:
                    entry["other_mean"] = float(col[ok & ~in_c].mean())
                entry["not_tested"] = (
                    f"{nc} videos of this class and {nr} of the others (need {min_videos} each)"
                )
            else:
                rng = np.random.default_rng([seed, j, ci])
                entry.update(class_contrast(col[ok], in_c[ok], n_permutations=n_permutations, rng=rng))
                tests.append((c, name))
            evidence[c][name] = entry
    # Holm adjustment
    groups = [tests] if correct_over == "all" else [[t for t in tests if t[1] == names[j]] for j in measured]
    for group in groups:
        adj = holm_adjust([evidence[c][p]["p_value"] for c, p in group])
        for (c, p), a in zip(group, adj):
            evidence[c][p]["p_holm"] = float(a)

    readings = {}
    for c in classes:
        ev = evidence[c]
        votes: dict[str, list[str]] = {"motion": [], "appearance": []}
        for name, e in ev.items():
            if "p_holm" not in e:
                e["vote"] = None
                continue
            size = e[effect]
            significant = e["p_holm"] <= alpha and abs(size) >= min_effect
            e["significant"] = bool(significant)
            if significant:
                toward = e["direction"] if size > 0 else _other(e["direction"])
                votes[toward].append(name)
                e["vote"] = toward
            else:
                e["vote"] = None
        n_units = int((labels == c).sum())
        reading, reason = _decide(
            ev,
            votes,
            measured=bool(measured),
            min_videos=min_videos,
            alpha=alpha,
            min_effect=min_effect,
            effect=effect,
        )
        readings[c] = {
            "reading": reading,
            "reason": reason,
            "n_videos": n_units,
            "n_other_videos": int(labels.size - n_units),
            "votes": votes,
            "level": {name: e.get("class_mean") for name, e in ev.items()},
            "evidence": ev,
        }
    small = [c for c in classes if readings[c]["n_videos"] < min_videos]
    if small:
        warnings.append(
            f"Classes with fewer than {min_videos} videos (read inconclusive): {', '.join(small)}."
        )
    return json_ready(
        {
            "readings": readings,
            "settings": {
                "proxies": proxy_dirs,
                "alpha": alpha,
                "min_effect": min_effect,
                "effect": effect,
                "min_videos": min_videos,
                "n_permutations": n_permutations,
                "seed": seed,
                "correct_over": correct_over,
                "weights_random": bool(weights_random),
            },
            "proxy_definitions": {n: PROXY_DEFINITIONS.get(n, "user-supplied proxy") for n in names},
            "n_units": int(labels.size),
            "limits": LIMITS,
            "warnings": warnings,
        }
    )


def _other(direction: str) -> str:
    return "appearance" if direction == "motion" else "motion"


def _decide(
    evidence: Mapping[str, Mapping[str, Any]],
    votes: Mapping[str, list[str]],
    *,
    measured: bool,
    min_videos: int,
    alpha: float,
    min_effect: float,
    effect: str,
) -> tuple[str, str]:
    if not measured:
        return "inconclusive", "no proxy was measured"
    if not any("p_holm" in e for e in evidence.values()):
        e0 = next(iter(evidence.values()), {})
        return "inconclusive", (
            f"too few videos to test: {e0.get('class_n', 0)} of this class, {e0.get('other_n', 0)} of the "
            f"other classes (need {min_videos} each)"
        )
    m, a = votes["motion"], votes["appearance"]
    if m and a:
        return "mixed", f"proxies disagree: towards motion {', '.join(m)}; towards appearance {', '.join(a)}"
    if m:
        return "motion-based", f"temporal evidence more spread than the other classes' ({', '.join(m)})"
    if a:
        return (
            "appearance-based",
            f"temporal evidence more concentrated than the other classes' ({', '.join(a)})",
        )
    return "inconclusive", (
        f"no proxy separates this class from the others (Holm-adjusted p <= {alpha} and |{effect}| >= {min_effect})"
    )
