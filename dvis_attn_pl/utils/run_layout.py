"""The run directory's one owner: every name in it, the video order, and ``run.json`` (:class:`RunInfo`).

A run directory (written by ``test`` / ``predict``, read by ``analyze``)::

    run.json                          RunInfo: command, argv, status, data, frames, weights, fingerprint, ...
    config.yaml                       the model config used
    inference/results.json            the official results (one record per prediction)
    inference/results_temporal.json   each record plus its temporal fields (refiner / sequence ids, ...)
    inference/results_temporal_summary.json, image_dimensions.json, metrics.json (test only)
    inference/parts/<id>.json         per video, written as it finishes (merged into the files above)
    attention_maps/manifest.json      every attention artifact; attention_maps/video_<id>/<kind>.safetensors
    attention_maps/rolled_out/video_<id>.safetensors
    tensorboard/                      event files
    interventions/<label>/            one intervention pass: its own inference/ and intervention.json

Writers (the callbacks, the run orchestration, the interventions) and readers (the analysis) take
the names from here. Nothing here imports the rest of the package but the other utilities.
"""

from __future__ import annotations

import json
import numbers
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .io_utils import atomic_write_json, safe_name

__all__ = [
    "ATTENTION_DIR",
    "FORMAT_VERSION",
    "INTERVENTIONS_DIR",
    "MANIFEST",
    "PASS_RECORD",
    "RunInfo",
    "RunLayout",
    "completed_passes",
    "pass_dir",
    "video_dir_name",
    "video_sort_key",
]

FORMAT_VERSION = 1  # of the run directory; run.json records it (absent: written before it existed)

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
INFERENCE_DIR = "inference"
PARTS_DIR = "parts"
RESULTS = "results.json"
RESULTS_TEMPORAL = "results_temporal.json"
RESULTS_TEMPORAL_SUMMARY = "results_temporal_summary.json"
IMAGE_DIMENSIONS = "image_dimensions.json"
METRICS = "metrics.json"
ATTENTION_DIR = "attention_maps"
ROLLOUT_DIR = "rolled_out"
MANIFEST = "manifest.json"  # attention_maps/manifest.json and each attention_maps/video_<id>/manifest.json
TENSORBOARD_DIR = "tensorboard"
INTERVENTIONS_DIR = "interventions"
PASS_RECORD = "intervention.json"


def video_sort_key(video_id: Any) -> tuple:
    """Integers first (numerically), then other ids as strings: the one video order of every file."""
    if isinstance(video_id, numbers.Integral) and not isinstance(video_id, bool):  # NumPy integers too
        return (0, int(video_id), "")
    return (1, 0, str(video_id))


def video_dir_name(video_id: object) -> str:
    """``video_<id>`` (the id made safe for a file name): a video's attention folder and rollout file."""
    return f"video_{safe_name(video_id)}"


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run directory (or of one intervention pass, which has the same ``inference/``)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def run_file(self) -> Path:
        return self.root / RUN_FILE

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def inference(self) -> Path:
        return self.root / INFERENCE_DIR

    @property
    def parts(self) -> Path:
        return self.inference / PARTS_DIR

    def part(self, video_id: object) -> Path:
        """The result part of one video."""
        return self.parts / f"{safe_name(video_id)}.json"

    @property
    def results(self) -> Path:
        return self.inference / RESULTS

    @property
    def results_temporal(self) -> Path:
        return self.inference / RESULTS_TEMPORAL

    @property
    def results_temporal_summary(self) -> Path:
        return self.inference / RESULTS_TEMPORAL_SUMMARY

    @property
    def image_dimensions(self) -> Path:
        return self.inference / IMAGE_DIMENSIONS

    @property
    def metrics(self) -> Path:
        return self.inference / METRICS

    @property
    def attention(self) -> Path:
        return self.root / ATTENTION_DIR

    @property
    def attention_manifest(self) -> Path:
        return self.attention / MANIFEST

    def video_attention_dir(self, video_id: object) -> Path:
        return self.attention / video_dir_name(video_id)

    def video_attention_part(self, video_id: object) -> Path:
        """The per-video attention manifest part (written last for the video)."""
        return self.video_attention_dir(video_id) / MANIFEST

    @property
    def rollout(self) -> Path:
        return self.attention / ROLLOUT_DIR

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR

    @property
    def interventions(self) -> Path:
        return self.root / INTERVENTIONS_DIR

    def intervention(self, label: str) -> RunLayout:
        """The layout of the intervention pass ``label``."""
        return RunLayout(self.interventions / label)

    @property
    def pass_record(self) -> Path:
        """``intervention.json`` (for the layout of an intervention pass)."""
        return self.root / PASS_RECORD


def pass_dir(run_dir: Path, label: str) -> Path:
    """The folder of the intervention pass ``label``."""
    return RunLayout(run_dir).intervention(label).root


def completed_passes(run_dir: Path) -> dict[str, dict]:
    """``label -> intervention.json`` of every finished pass in ``run_dir``, in label order."""
    root = RunLayout(run_dir).interventions
    found = {}
    for path in sorted(root.glob(f"*/{PASS_RECORD}")) if root.is_dir() else []:
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # an unreadable record: treated as an unfinished pass
    return found


@dataclass(frozen=True)
class RunInfo:
    """``run.json``: what a run is. Written with ``status="running"`` when a run starts (the fingerprint
    decides whether a later start may resume it) and again, ``status="complete"``, when it ends.

    ``frames`` is the frames folder the run read; ``data`` the ground-truth / video json.
    """

    command: str
    argv: list[str]
    status: str
    data: str | None = None
    frames: str | None = None
    checkpoint: str | None = None
    weights: str | None = None
    random_weights: bool | None = None
    versions: dict = field(default_factory=dict)
    fingerprint: dict | None = None
    format: int = FORMAT_VERSION

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict) -> RunInfo:
        """A ``run.json`` as read; older ones (no ``format``) stay readable: the frames folder of a run
        that never finished is taken from its saved ``--frames`` argument."""
        argv = [str(a) for a in doc.get("argv") or []]
        frames = doc.get("frames")
        if frames is None and "format" not in doc:
            frames = _legacy_frames_argument(argv)
        return cls(
            command=str(doc.get("command", "")),
            argv=argv,
            status=str(doc.get("status", "")),
            data=doc.get("data"),
            frames=frames,
            checkpoint=doc.get("checkpoint"),
            weights=doc.get("weights"),
            random_weights=doc.get("random_weights"),
            versions=dict(doc.get("versions") or {}),
            fingerprint=doc.get("fingerprint") if isinstance(doc.get("fingerprint"), dict) else None,
            format=int(doc.get("format", 0)),
        )

    def write(self, layout: RunLayout) -> None:
        atomic_write_json(layout.run_file, self.to_json(), indent=1)


def _legacy_frames_argument(argv: list[str]) -> str | None:
    """``--frames`` of a saved argv (run.json before format 1 had no ``frames`` until the run finished)."""
    for i, arg in enumerate(argv):
        if arg == "--frames" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--frames="):
            return arg.split("=", 1)[1]
    return None
