"""The ``causal`` stage of ``analyze``: match objects across the intervention passes of a run and
read each class's causal verdict (:mod:`.causal_cues`), beside the attention-proxy reading.

Output ``inference/causal_cues.json``: settings, per pass its intervention record, match rate and
AP; per class the unaltered recognition, R / interval / status per intervention, the verdict, the
attention-proxy reading of ``cue_reading.json`` (when that stage ran) and whether they agree; with a
``deletion`` pass, ``faithfulness``: the deletion-curve statistics of the pooling-weight frame
importance and, under ``rollout``, of each rollout readout the probe recorded.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from ..data.rle import RLEMasks, video_mask_iou
from ..utils.run_layout import completed_passes, pass_dir
from ..utils.temporal_record import CLASS_PROBS, DELETION, FRAME_IMPORTANCE, REFINER_ID, SCORE
from .causal_cues import (
    CueThresholds,
    class_statistics,
    deletion_faithfulness,
    intervention_of,
    proxy_agrees,
    rollout_faithfulness,
)
from .run_dir import GroundTruth, RunDirectory

__all__ = ["CausalCues", "REFERENCE_MIN_SCORE"]

REFERENCE_MIN_SCORE = 0.5  # unaltered predictions that stand for objects when there is no ground truth


def _unique_rows(preds: list[dict]) -> list[dict]:
    """One prediction per refiner row (the rows' other (row, class) records share masks and probabilities)."""
    seen, out = set(), []
    for p in sorted(preds, key=lambda p: -float(p.get("score", 0.0))):
        key = p.get(REFINER_ID, id(p))
        if key not in seen and p.get(CLASS_PROBS) is not None:
            seen.add(key)
            out.append(p)
    return out


def _masks(preds: list[dict], h: int, w: int) -> list[RLEMasks]:
    return [RLEMasks(p["segmentations"], h, w) for p in preds]


def _best(ious: np.ndarray, min_iou: float) -> list[int | None]:
    """Per reference row, the column of its best IoU when >= min_iou (None otherwise)."""
    if ious.size == 0:
        return [None] * ious.shape[0]
    cols = ious.argmax(axis=1)
    return [int(c) if ious[i, c] >= min_iou else None for i, c in enumerate(cols)]


class CausalCues:
    """Reads every finished intervention pass of a run (see the module docstring)."""

    output = "causal_cues.json"

    def __init__(self, run: RunDirectory, gt: GroundTruth | None, thresholds: CueThresholds | None = None) -> None:
        self.run, self.gt, self.th = run, gt, thresholds or CueThresholds()
        self.passes = completed_passes(run.root)
        self.pass_runs = {label: RunDirectory(pass_dir(run.root, label)) for label in self.passes}
        self.use_gt = gt is not None and gt.has_annotations
        self.unaltered: dict[Any, list[tuple[Any, float]]] = defaultdict(list)
        # per intervention: (video, object's class, class probabilities unaltered, altered) of every pair
        self.moves: dict[str, list[tuple[Any, Any, dict[str, float], dict[str, float]]]] = defaultdict(list)
        self.counts: dict[str, dict[str, int]] = defaultdict(lambda: {"objects": 0, "matched": 0})
        self.deletion: list[tuple[Any, dict, list[float]]] = []  # (video, deletion record, frame importance)

    # ------------------------------------------------------------------ per video
    def add_video(self, v) -> None:
        vid = v.video_id
        dims = self.run.video_dimensions(vid) or {}
        h, w = (dims.get("original") or [None, None])[:2]
        plain = _unique_rows(self.run.predictions.get(vid, []))
        refs = self._references(vid, plain, h, w)
        if not refs or h is None:
            return
        ref_masks = [m for _, _, m in refs]
        plain_match = _best(video_mask_iou(ref_masks, _masks(plain, h, w)), self.th.min_iou) if plain else [None] * len(refs)
        p0, probs0 = {}, {}  # p0: the object's own class, for the unaltered recognition
        for i, (_, cls, _) in enumerate(refs):
            j = plain_match[i]
            if j is not None:
                probs0[i] = plain[j][CLASS_PROBS]
                p0[i] = float(probs0[i].get(str(cls), 0.0))
                self.unaltered[cls].append((vid, p0[i]))
        by_intervention: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
        for label, info in self.passes.items():
            if info.get("family") == "probe":
                self._add_deletion(vid, label)
                continue
            order = (info.get("frame_order") or {}).get(str(vid))
            preds = _unique_rows(self.pass_runs[label].predictions.get(vid, []))
            if order is None:
                continue
            name = intervention_of(label)
            if name in ("shuffle", "reverse") and len(order) < 2:
                continue  # a one-frame video: nothing to reorder (documented skip)
            shown = [RLEMasks([m.rles[t] for t in order], h, w) for m in ref_masks]
            present = [bool(m.present().any()) for m in shown]
            match = _best(video_mask_iou(shown, _masks(preds, h, w)), self.th.min_iou) if preds else [None] * len(refs)
            for i in range(len(refs)):
                if i not in p0 or not present[i]:
                    continue  # not found unaltered, or absent from what this pass showed
                self.counts[label]["objects"] += 1
                if match[i] is not None:
                    self.counts[label]["matched"] += 1
                    by_intervention[name][i].append(preds[match[i]][CLASS_PROBS])
        for name, per_obj in by_intervention.items():
            for i, altered in per_obj.items():
                cls = refs[i][1]
                mean = {k: float(np.mean([a.get(k, 0.0) for a in altered])) for k in set().union(*altered)}
                self.moves[name].append((vid, cls, probs0[i], mean))

    def _add_deletion(self, vid, label: str) -> None:
        for p in _unique_rows(self.pass_runs[label].predictions.get(vid, [])):
            if p.get(DELETION) and p.get(FRAME_IMPORTANCE) and float(p.get(SCORE, 0.0)) >= REFERENCE_MIN_SCORE:
                self.deletion.append((vid, p[DELETION], p[FRAME_IMPORTANCE]))

    def _references(self, vid, plain: list[dict], h, w) -> list[tuple[Any, Any, RLEMasks]]:
        """(object id, class, masks) of the reference objects of a video."""
        if h is None:
            return []
        if self.use_gt:
            anns, masks = self.gt.masks(vid)
            return [(a["id"], a["category_id"], m) for a, m in zip(anns, masks)]
        refs = []
        for p in plain:
            if float(p.get("score", 0.0)) >= REFERENCE_MIN_SCORE:
                probs = p[CLASS_PROBS]
                cls = int(max(probs, key=lambda k: probs[k]))
                refs.append((p.get(REFINER_ID), cls, RLEMasks(p["segmentations"], h, w)))
        return refs

    # ------------------------------------------------------------------ result
    def finish(self) -> dict:
        categories = {} if self.gt is None else self.gt.categories
        num_classes = len(categories) or max(1, len({c for c in self.unaltered}))
        for cid in categories:  # every class gets a row: one the model never found is "not recognised"
            self.unaltered.setdefault(cid, [])
        pairs, gains = self._pairs_and_gains()
        stats = class_statistics(pairs, self.unaltered, num_classes, self.th, gains)
        proxies = self._proxy_readings()
        table = []
        for cls, row in stats.items():
            cat = categories.get(cls, {})
            reading = proxies.get(str(cls))
            row.update(name=cat.get("name", f"class {cls}"), designed_cue=cat.get("cue"), proxy_reading=reading)
            row["proxy_agrees"] = proxy_agrees(reading, row["verdict"])
            table.append({
                "class": row["name"],
                "category_id": cls,
                "designed_cue": row["designed_cue"],
                "verdict": row["verdict"],
                **{f"R_{k}": v["R"] for k, v in sorted(row["interventions"].items())},
                "freeze_attraction": ((row["interventions"].get("freeze") or {}).get("attraction") or {}).get("mean"),
                "proxy_reading": reading,
                "proxy_agrees": row["proxy_agrees"],
            })
        passes = {}
        for label, info in self.passes.items():
            metrics = self.pass_runs[label].metrics or {}
            c = self.counts.get(label, {"objects": 0, "matched": 0})
            passes[label] = {
                "intervention": {k: v for k, v in info.items() if k != "frame_order"},
                "objects": c["objects"],
                "matched": c["matched"],
                "match_rate": None if not c["objects"] else c["matched"] / c["objects"],
                "AP": (metrics.get("ytvis") or {}).get("AP"),
                "per_category_AP": metrics.get("per_category_AP"),
            }
        th = self.th
        return {
            "settings": {
                "keep": th.keep, "drop": th.drop, "alpha": th.alpha, "n_boot": th.n_boot, "seed": th.seed,
                "min_pairs": th.min_pairs, "min_iou": th.min_iou, "max_attraction": th.max_attraction,
                "reference": "ground-truth objects" if self.use_gt else f"unaltered predictions scored >= {REFERENCE_MIN_SCORE}",
                "statistic": "R = sum(p1) / sum(p0) over matched objects; 95% bootstrap over videos; "
                "one-sided threshold tests Holm-adjusted across classes",
            },
            "unaltered_AP": ((self.run.metrics or {}).get("ytvis") or {}).get("AP"),
            "passes": passes,
            "classes": {str(k): v for k, v in stats.items()},
            "table": table,
            "random_weights": bool(self.run.run_info is not None and self.run.run_info.random_weights),
            "faithfulness": None if not self.deletion else {
                "importance": "frame_importance (the refiner's temporal pooling weights)",
                "predictions": f"top predictions scored >= {REFERENCE_MIN_SCORE} (one per refiner row)",
                **deletion_faithfulness(self.deletion, self.th.n_boot, self.th.seed),
                "rollout_importance": "attention rollout over the refiner's time self-attention (rownorm(A + I), "
                "heads averaged, every layer, frames where the instance is absent masked out); readout column_mean: "
                "mean over the present querying frames; activation: the pooling weights carried through the rollout",
                # readout -> the statistics above (empty for runs written before the rollout curves)
                "rollout": rollout_faithfulness([(v, d) for v, d, _ in self.deletion], self.th.n_boot, self.th.seed),
            },
        }

    def _pairs_and_gains(self) -> tuple[dict, dict]:
        """From the recorded moves, per intervention and class c: the pairs ``(video, p0, p1)`` of c's own
        objects, and the gains ``(video, p_c altered - p_c unaltered)`` of the other classes' objects."""
        classes = set(self.unaltered) | {cls for moves in self.moves.values() for _, cls, _, _ in moves}
        pairs: dict[str, dict[Any, list]] = defaultdict(lambda: defaultdict(list))
        gains: dict[str, dict[Any, list[tuple[Any, float]]]] = defaultdict(lambda: defaultdict(list))
        for name, moves in self.moves.items():
            for vid, cls, before, after in moves:
                pairs[name][cls].append((vid, float(before.get(str(cls), 0.0)), after.get(str(cls), 0.0)))
                for c in classes - {cls}:
                    gains[name][c].append((vid, after.get(str(c), 0.0) - before.get(str(c), 0.0)))
        return pairs, gains

    def _proxy_readings(self) -> dict[str, str]:
        """class -> attention-proxy reading from ``cue_reading.json`` (written earlier in this analyze run)."""
        path = Path(self.run.inference_dir) / "cue_reading.json"
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): r.get("reading") for k, r in (doc.get("readings") or {}).items()}
