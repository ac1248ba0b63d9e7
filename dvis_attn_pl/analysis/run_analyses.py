"""The JSON analyses of ``analyze``: each collects per-video results and returns one JSON document.

Every analysis has ``add_video(video: VideoInputs)`` (called once per video, in video order) and
``finish() -> dict`` (the document written to ``inference/<output>``). The numerics are the
analysis modules' (``frame_importance``, ``tracker_attention``, ``attention_stats``,
``cue_reading``, ``compare_runs``); this module chooses the inputs from the run directory and
shapes the documents. No timestamps or absolute run paths go into the documents, so a rerun (or
a copy of the run directory) gives byte-identical files.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..utils.errors import UserError
from ..utils.temporal_record import (
    CATEGORY_ID,
    DECISION_SETTLE_FRAME,
    FRAME_IMPORTANCE,
    REFINER_ID,
    SCORE_AFTER_K_FRAMES,
    SEQUENCE_ID,
)
from .attention_stats import aggregate, map_sequence_stats, series_stats
from .compare_runs import compare_frame_importance, match_by_iou, pairs_from_matches
from .cue_reading import importance_proxies, read_cues, temporal_attention_proxies
from .frame_importance import DEFINITIONS as FI_DEFINITIONS
from .frame_importance import video_frame_importance
from .run_dir import GroundTruth, RunDirectory, video_mask_iou
from .tracker_attention import video_tracker_topk
from .video_inputs import VideoInputs

__all__ = [
    "CueReading",
    "DecisionTiming",
    "FrameImportance",
    "RunComparison",
    "Statistics",
    "TrackerAttention",
]

_GT_KEYS = ("gt_fraction", "gt_mass", "gt_mass_lift", "top_mass_frames", "gt_top_iou",
            "gt_top_precision", "gt_top_recall")


def _prediction_fields(p: dict) -> dict[str, Any]:
    return {
        "index": p["index"],
        "score": p.get("score"),
        "category_id": p.get("category_id"),
        "refiner_id": p.get(REFINER_ID),
        "sequence_id": p.get(SEQUENCE_ID),
    }


def _gt_section(gt: GroundTruth | None, why: str) -> dict[str, Any]:
    if gt is None:
        return {"available": False, "reason": why}
    return {"available": gt.has_annotations, "path": str(gt.path),
            **({} if gt.has_annotations else {"reason": f"{gt.path}: has no annotations"})}


def _category_names(gt: GroundTruth | None) -> dict[str, str]:
    return {} if gt is None else {str(k): v["name"] for k, v in sorted(gt.categories.items())}


# ----------------------------------------------------------------------------- frame importance


class FrameImportance:
    """``frame_importance.json``: pooling-weight statistics per video and top prediction, with GT overlap."""

    output = "frame_importance.json"
    top_mass = 0.75

    def __init__(self, run: RunDirectory, gt: GroundTruth | None, gt_reason: str, top_k: int | None) -> None:
        self.run, self.gt, self.gt_reason, self.top_k = run, gt, gt_reason, top_k
        self.videos: list[dict] = []
        self.records: list[dict] = []

    def add_video(self, v: VideoInputs) -> None:
        with_fi = [i for i, p in enumerate(v.predictions) if p.get(FRAME_IMPORTANCE) is not None]
        if not with_fi:
            self.videos.append({"video_id": v.video_id, "num_frames": v.num_frames, "has_gt": False,
                                "predictions": []})
            return
        weights = np.stack([v.frame_importance(i) for i in with_fi])
        present = v.present[with_fi]
        matches = [v.gt_matches[i] for i in with_fi]
        has_gt = v.gt_video is not None
        meta = [
            {
                **_prediction_fields(v.predictions[i]),
                "present_frames": int(present[k].sum()),
                "mass_on_present": float(weights[k][present[k]].sum()),
                "gt_match": None if m is None else {key: m[key] for key in ("annotation_id", "category_id", "iou")},
            }
            for k, (i, m) in enumerate(zip(with_fi, matches))
        ]
        doc = video_frame_importance(v.video_id, weights, meta, top_mass=self.top_mass)
        matched = [k for k, m in enumerate(matches) if m is not None]
        if matched:
            gt_doc = video_frame_importance(
                v.video_id, weights[matched], None,
                gt_present=np.stack([matches[k]["present"] for k in matched]), top_mass=self.top_mass,
            )
            for k, entry in zip(matched, gt_doc["predictions"]):
                doc["predictions"][k].update({key: entry[key] for key in _GT_KEYS})
        if has_gt:
            for entry in doc["predictions"]:
                for key in _GT_KEYS:
                    entry.setdefault(key, None)
        doc["has_gt"] = has_gt
        self.videos.append(doc)
        for entry in doc["predictions"]:
            self.records.append({"video_id": v.video_id, **entry})

    def finish(self) -> dict:
        stats = ["entropy_normalised", "effective_frames", "peak_concentration", "mass_on_present",
                 "gt_mass_lift", "gt_top_iou"]
        definitions = {
            **FI_DEFINITIONS,
            "mass_on_present": "raw weight on frames where the prediction's tracked instance was present",
            "gt_match": "the ground-truth instance of the video with the highest temporal mask IoU "
            "(> 0; IoU over all frames); GT statistics use its annotated frames",
        }
        return {
            "definitions": definitions,
            "settings": {
                "top_k": self.top_k,
                "top_mass": self.top_mass,
                "valid_frames": "all frames (the pooling softmax covers every frame of the video)",
                "predictions": "the top_k best-scored predictions of each video that carry frame_importance",
            },
            "ground_truth": _gt_section(self.gt, self.gt_reason),
            "categories": _category_names(self.gt),
            "videos": self.videos,
            "summary": aggregate(self.records, stats),
        }


# ----------------------------------------------------------------------------- tracker attention


class TrackerAttention:
    """``tracker_attention.json``: top-k segmenter queries each predicted sequence reads, per frame and layer."""

    output = "tracker_attention.json"

    def __init__(self, run: RunDirectory, top_k: int | None, k: int = 5) -> None:
        self.run, self.top_k, self.k = run, top_k, k
        self.videos: list[dict] = []
        self.without: list[Any] = []
        self.layers: list[str] | None = None
        self.heads: str | None = None

    def add_video(self, v: VideoInputs) -> None:
        art = v.artifact("tracker_cross")
        if art is None:
            self.without.append(v.video_id)
            return
        w = art.tensors["weights"]  # (L, R, [H,] Q)
        if w.ndim == 4:
            w = w.mean(axis=2)
        frame, seq = art.tensors["frame"].astype(np.int64), art.tensors["sequence_id"].astype(np.int64)
        layers = [f"layer{n}" for n in _layer_numbers(art.meta.get("sites") or [], w.shape[0])]
        self.layers, self.heads = layers, art.meta.get("heads")
        extra: dict[int, dict] = {}
        for p in v.predictions:
            s = p.get(SEQUENCE_ID)
            if s is None or int(s) < 0:
                continue
            e = extra.setdefault(int(s), {"refiner_id": p.get(REFINER_ID), "category_id": p.get(CATEGORY_ID),
                                          "predictions": []})
            e["predictions"].append(p["index"])
        frames = (
            (int(f), w[:, frame == f, :], seq[frame == f]) for f in np.unique(frame).tolist()
        )  # the tracker runs frame by frame; rows and columns may change between frames
        doc = video_tracker_topk(frames, list(extra), k=self.k, layer_names=layers, extra=extra)
        self.videos.append({"video_id": v.video_id, "num_frames": v.num_frames,
                            "tracker_frames": int(np.unique(frame).size), **doc})

    def finish(self) -> dict:
        return {
            "settings": {
                "k": self.k,
                "top_k": self.top_k,
                "layers": self.layers,
                "heads": self.heads,
                "sum_over_layers": "top-k of the row summed over the tracker layers",
                "sequences": "tracker sequences of the top_k best-scored predictions of each video",
            },
            "videos": self.videos,
            "videos_without_capture": self.without,
        }


def _layer_numbers(sites: list[str], n_layers: int) -> list[int]:
    """The layer index in each official module path (``...layers.3.multihead_attn`` -> 3)."""
    nums = []
    for s in sites:
        digits = [part for part in s.split(".") if part.isdigit()]
        nums.append(int(digits[0]) if digits else len(nums))
    return nums if len(nums) == n_layers and len(set(nums)) == n_layers else list(range(n_layers))


# ----------------------------------------------------------------------------- attention statistics


STATS_DEFINITIONS = {
    "refiner_time/<layer>": "map statistics of the instance's refiner time self-attention, rows = querying "
    "frames as maps over attended frames; valid = present frames; region = present frames (columns)",
    "refiner_time/<layer>/self_mass": "mean over valid frames of the attention a frame pays to itself",
    "rollout/matrix": "map statistics of the rollout R (rows = output frames); valid and region = present frames",
    "rollout/readout.<mode>": "series statistics of the rollout readout over present frames",
    "decoder_cross/<layer>": "map statistics of the prediction's decoder cross-attention maps; valid = frames "
    "with a tracker row; region = feature cells touched by the predicted mask",
    "map statistics": "strength, region_mass, consistency (Pearson r of consecutive maps), variance, "
    "entropy_normalised, gini, top10_mass, slopes and early/late ratios: see analysis.attention_stats",
    "aggregate": "per video: mean/std/n over its instances; per class (predicted category): over video means",
}


def _flatten(prefix: str, stats: dict, out: dict) -> None:
    for k, val in stats.items():
        out[f"{prefix}/{k}"] = val


class Statistics:
    """``attention_stats.json``: strength, consistency, distribution and evolution of the captured maps."""

    output = "attention_stats.json"

    def __init__(self, run: RunDirectory, gt: GroundTruth | None, top_k: int | None) -> None:
        self.run, self.gt, self.top_k = run, gt, top_k
        self.instances: list[dict] = []
        self.flat: list[dict] = []
        self.sources: dict[str, dict] = {}

    def add_video(self, v: VideoInputs) -> None:
        for i, p in enumerate(v.predictions):
            entry: dict[str, Any] = {"video_id": v.video_id, **_prediction_fields(p)}
            measured = False
            flat: dict[str, Any] = {"video_id": v.video_id, "category_id": p.get("category_id")}
            ref = v.refiner_time(i)
            if ref is not None:
                mats, present = ref
                per_layer = {}
                for layer, a in enumerate(mats):  # a handful of layers
                    s = map_sequence_stats(a, valid=present, region=present)
                    diag = np.diagonal(a)
                    s["self_mass"] = float(diag[present].mean()) if present.any() else math.nan
                    per_layer[f"layer{layer}"] = s
                    _flatten(f"refiner_time/layer{layer}", s, flat)
                entry["refiner_time"] = per_layer
                self._source("refiner_time", v)
                measured = True
            roll = v.rollout(i)
            if roll is not None:
                present = roll["present"]
                r = {"matrix": map_sequence_stats(roll["matrix"], valid=present, region=present)}
                for key in sorted(k for k in roll if k.startswith("readout.")):
                    r[key] = series_stats(roll[key], valid=present)
                for key, s in r.items():
                    _flatten(f"rollout/{key}", s, flat)
                entry["rollout"] = r
                self._source("rollout", v)
                measured = True
            dec = v.decoder_stats(i)
            if dec:
                entry["decoder_cross"] = dec
                for key, s in dec.items():
                    _flatten(f"decoder_cross/{key}", s, flat)
                self._source("decoder_cross", v)
                measured = True
            if measured:
                self.instances.append(entry)
                self.flat.append(flat)

    def _source(self, kind: str, v: VideoInputs) -> None:
        if kind in self.sources:
            return
        art = v.artifact(kind)
        meta = art.meta
        info = {"sites": meta.get("sites"), "heads": meta.get("heads")}
        if kind == "rollout":
            info["options"] = meta.get("options")
        if kind == "decoder_cross":
            info["levels"] = meta.get("levels")
            info["tracker_weight_layer"] = meta.get("tracker_weight_layer")
        self.sources[kind] = info

    def finish(self) -> dict:
        return {
            "definitions": STATS_DEFINITIONS,
            "settings": {"top_k": self.top_k, "class": "predicted category_id"},
            "sources": self.sources,
            "categories": _category_names(self.gt),
            "instances": self.instances,
            "aggregate": aggregate(self.flat),
        }


# ----------------------------------------------------------------------------- cue reading

_RANDOM_NOTE = (
    "The run's weights are random (untrained): every reading is expected to be uninformative "
    "(inconclusive, or a chance pattern); agreement or disagreement with the designed cues means nothing here."
)
_TRAINED_NOTE = (
    "Control experiment: if the model learnt the designed cues and the proxies capture them, "
    "appearance-designed species should read appearance-based and motion-designed species motion-based."
)


class CueReading:
    """``cue_reading.json``: per-class appearance/motion reading with evidence (``cue_reading.read_cues``)."""

    output = "cue_reading.json"

    def __init__(self, run: RunDirectory, gt: GroundTruth | None, top_k: int | None, *,
                 n_permutations: int = 5000, seed: int = 0) -> None:
        self.run, self.gt, self.top_k = run, gt, top_k
        self.n_permutations, self.seed = n_permutations, seed
        self.weights_random = bool(run.require_run_info("cues").random_weights)
        self.measurements: list[dict] = []

    def add_video(self, v: VideoInputs) -> None:
        for i, p in enumerate(v.predictions):
            m: dict[str, Any] = {"video_id": v.video_id, "category_id": p.get("category_id")}
            valid = v.present[i][None]
            fi = v.frame_importance(i)
            if fi is not None:
                m.update({k: float(x[0]) for k, x in importance_proxies(fi[None], valid=valid).items()})
            ref = v.refiner_time(i)
            if ref is not None:
                mats, present = ref
                prox = temporal_attention_proxies(mats[None], valid=present[None])
                m["temporal_offdiag_mass"] = float(prox["temporal_offdiag_mass"][0])
            dec = v.decoder_stats(i)
            cons = [s["consistency"] for s in dec.values() if math.isfinite(s["consistency"])]
            if cons:
                m["consistency"] = float(np.mean(cons))
            if len(m) > 2:
                self.measurements.append(m)

    def finish(self) -> dict:
        doc = read_cues(self.measurements, weights_random=self.weights_random,
                        n_permutations=self.n_permutations, seed=self.seed)
        categories = {} if self.gt is None else self.gt.categories
        table = []
        for cls, r in sorted(doc["readings"].items(), key=lambda kv: _num_key(kv[0])):
            cat = categories.get(_as_int(cls), {})
            best = _strongest(r["evidence"])
            row = {
                "class": cat.get("name", f"class {cls}"),
                "category_id": _as_int(cls),
                "designed_cue": cat.get("cue"),
                "reading": r["reading"],
                "proxy": None if best is None else best[0],
                "effect_size": None if best is None else best[1].get(doc["settings"]["effect"]),
                "p_value": None if best is None else best[1].get("p_holm"),
                "n": r["n_videos"],
            }
            r["name"], r["designed_cue"] = row["class"], row["designed_cue"]
            table.append(row)
        read = {row["category_id"] for row in table}
        for cid, cat in sorted(categories.items()):  # dataset classes no measured prediction was given
            if cid not in read:
                table.append({"class": cat["name"], "category_id": cid, "designed_cue": cat.get("cue"),
                              "reading": "not predicted", "proxy": None, "effect_size": None,
                              "p_value": None, "n": 0})
        doc["table"] = table
        doc["class_of_a_prediction"] = "its predicted category_id"
        doc["measured_predictions"] = (
            f"the top {self.top_k} best-scored predictions of each video; proxies over the frames where the "
            "prediction's tracked instance was present"
        )
        declares = self.gt is not None and self.gt.declares_cues
        from .proxy_validation import proxy_status

        doc["proxy_status"] = proxy_status()
        for row in table:
            row["status"] = doc["proxy_status"]["status"]
        doc["control_experiment"] = {
            "dataset_declares_cues": declares,
            "note": (_RANDOM_NOTE if self.weights_random else _TRAINED_NOTE) if declares else
            "The dataset declares no designed cue per class; there is no control to compare with.",
        }
        if declares:
            doc["control_experiment"]["designed_vs_read"] = [
                {k: row[k] for k in ("class", "category_id", "designed_cue", "reading")} for row in table
            ]
            control = (self.gt.metadata or {}).get("control")
            if control:
                doc["control_experiment"]["design"] = control
        return doc


def _num_key(text: str) -> tuple:
    return (0, int(text), "") if str(text).lstrip("-").isdigit() else (1, 0, str(text))


def _as_int(text: Any) -> Any:
    return int(text) if str(text).lstrip("-").isdigit() else text


def _strongest(evidence: dict) -> tuple[str, dict] | None:
    """The tested proxy with the smallest Holm-adjusted p-value (first by name on ties)."""
    tested = [(name, e) for name, e in sorted(evidence.items()) if e.get("p_holm") is not None]
    return min(tested, key=lambda t: t[1]["p_holm"]) if tested else None


# ----------------------------------------------------------------------------- decision timing


class DecisionTiming:
    """``decision_timing.json``: when class decisions settle (and AP after a fraction of the frames)."""

    output = "decision_timing.json"

    def __init__(self, run: RunDirectory, gt: GroundTruth | None, gt_reason: str, top_k: int | None) -> None:
        self.run, self.gt, self.gt_reason, self.top_k = run, gt, gt_reason, top_k
        self.records: list[dict] = []
        self.video_ids: list[Any] = []
        self.per_prediction: list[dict] = []

    def add_video(self, v: VideoInputs) -> None:
        self.video_ids.append(v.video_id)
        self.records.extend(r for r in self.run.predictions.get(v.video_id, []) if DECISION_SETTLE_FRAME in r)
        for p in v.predictions:
            if DECISION_SETTLE_FRAME in p:
                self.per_prediction.append({
                    "video_id": v.video_id, **_prediction_fields(p),
                    "decision_settle_frame": p[DECISION_SETTLE_FRAME],
                    "settle_fraction": p[DECISION_SETTLE_FRAME] / max(1, v.num_frames),
                    "score_after_k_frames": p.get(SCORE_AFTER_K_FRAMES),
                })

    def finish(self) -> dict:
        from .decision import decision_timing

        records = [{k: v for k, v in r.items() if k != "index"} for r in self.records]
        gt = None
        if self.gt is not None and self.gt.has_annotations:
            keep = set(self.video_ids)
            absent = [vid for vid in self.video_ids if vid not in self.gt.videos]
            if absent:
                raise UserError(f"{self.gt.path}: lacks video {absent[0]} of the run; the ground truth does not "
                                "belong to this run")
            raw = self.gt.raw
            gt = {**raw, "videos": [v for v in raw["videos"] if v["id"] in keep],
                  "annotations": [a for a in raw["annotations"] if a["video_id"] in keep]}
        note = None
        try:
            summary = decision_timing(gt, records)
        except ImportError as exc:  # the metric module is not installed / not importable
            summary = decision_timing(None, records)
            summary["AP_after_fraction_of_frames"] = None
            note = f"AP after a fraction of the frames not computed: the YTVIS metric is unavailable ({exc})"
        if gt is None:
            note = f"AP after a fraction of the frames not computed: {self.gt_reason or 'no annotations'}"
        if note:
            summary["AP_not_computed"] = note
        return {"summary": summary, "videos": len(self.video_ids), "top_predictions": self.per_prediction,
                "settings": {"top_k": self.top_k}}


# ----------------------------------------------------------------------------- run comparison


class RunComparison:
    """``run_comparison.json``: this run's frame importance against another run's, matched by mask IoU."""

    output = "run_comparison.json"
    min_iou = 0.5

    def __init__(self, run: RunDirectory, other: RunDirectory, other_name: str, top_k: int | None, *,
                 n_permutations: int = 10000, seed: int = 0) -> None:
        self.run, self.other, self.other_name, self.top_k = run, other, other_name, top_k
        self.n_permutations, self.seed = n_permutations, seed
        self.pairs: list[tuple[str, Any, Any]] = []
        self.matches: list[dict] = []
        self.only_here: list[Any] = []
        self.size_differs: list[Any] = []

    def add_video(self, v: VideoInputs) -> None:
        if v.video_id not in self.other.predictions:
            self.only_here.append(v.video_id)
            return
        ia = [i for i, p in enumerate(v.predictions) if p.get(FRAME_IMPORTANCE) is not None]
        other = VideoInputs(self.other, v.video_id, top_k=self.top_k, ground_truth=None)
        ib = [j for j, p in enumerate(other.predictions) if p.get(FRAME_IMPORTANCE) is not None]
        if not ia or not ib:
            return
        if other.num_frames != v.num_frames or other.frame_size != v.frame_size:
            self.size_differs.append(v.video_id)
            return
        iou = video_mask_iou([v.masks[i] for i in ia], [other.masks[j] for j in ib])
        cats_a = [v.predictions[i].get("category_id") for i in ia]
        cats_b = [other.predictions[j].get("category_id") for j in ib]
        found = match_by_iou(iou, cats_a, cats_b, min_iou=self.min_iou)
        ids_a = [v.predictions[i]["index"] for i in ia]
        ids_b = [other.predictions[j]["index"] for j in ib]
        wa = [v.frame_importance(i) for i in ia]
        wb = [other.frame_importance(j) for j in ib]
        self.pairs.extend(pairs_from_matches(v.video_id, wa, wb, found, ids_a, ids_b))
        self.matches.extend({"video_id": v.video_id, "index_a": ids_a[i], "index_b": ids_b[j], "iou": m}
                            for i, j, m in found)

    def finish(self) -> dict:
        doc = compare_frame_importance(self.pairs, n_permutations=self.n_permutations, seed=self.seed)
        doc.update(
            run_a="this run directory",
            run_b=self.other_name,
            matching={
                "by": "temporal mask IoU (Hungarian), same predicted category",
                "min_iou": self.min_iou,
                "top_k": self.top_k,
                "pair_key": "<video>:<prediction index in A>:<prediction index in B>",
            },
            matches=self.matches,
            videos_only_in_a=self.only_here,
            videos_only_in_b=sorted(
                (vid for vid in self.other.predictions if vid not in self.run.predictions), key=str
            ),
            videos_with_different_size=self.size_differs,
        )
        return doc

