"""Input interventions: the frames a pass shows the model, and the ground truth altered the same way.

:class:`AlteredVideos` wraps the run's dataset. Its items are those of the dataset with

* ``image``: still a lazy frame sequence (decoded window by window, as in the unaltered pass),
  read in the intervention's frame order, or rendered as silhouettes;
* ``annotations``: each object's per-frame segmentations, areas and boxes in the same order, so
  the metric and the matching read the altered video as it was shown;
* ``intervention``: the label and the frame order (``order[t]`` = the original frame shown at t).

Frame orders are seeded by (seed, video id), so every DDP rank and every rerun draws the same.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data.frames import LazyFrames
from ..data.rle import decode_rle
from ..utils.errors import UserError
from ..utils.run_layout import RunLayout
from ..utils.temporal_record import FRAME_IMPORTANCE, PRESENT_FRAMES, REFINER_ID
from .spec import Intervention

__all__ = ["AlteredVideos", "UnalteredRun", "frame_order", "SILHOUETTE_BACKGROUND", "SILHOUETTE_OBJECT"]

SILHOUETTE_BACKGROUND = (128, 128, 128)  # neutral grey
SILHOUETTE_OBJECT = (48, 48, 48)  # every object the same flat dark grey
SILHOUETTE_MIN_SCORE = 0.5  # predicted masks drawn when the set has no ground truth


def _video_seed(seed: int, video_id: Any) -> int:
    digest = hashlib.sha256(f"{seed}:{video_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class UnalteredRun:
    """What an intervention may need of the unaltered pass, read once from its run directory:
    per video the temporal records (frame importance, present frames) and predicted masks."""

    def __init__(self, run_dir: Path) -> None:
        path = RunLayout(run_dir).results_temporal
        try:
            records = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"{path}: the unaltered pass's results cannot be read ({exc})") from None
        self.path = path
        self.by_video: dict[str, list[dict]] = {}
        for r in records:
            self.by_video.setdefault(str(r["video_id"]), []).append(r)

    def top_prediction(self, video_id: Any) -> dict | None:
        preds = self.by_video.get(str(video_id)) or []
        return max(preds, key=lambda r: r.get("score", 0.0)) if preds else None

    def masks(self, video_id: Any, min_score: float = SILHOUETTE_MIN_SCORE) -> list[list[dict | None]]:
        """Segmentations (one RLE or None per frame) of each prediction scored ``>= min_score``,
        one per refiner row."""
        seen, out = set(), []
        for r in sorted(self.by_video.get(str(video_id)) or [], key=lambda r: -r.get("score", 0.0)):
            row = r.get(REFINER_ID, id(r))
            if r.get("score", 0.0) >= min_score and row not in seen:
                seen.add(row)
                out.append(r["segmentations"])
        return out


def frame_order(
    intervention: Intervention, num_frames: int, video_id: Any, unaltered: UnalteredRun | None = None
) -> list[int]:
    """``order[t]``: the original frame shown at position ``t`` under ``intervention``."""
    identity = list(range(num_frames))
    if num_frames == 0:
        return identity
    name = intervention.name
    if name == "reverse":
        return identity[::-1]
    if name == "shuffle":
        gen = torch.Generator().manual_seed(_video_seed(intervention.seed, video_id))
        return torch.randperm(num_frames, generator=gen).tolist()
    if name == "freeze":
        return [_freeze_frame(intervention, num_frames, video_id, unaltered)] * num_frames
    return identity  # silhouette and the model knockouts keep the order


def _freeze_frame(intervention: Intervention, num_frames: int, video_id: Any, unaltered: UnalteredRun | None) -> int:
    how = intervention.freeze_frame
    if how == "first":
        return 0
    if how == "random":
        gen = torch.Generator().manual_seed(_video_seed(intervention.seed, video_id))
        return int(torch.randint(num_frames, (1,), generator=gen))
    if how == "median_importance" and unaltered is not None:
        top = unaltered.top_prediction(video_id)
        weights = (top or {}).get(FRAME_IMPORTANCE)
        present = [t for t in (top or {}).get(PRESENT_FRAMES) or [] if 0 <= t < num_frames]
        if weights and present:
            ranked = sorted(present, key=lambda t: (weights[t], t))
            return int(ranked[(len(ranked) - 1) // 2])
    return num_frames // 2  # "middle", and median_importance without a prediction to read


def _reorder(values: Sequence | None, order: list[int]) -> list | None:
    return None if values is None else [values[j] for j in order]


class _SilhouetteSource:
    """A frame source that draws masks (compressed RLEs at the original size) as flat silhouettes."""

    def __init__(self, masks: list[list[dict | None]], height: int, width: int, num_frames: int, label: str) -> None:
        self.masks, self.height, self.width, self.num_frames, self.label = masks, height, width, num_frames, label

    def __len__(self) -> int:
        return self.num_frames

    def load(self, index: int) -> np.ndarray:
        canvas = np.empty((self.height, self.width, 3), dtype=np.uint8)
        canvas[:] = SILHOUETTE_BACKGROUND
        drawn = np.zeros((self.height, self.width), dtype=bool)
        for segs in self.masks:
            rle = segs[index] if index < len(segs) else None
            if rle is not None:
                drawn |= decode_rle(rle).astype(bool)
        canvas[drawn] = SILHOUETTE_OBJECT
        return canvas

    def name(self, index: int) -> str:
        return f"{self.label}[silhouette {index}]"

    def size(self, index: int) -> tuple[int, int]:
        return self.height, self.width


class AlteredVideos(Dataset):
    """The run's dataset as ``intervention`` shows it (see the module docstring)."""

    def __init__(self, dataset, intervention: Intervention, unaltered: UnalteredRun | None = None) -> None:
        if intervention.family != "input":
            raise ValueError(f"{intervention.name} is a model knockout: the frames stay as they are")
        if intervention.name == "silhouette" and not dataset.has_annotations and unaltered is None:
            raise UserError(
                "--interventions silhouette: the videos have no ground-truth masks and there is no unaltered run "
                "to take predicted masks from"
            )
        self.dataset = dataset
        self.intervention = intervention
        self.unaltered = unaltered

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def video_ids(self) -> list:
        return self.dataset.video_ids

    def __getattr__(self, name: str):  # metadata, contiguous ids, ... of the wrapped dataset
        if name in {"dataset", "intervention", "unaltered"}:
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.dataset[index]
        num_frames = int(item["length"])
        order = frame_order(self.intervention, num_frames, item["video_id"], self.unaltered)
        frames = item["image"]
        if self.intervention.name == "silhouette":
            frames = self._silhouettes(index, item)
        elif isinstance(frames, LazyFrames):
            frames = LazyFrames(frames.source, frames.transform, frames.expected_hw, [frames.indices[j] for j in order])
        else:
            frames = [frames[j] for j in order]
        altered = {**item, "image": frames, "frame_idx": list(range(num_frames))}
        altered["file_names"] = _reorder(item.get("file_names"), order)
        if item.get("annotations") is not None:
            altered["annotations"] = [
                {
                    **ann,
                    "segmentations": _reorder(ann["segmentations"], order),
                    "areas": _reorder(ann.get("areas"), order),
                    "bboxes": _reorder(ann.get("bboxes"), order),
                }
                for ann in item["annotations"]
            ]
        altered["intervention"] = {"label": self.intervention.label, "order": order}
        return altered

    def _silhouettes(self, index: int, item: dict) -> LazyFrames | list[torch.Tensor]:
        gt = item.get("annotations")
        if gt is not None:
            masks = [ann["segmentations"] for ann in gt]
        else:
            masks = self.unaltered.masks(item["video_id"])
        height, width = int(item["height"]), int(item["width"])
        source = _SilhouetteSource(masks, height, width, int(item["length"]), f"video {item['video_id']}")
        transform = getattr(self.dataset, "transform", None)
        lazy = LazyFrames(source, transform, (height, width))
        return lazy if isinstance(item["image"], LazyFrames) else lazy.materialize()
