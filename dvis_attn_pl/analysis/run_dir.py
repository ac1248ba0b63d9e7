"""Reading a run directory for ``analyze``: one place that loads and checks what each analysis needs.

The run directory's names, its video order and ``run.json`` (:class:`RunInfo`) are defined in
``dvis_attn_pl.utils.run_layout``; what the analyses read of it:

    run.json                         RunInfo: ground-truth json path, frames folder, random_weights, ...
    config.yaml                      the model config used
    inference/results_temporal.json  per prediction: video_id, score, category_id, RLE masks, refiner and
                                     sequence ids, present frames, frame_importance (offline models), ...
    inference/image_dimensions.json  per video: original / resized / padded sizes, frame count
    inference/metrics.json           YTVIS metrics and decision timing (test only)
    attention_maps/manifest.json     every attention artifact (path, sha256, tensors) per video
    attention_maps/video_<id>/<kind>.safetensors, attention_maps/rolled_out/video_<id>.safetensors

Nothing here builds or needs the model. Problems are :class:`~dvis_attn_pl.utils.errors.UserError` with
one line naming the file, what is wrong and which analysis needs it. Optional inputs (the
ground-truth json, the frames) come back as ``None`` together with the reason, so the caller can
say why a part was left out.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as safetensors_load

from ..data.rle import RLEMasks, video_mask_iou, video_segmentations_to_rle
from ..utils.errors import UserError
from ..utils.io_utils import path_escape, safe_name
from ..utils.run_layout import ATTENTION_DIR, MANIFEST, RunInfo, RunLayout, video_dir_name, video_sort_key

__all__ = [
    "CAPTURE_HINT",
    "Artifact",
    "GroundTruth",
    "RunDirectory",
    "video_mask_iou",  # re-exported from data.rle (analysis/run_analyses.py imports it from here)
    "video_sort_key",
]

METADATA_KEY = "dvis_attn_pl"  # the safetensors metadata entry written by callbacks.attention_store
CAPTURE_HINT = {
    "activation": "an offline (refiner) model",
    "refiner_time": "a run with --capture temporal or more",
    "tracker_cross": "a run with --capture temporal or more",
    "decoder_cross": "a run with --capture decoder or all",
    "rollout": "a run with --capture temporal or more",
}


def _read_json(path: Path, needed_by: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: missing; {needed_by}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read ({exc}); {needed_by}") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); {needed_by}") from None


def _check_video_ids(path: Path, video_ids) -> None:
    """Refuse video ids that cannot name a file inside the run directory (they name the outputs)."""
    for video_id in video_ids:
        try:
            safe_name(video_id)
        except UserError as exc:
            raise UserError(f"{path}: {exc}") from None


def _check_artifact_paths(path: Path, manifest: Any) -> None:
    """Refuse a manifest that is not an object of videos, or lists an artifact outside its folder."""
    videos = manifest.get("videos", {}) if isinstance(manifest, dict) else None
    if not isinstance(videos, dict):
        raise UserError(f"{path}: expected an object with a 'videos' object; not an attention manifest")
    for video_id, part in videos.items():
        artifacts = part.get("artifacts", []) if isinstance(part, dict) else None
        if not isinstance(artifacts, list):
            raise UserError(f"{path}: video {video_id}: expected an object with an 'artifacts' list")
        for art in artifacts:
            rel = art.get("path") if isinstance(art, dict) else None
            problem = "is not a string" if not isinstance(rel, str) or not rel else path_escape(rel)
            if problem:
                raise UserError(f"{path}: video {video_id}: artifact path {rel!r} {problem}; refused")


@dataclass
class Artifact:
    """One attention file: its tensors as NumPy arrays (floating ones as float32) and its meta."""

    path: Path
    tensors: dict[str, np.ndarray]
    meta: dict

    def instance_position(self, instance_row: int) -> int | None:
        """Position on the instance axis of the model's instance row ``instance_row`` (None if absent)."""
        rows = self.tensors.get("instance_row")
        if rows is None:
            return None
        hits = np.flatnonzero(rows == int(instance_row))
        return int(hits[0]) if hits.size else None


@dataclass
class GroundTruth:
    """The run's ground-truth json (videos, categories, annotations) and the dataset's design notes."""

    path: Path
    raw: dict
    categories: dict[int, dict]  # id -> {"name", "cue" (or None), ...}
    videos: dict[Any, dict]  # video id -> the json's video entry
    annotations: dict[Any, list[dict]]  # video id -> its annotations, by id
    metadata: dict | None = None  # the synthetic set's metadata.json (None for other data)
    _masks: dict = field(default_factory=dict, repr=False)

    @property
    def has_annotations(self) -> bool:
        return self.raw.get("annotations") is not None

    @property
    def declares_cues(self) -> bool:
        return any(c.get("cue") for c in self.categories.values())

    def masks(self, video_id: Any) -> tuple[list[dict], list[RLEMasks]]:
        """The video's annotations and their (lazily decoded) masks (cached for the last video)."""
        if video_id not in self._masks:
            self._masks.clear()
            video = self.videos[video_id]
            h, w = int(video["height"]), int(video["width"])
            anns = self.annotations.get(video_id, [])
            self._masks[video_id] = (anns, [RLEMasks(video_segmentations_to_rle(a["segmentations"], h, w), h, w) for a in anns])
        return self._masks[video_id]


class RunDirectory:
    """Read-only view of one run directory (see the module docstring).

    ``root`` must exist and hold ``inference/results_temporal.json``; every other input is checked
    when an analysis asks for it.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise UserError(f"{self.root}: no such run directory")
        self.layout = RunLayout(self.root)
        self.inference_dir = self.layout.inference
        self.attention_dir = self.layout.attention
        self.tensorboard_dir = self.layout.tensorboard
        self.temporal_path = self.layout.results_temporal
        if not self.temporal_path.is_file():
            raise UserError(
                f"{self.temporal_path}: missing; analyze needs a run directory written by test or predict"
            )

    # ------------------------------------------------------------------ inference files
    @cached_property
    def temporal(self) -> list[dict]:
        """``results_temporal.json``: one record per prediction, in the writer's (video, score) order."""
        data = _read_json(self.temporal_path, "every analysis needs it")
        if not isinstance(data, list) or any(not isinstance(r, dict) or "video_id" not in r for r in data):
            raise UserError(f"{self.temporal_path}: expected a list of prediction records with a video_id")
        _check_video_ids(self.temporal_path, {r["video_id"] for r in data if isinstance(r["video_id"], str)})
        return data

    @cached_property
    def predictions(self) -> dict[Any, list[dict]]:
        """Per video its prediction records, each with ``index`` (position among the video's predictions)."""
        table: dict[Any, list[dict]] = {}
        for rec in self.temporal:
            rows = table.setdefault(rec["video_id"], [])
            rows.append({**rec, "index": len(rows)})
        return table

    @cached_property
    def dimensions(self) -> dict[str, dict] | None:
        """``image_dimensions.json`` keyed by video id string, or None when absent."""
        path = self.layout.image_dimensions
        if not path.is_file():
            return None
        dims = _read_json(path, "")
        if not isinstance(dims, dict):
            raise UserError(f"{path}: expected an object keyed by video id")
        _check_video_ids(path, dims)
        return dims

    @cached_property
    def video_ids(self) -> list[Any]:
        """Every video of the run (also those without predictions), in video-id order."""
        ids = {vid: None for vid in self.predictions}
        if self.dimensions:
            by_text = {str(v): v for v in ids}
            for key in self.dimensions:
                ids.setdefault(by_text.get(key, int(key) if key.lstrip("-").isdigit() else key), None)
        return sorted(ids, key=video_sort_key)

    def num_frames(self, video_id: Any) -> int:
        """Frame count of a video: image_dimensions.json, else its predictions' masks."""
        dims = (self.dimensions or {}).get(str(video_id))
        if dims and "num_frames" in dims:
            return int(dims["num_frames"])
        preds = self.predictions.get(video_id) or []
        if preds and preds[0].get("segmentations") is not None:
            return len(preds[0]["segmentations"])
        raise UserError(
            f"{self.layout.image_dimensions}: missing or lacks video {video_id}; "
            "the frame count of a video without predictions is unknown"
        )

    def video_dimensions(self, video_id: Any) -> dict | None:
        return (self.dimensions or {}).get(str(video_id))

    @cached_property
    def metrics(self) -> dict | None:
        path = self.layout.metrics
        return _read_json(path, "") if path.is_file() else None

    @cached_property
    def run_info(self) -> RunInfo | None:
        """``run.json`` (None when absent); older run directories' files are read too."""
        path = self.layout.run_file
        if not path.is_file():
            return None
        doc = _read_json(path, "")
        if not isinstance(doc, dict):
            raise UserError(f"{path}: expected an object; not a run.json")
        return RunInfo.from_json(doc)

    def require_run_info(self, analysis: str) -> RunInfo:
        if self.run_info is None:
            raise UserError(
                f"{self.layout.run_file}: missing; the {analysis} analysis needs it (it says whether "
                "the weights were random and where the ground truth is)"
            )
        return self.run_info

    @cached_property
    def config(self) -> dict | None:
        """``config.yaml`` as a plain mapping (None when absent)."""
        import yaml

        path = self.layout.config_file
        if not path.is_file():
            return None
        try:
            return yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None

    # ------------------------------------------------------------------ attention files
    @cached_property
    def manifest(self) -> dict | None:
        """``attention_maps/manifest.json`` (None when absent); every artifact path must stay inside."""
        path = self.attention_dir / MANIFEST
        if not path.is_file():
            return None
        manifest = _read_json(path, "")
        _check_artifact_paths(path, manifest)
        return manifest

    def captured_kinds(self) -> set[str]:
        """Attention kinds stored for at least one video (``rollout`` for the rolled-out files)."""
        kinds: set[str] = set()
        for part in (self.manifest or {}).get("videos", {}).values():
            for art in part.get("artifacts", []):
                kinds.add(str(art.get("kind", "")))
        return kinds

    def missing_capture(self, kind: str, analysis: str) -> str | None:
        """Why ``analysis`` cannot read attention ``kind`` (one line), or None when it can."""
        hint = CAPTURE_HINT.get(kind, "a run that captured it")
        path = self.attention_dir / MANIFEST
        if self.manifest is None:
            return f"{path}: missing; the {analysis} analysis needs {hint}"
        if kind not in self.captured_kinds():
            return f"{path}: no {kind} attention captured; the {analysis} analysis needs {hint}"
        return None

    def video_part(self, video_id: Any) -> dict | None:
        return (self.manifest or {}).get("videos", {}).get(str(video_id))

    def instance_rows(self, video_id: Any) -> dict[int, int]:
        """Prediction index -> the model's instance row, from the manifest (checked against the results)."""
        part = self.video_part(video_id)
        if part is None:
            return {}
        preds = self.predictions.get(video_id, [])
        rows = {}
        for p in part.get("predictions", []):
            i = int(p["index"])
            if i >= len(preds) or abs(float(preds[i]["score"]) - float(p["score"])) > 1e-6:
                raise UserError(
                    f"{self.attention_dir / MANIFEST}: video {video_id} prediction {i} does not match "
                    f"{self.temporal_path.name}; the run directory mixes files of different runs"
                )
            rows[i] = int(p["instance_row"])
        return rows

    def artifact_path(self, video_id: Any, kind: str) -> Path:
        if kind == "rollout":
            return self.layout.rollout / f"{video_dir_name(video_id)}.safetensors"
        return self.layout.video_attention_dir(video_id) / f"{kind}.safetensors"

    def load_artifact(self, video_id: Any, kind: str, analysis: str) -> Artifact | None:
        """The video's ``kind`` file (``rollout`` for the rolled-out one); None when not captured for it.

        A file listed in the manifest must exist and match its checksum.
        """
        part = self.video_part(video_id)
        if part is None:
            return None
        path = self.artifact_path(video_id, kind)
        rel = path.relative_to(self.attention_dir).as_posix()
        entry = next((a for a in part.get("artifacts", []) if a.get("path") == rel), None)
        if entry is None:
            return None
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise UserError(
                f"{path}: missing although listed in {ATTENTION_DIR}/{MANIFEST} (incomplete copy of the run "
                f"directory?); {analysis} needs it"
            ) from None
        if entry.get("sha256") and hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise UserError(f"{path}: checksum differs from {ATTENTION_DIR}/{MANIFEST} (file changed or truncated)")
        try:
            tensors = safetensors_load(data)
            header_len = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + header_len])
            meta = json.loads(header.get("__metadata__", {}).get(METADATA_KEY, "{}")).get("meta", {})
        except Exception as exc:  # noqa: BLE001 - any decoding problem is a broken file
            raise UserError(f"{path}: not a readable safetensors file ({type(exc).__name__}: {exc})") from None
        return Artifact(path, {k: _to_numpy(v) for k, v in tensors.items()}, meta)

    # ------------------------------------------------------------------ ground truth and frames
    @cached_property
    def ground_truth(self) -> tuple[GroundTruth | None, str]:
        """The ground-truth json named in run.json, or ``(None, reason)``."""
        from ..data.ytvis_json import YTVISFormatError, parse_ytvis

        info = self.run_info
        if info is None:
            return None, f"{self.layout.run_file}: missing, so the ground-truth json is unknown"
        data_path = info.data
        if not data_path:
            return None, f"{self.layout.run_file}: names no ground-truth json ('data')"
        path = Path(data_path)
        if not path.is_file():
            return None, f"{path}: ground-truth json named in run.json not found"
        raw = _read_json(path, "the ground-truth overlap needs it")
        try:
            parsed = parse_ytvis(raw, source=str(path))
        except YTVISFormatError as exc:
            raise UserError(str(exc)) from None
        categories = {c.id: {"name": c.name, "cue": c.extra.get("cue"), "group": c.extra.get("group")}
                      for c in parsed.categories}
        videos = {v["id"]: v for v in raw.get("videos", [])}
        annotations: dict[Any, list[dict]] = {vid: [] for vid in videos}
        for ann in raw.get("annotations") or []:
            annotations.setdefault(ann["video_id"], []).append(ann)
        for anns in annotations.values():
            anns.sort(key=lambda a: a["id"])
        meta_path = path.parent / "metadata.json"
        metadata = _read_json(meta_path, "") if meta_path.is_file() else None
        return GroundTruth(path, raw, categories, videos, annotations, metadata), ""

    @cached_property
    def frames_root(self) -> tuple[Path | None, str]:
        """Folder holding the frame files named in the ground-truth json, or ``(None, reason)``.

        Looked up in this order: run.json's ``frames`` (:class:`RunInfo`; for a run directory written
        before it recorded ``frames`` at the start, its saved ``--frames``); the dataset's metadata.json
        ``files.frames`` beside the json; ``JPEGImages`` beside the json.
        """
        gt, why = self.ground_truth
        if gt is None:
            return None, why
        info = self.run_info
        candidates: list[Path] = []
        if info is not None and info.frames:
            candidates.append(Path(info.frames))
        files = (gt.metadata or {}).get("files", {})
        if files.get("frames"):
            candidates.append(gt.path.parent / files["frames"])
        candidates.append(gt.path.parent / "JPEGImages")
        for c in candidates:
            if c.is_dir():
                return c, ""
        tried = ", ".join(shlex.quote(str(c)) for c in dict.fromkeys(candidates))
        return None, f"frames folder not found (tried {tried})"


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    if t.is_floating_point():
        return t.float().numpy()
    return t.numpy()
