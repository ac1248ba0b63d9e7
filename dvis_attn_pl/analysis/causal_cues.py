"""Causal cue verdicts: what each class's decision depends on, from the intervention passes of a run.

Units. For every reference object (a ground-truth object; without ground truth, an unaltered
prediction scored >= 0.5) the prediction of each pass that overlaps it best is found: video mask
IoU >= ``min_iou`` with the object as that pass showed it (frames reordered like the pass's input).
An object matched in the unaltered pass and in an altered pass gives one pair
``(p0, p1)``: the probability of the object's class (softmax over K+1 of the refiner's class
logits, background dropped) unaltered and altered. An object the altered pass does not find is
not a pair: a tracking or detection failure is not read as a change of class (the match rate is
reported). The ``shuffle-k`` passes are one intervention: an object's ``p1`` is its mean over the
permutations that found it.

Statistic. Per class and intervention, ``R = sum(p1) / sum(p0)`` over the class's pairs, with a
95 % percentile bootstrap interval over videos (``n_boot`` resamples, seeded). Each threshold
test is one-sided on the bootstrap distribution, ``p = (1 + #{R* on the far side}) / (1 + B)``,
Holm-adjusted across the classes tested with that intervention:

* ``keeps``: R > ``keep`` (default 0.9) with adjusted p <= ``alpha``;
* ``drops``: R < ``drop`` (default 0.5), same;
* ``partial``: R significantly below ``keep`` and above ``drop``;
* ``undetermined``: none of these (the interval straddles a threshold).

Verdict per class (an unrecognised class gets none: the model must know the class before one can
ask what it uses; ``recognised`` = the lower bound of the mean unaltered ``p0`` exceeds
``min_recognised``, default twice chance, 2/K):

* **appearance**: freeze keeps, and freeze does not turn other classes' objects into this class
  (the upper 95 % bound of its ``attraction`` under freeze is at most ``max_attraction``); when it
  does, the verdict is **undetermined**: a repeated frame reads as this class whatever the object
  (for example the class whose motion is closest to standing still), so keeping it is no evidence
  that one frame's appearance decides;
* **frame-set integration**: freeze drops, shuffle keeps;
* **ordered motion**: freeze drops, shuffle drops;
* **mixed**: freeze partial; or freeze drops and shuffle partial;
* **undetermined**: freeze (or, after a drop, shuffle) undetermined, or too few pairs.

Attraction. Per class ``c`` and intervention, the mean over matched objects of the *other* classes
of ``p_c(altered) - p_c(unaltered)`` (the probability they gain of being ``c``), with a bootstrap
interval over videos: how much the intervention moves other objects towards ``c``. Reported for
every intervention; only freeze's enters the verdict.

The other interventions (reverse, silhouette, knockouts) are reported with R, interval and
status beside the verdict; they do not enter it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..utils.errors import UserError
from ..utils.temporal_record import (
    DELETION_FRACTIONS_KEY,
    DELETION_IMPORTANCE,
    DELETION_IMPORTANCE_FIRST,
    DELETION_LEAST_FIRST,
    DELETION_LOO_EFFECT,
    DELETION_RANDOM_MEAN,
    DELETION_ROLLOUT,
)
from .cue_reading import holm_adjust

__all__ = [
    "CueThresholds",
    "VERDICTS",
    "class_statistics",
    "FAITHFULNESS_MEASURES",
    "decide",
    "deletion_faithfulness",
    "faithfulness_orderings",
    "faithfulness_rows",
    "intervention_of",
    "proxy_agrees",
    "ratio_bootstrap",
    "rollout_faithfulness",
    "threshold_status",
]

VERDICTS = ("appearance", "frame-set integration", "ordered motion", "mixed", "undetermined", "not recognised")


@dataclass(frozen=True)
class CueThresholds:
    """The verdict's options (``analyze`` flags)."""

    keep: float = 0.9
    drop: float = 0.5
    alpha: float = 0.05
    n_boot: int = 2000
    seed: int = 0
    min_pairs: int = 3
    min_iou: float = 0.5
    min_recognised: float | None = None  # None: twice chance, 2 / K
    max_attraction: float = 0.1  # freeze may move other classes' objects towards an "appearance" class this much

    def __post_init__(self) -> None:
        if not 0 < self.drop < self.keep:
            raise UserError(f"--drop {self.drop} / --keep {self.keep}: need 0 < drop < keep")
        if not 0 < self.alpha < 1:
            raise UserError(f"--alpha {self.alpha}: need 0 < alpha < 1")
        if not 0 <= self.max_attraction <= 1:
            raise UserError(f"--max-attraction {self.max_attraction}: need 0 <= value <= 1")


def intervention_of(label: str) -> str:
    """The intervention a pass label belongs to (``shuffle-2`` -> ``shuffle``)."""
    head, _, tail = label.rpartition("-")
    return head if head and tail.isdigit() else label


# ----------------------------------------------------------------------------- statistics


def ratio_bootstrap(
    pairs: Sequence[tuple[Any, float, float]], n_boot: int, seed: int
) -> tuple[float, np.ndarray]:
    """``R = sum(p1) / sum(p0)`` of ``(video, p0, p1)`` pairs and its bootstrap over videos (n_boot,)."""
    by_video: dict[Any, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for video, p0, p1 in pairs:
        by_video[video][0] += float(p0)
        by_video[video][1] += float(p1)
    sums = np.array(list(by_video.values()), dtype=np.float64)  # (V, 2)
    if not len(sums) or sums[:, 0].sum() <= 0:
        return float("nan"), np.full(n_boot, np.nan)
    r = float(sums[:, 1].sum() / sums[:, 0].sum())
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    s0, s1 = sums[pick, 0].sum(axis=1), sums[pick, 1].sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = np.where(s0 > 0, s1 / s0, np.nan)
    return r, boot


def _one_sided_p(boot: np.ndarray, threshold: float, above: bool) -> float:
    """p of "R above (below) threshold": share of bootstrap values on the other side, +1 smoothed."""
    b = boot[np.isfinite(boot)]
    if not b.size:
        return float("nan")
    far = (b <= threshold) if above else (b >= threshold)
    return float((1 + far.sum()) / (1 + b.size))


def threshold_status(p_keep: float, p_drop: float, p_below_keep: float, p_above_drop: float, alpha: float) -> str:
    """``keeps`` / ``drops`` / ``partial`` / ``undetermined`` from Holm-adjusted one-sided p-values."""
    if p_keep <= alpha:
        return "keeps"
    if p_drop <= alpha:
        return "drops"
    if p_below_keep <= alpha and p_above_drop <= alpha:
        return "partial"
    return "undetermined"


def decide(
    statuses: Mapping[str, str], recognised: bool, enough: bool = True, freeze_attraction: Mapping | None = None,
    max_attraction: float = CueThresholds.max_attraction,
) -> tuple[str, str]:
    """The verdict and its reason from the freeze and shuffle statuses and freeze's attraction (see the
    module docstring)."""
    if not recognised:
        return "not recognised", (
            "the unaltered model does not recognise this class: the lower 95 % bound of its mean class "
            "probability is not above twice chance"
        )
    if not enough:
        return "undetermined", "too few matched objects"
    freeze, shuffle = statuses.get("freeze"), statuses.get("shuffle")
    if freeze is None:
        return "undetermined", "no freeze pass"
    if freeze == "keeps":
        ci = (freeze_attraction or {}).get("ci95")
        if ci is not None and ci[1] > max_attraction:
            return "undetermined", (
                f"freeze keeps the class probability but also moves other classes' objects towards this class "
                f"(attraction {freeze_attraction['mean']:.2f} [{ci[0]:.2f}, {ci[1]:.2f}] > {max_attraction:g}): "
                "a repeated frame reads as this class, so keeping it is no evidence of appearance"
            )
        return "appearance", "freeze keeps the class probability"
    if freeze == "partial":
        return "mixed", "freeze lowers the class probability only partly: one frame carries part of the evidence"
    if freeze == "undetermined":
        return "undetermined", "the freeze interval straddles a threshold"
    if shuffle is None:
        return "undetermined", "freeze drops, and there is no shuffle pass to tell order from the set of views"
    if shuffle == "keeps":
        return "frame-set integration", "freeze drops, shuffle keeps: several views matter, their order does not"
    if shuffle == "drops":
        return "ordered motion", "freeze and shuffle both drop: the order of the frames matters"
    if shuffle == "partial":
        return "mixed", "freeze drops, shuffle lowers partly: the set of views and their order both matter"
    return "undetermined", "freeze drops, the shuffle interval straddles a threshold"


_PROXY_MATCH = {
    "appearance-based": {"appearance"},
    "motion-based": {"frame-set integration", "ordered motion"},
    "mixed": {"mixed"},
}


def proxy_agrees(reading: str | None, verdict: str) -> bool | None:
    """Whether an attention-proxy reading agrees with a causal verdict (None: one of them claims nothing)."""
    if reading not in _PROXY_MATCH or verdict in ("undetermined", "not recognised"):
        return None
    return verdict in _PROXY_MATCH[reading]


def class_statistics(
    pairs: Mapping[str, Mapping[Any, list[tuple[Any, float, float]]]],
    unaltered: Mapping[Any, list[tuple[Any, float]]],
    num_classes: int,
    th: CueThresholds = CueThresholds(),
    gains: Mapping[str, Mapping[Any, list[tuple[Any, float]]]] | None = None,
) -> dict[Any, dict]:
    """Per class: unaltered recognition, per intervention R / interval / status / attraction, and the verdict.

    ``pairs[intervention][class]``: ``(video, p0, p1)``; ``unaltered[class]``: ``(video, p0)`` of every
    object the unaltered pass found; ``gains[intervention][class]``: ``(video, p_class(altered) -
    p_class(unaltered))`` of the matched objects of the other classes (the attraction's values).
    """
    gains = gains or {}
    min_rec = th.min_recognised if th.min_recognised is not None else 2.0 / max(num_classes, 1)
    classes = sorted(set(unaltered) | {c for per in pairs.values() for c in per}, key=str)
    out: dict[Any, dict] = {}
    for c in classes:
        found = unaltered.get(c, [])
        mean_p0, boot = ratio_bootstrap([(v, 1.0, p) for v, p in found], th.n_boot, th.seed)
        lo = float(np.nanpercentile(boot, 2.5)) if found else float("nan")
        out[c] = {
            "unaltered": {
                "n_objects": len(found),
                "mean_p": None if not found else mean_p0,
                "ci95": None if not found else [lo, float(np.nanpercentile(boot, 97.5))],
                "recognised": bool(found) and lo > min_rec,
                "threshold": min_rec,
            },
            "interventions": {},
        }
    for name, per_class in pairs.items():
        tested, rows = [], {}
        for c in classes:
            cp = per_class.get(c, [])
            r, boot = ratio_bootstrap(cp, th.n_boot, th.seed)
            ok = len(cp) >= th.min_pairs and np.isfinite(r)
            rows[c] = {
                "R": None if not np.isfinite(r) else r,
                "ci95": None if not ok else [float(np.nanpercentile(boot, 2.5)), float(np.nanpercentile(boot, 97.5))],
                "n_pairs": len(cp),
                "n_videos": len({v for v, _, _ in cp}),
                "mean_p0": None if not cp else float(np.mean([p for _, p, _ in cp])),
                "mean_p1": None if not cp else float(np.mean([p for _, _, p in cp])),
            }
            if ok:
                tested.append(c)
                rows[c]["_p"] = [
                    _one_sided_p(boot, th.keep, above=True),
                    _one_sided_p(boot, th.drop, above=False),
                    _one_sided_p(boot, th.keep, above=False),
                    _one_sided_p(boot, th.drop, above=True),
                ]
        if tested:
            raw = np.array([rows[c]["_p"] for c in tested])  # (classes, 4)
            adj = np.stack([holm_adjust(raw[:, j]) for j in range(4)], axis=1)
            for i, c in enumerate(tested):
                rows[c]["p_holm"] = dict(zip(("keeps", "drops", "below_keep", "above_drop"), adj[i].tolist()))
                rows[c]["status"] = threshold_status(*adj[i].tolist(), th.alpha)
        for c in classes:
            rows[c].pop("_p", None)
            rows[c].setdefault("status", "undetermined")
            rows[c]["attraction"] = _video_bootstrap(gains.get(name, {}).get(c, []), th.n_boot, th.seed)
            out[c]["interventions"][name] = rows[c]
    for row in out.values():
        statuses = {k: v["status"] for k, v in row["interventions"].items()}
        freeze = row["interventions"].get("freeze", {})
        verdict, reason = decide(
            statuses, row["unaltered"]["recognised"], enough=freeze.get("n_pairs", 0) >= th.min_pairs,
            freeze_attraction=freeze.get("attraction"), max_attraction=th.max_attraction,
        )
        row["verdict"], row["reason"] = verdict, reason
    return out


# ----------------------------------------------------------------------------- faithfulness of frame importance


def _auc(curve: Sequence[float], fractions: Sequence[float]) -> float:
    x, y = np.asarray(fractions, dtype=np.float64), np.asarray(curve, dtype=np.float64)
    span = x[-1] - x[0]
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2 / span) if span > 0 else float(y.mean())


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import rankdata

    ra, rb = rankdata(a), rankdata(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _video_bootstrap(values: Sequence[tuple[Any, float]], n_boot: int, seed: int) -> dict:
    """Mean of per-instance values with a 95 % bootstrap interval over videos."""
    by_video: dict[Any, list[float]] = defaultdict(list)
    for video, x in values:
        if np.isfinite(x):
            by_video[video].append(float(x))
    if not by_video:
        return {"mean": None, "ci95": None, "n": 0, "n_videos": 0}
    sums = np.array([[sum(v), len(v)] for v in by_video.values()], dtype=np.float64)
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    boot = sums[pick, 0].sum(axis=1) / sums[pick, 1].sum(axis=1)
    return {
        "mean": float(sums[:, 0].sum() / sums[:, 1].sum()),
        "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "n": int(sums[:, 1].sum()),
        "n_videos": len(sums),
    }


def deletion_faithfulness(
    instances: Sequence[tuple[Any, dict, Sequence[float]]], n_boot: int = 2000, seed: int = 0, n_shuffles: int = 200
) -> dict:
    """Deletion-curve faithfulness of frame importance from ``(video, deletion record, importance)``.

    * ``area_random_minus_importance``: AUC(random order) - AUC(most important first), per instance
      (AUC of the class probability over the removed fraction, normalised to the fraction range):
      > 0 when removing the important frames first lowers the probability faster than chance;
    * ``area_least_minus_importance``: the same against least important first;
    * ``spearman``: rank correlation of each frame's importance with the drop from removing that frame
      alone; ``spearman_random``: the same for importance shuffled over the frames (mean of
      ``n_shuffles``), the baseline; ``spearman_gain``: their difference per instance.
    """
    rng = np.random.default_rng(seed)
    a_rand, a_least, rho, rho_rand, gain = [], [], [], [], []
    curves: dict[str, list[np.ndarray]] = defaultdict(list)
    fractions = None
    for video, d, importance in instances:
        fractions = d[DELETION_FRACTIONS_KEY]
        imp = _auc(d[DELETION_IMPORTANCE_FIRST], fractions)
        a_rand.append((video, _auc(d[DELETION_RANDOM_MEAN], fractions) - imp))
        a_least.append((video, _auc(d[DELETION_LEAST_FIRST], fractions) - imp))
        for key in (DELETION_IMPORTANCE_FIRST, DELETION_LEAST_FIRST, DELETION_RANDOM_MEAN):
            curves[key].append(np.asarray(d[key], dtype=np.float64))
        w, effect = np.asarray(importance, dtype=np.float64), np.asarray(d[DELETION_LOO_EFFECT], dtype=np.float64)
        if len(w) == len(effect) and len(w) >= 3:
            r = _spearman(w, effect)
            base = np.nanmean([_spearman(rng.permutation(w), effect) for _ in range(n_shuffles)])
            rho.append((video, r))
            rho_rand.append((video, float(base)))
            gain.append((video, r - float(base)))
    return {
        "instances": len(a_rand),
        "fractions": fractions,
        "mean_curves": {k: np.mean(v, axis=0).tolist() for k, v in curves.items()},
        "area_random_minus_importance": _video_bootstrap(a_rand, n_boot, seed),
        "area_least_minus_importance": _video_bootstrap(a_least, n_boot, seed),
        "spearman": _video_bootstrap(rho, n_boot, seed),
        "spearman_random": _video_bootstrap(rho_rand, n_boot, seed),
        "spearman_gain": _video_bootstrap(gain, n_boot, seed),
    }


def rollout_faithfulness(instances: Sequence[tuple[Any, dict]], n_boot: int = 2000, seed: int = 0) -> dict:
    """:func:`deletion_faithfulness` of each rollout ordering of ``(video, deletion record)``: readout ->
    the same statistics, from the ordering's own curves and importance with the record's shared random
    curve and leave-one-out effects. Records without rollout curves (runs written before) add nothing."""
    views: dict[str, list[tuple[Any, dict, Sequence[float]]]] = defaultdict(list)
    for video, d in instances:
        for readout, r in (d.get(DELETION_ROLLOUT) or {}).items():
            view = {**d, DELETION_IMPORTANCE_FIRST: r[DELETION_IMPORTANCE_FIRST], DELETION_LEAST_FIRST: r[DELETION_LEAST_FIRST]}
            views[readout].append((video, view, r[DELETION_IMPORTANCE]))
    return {readout: deletion_faithfulness(v, n_boot, seed) for readout, v in sorted(views.items())}


# the deletion measures, in table order, and what a value means
FAITHFULNESS_MEASURES = (
    ("area_random_minus_importance", "> 0: removing the most important frames first lowers p faster than random"),
    ("area_least_minus_importance", "> 0: ... faster than removing the least important first"),
    ("spearman", "importance vs the drop from removing that frame alone"),
    ("spearman_random", "the same with importance shuffled over frames (baseline)"),
    ("spearman_gain", "> 0: importance ranks frames better than chance"),
)


def _interval_cell(row: Mapping) -> str:
    mean, ci = row.get("mean"), row.get("ci95")
    if mean is None:
        return "-"
    return f"{mean:.3f}" + ("" if not ci else f" [{ci[0]:.3f}, {ci[1]:.3f}]")


def faithfulness_orderings(faith: Mapping) -> list[tuple[str, Mapping]]:
    """(name, statistics) per frame importance of a ``faithfulness`` entry: the pooling weights, then
    each rollout readout (none in runs written before the rollout curves)."""
    return [("pooling weights", faith), *((f"rollout {k}", v) for k, v in (faith.get("rollout") or {}).items())]


def faithfulness_rows(faith: Mapping | None) -> list[dict[str, Any]]:
    """A table of a ``faithfulness`` entry: one row per measure, one column per frame importance
    (pooling weights, then each rollout readout) holding "mean [95 % interval]", then ``reading``."""
    if not faith:
        return []
    named = faithfulness_orderings(faith)
    return [
        {"measure": key, **{name: _interval_cell(doc[key]) for name, doc in named}, "reading": reading}
        for key, reading in FAITHFULNESS_MEASURES
    ]
