"""One item per video, in the official model input format (plus the video's ground truth).

An item is the dict ``YTVISDatasetMapper(is_train=False)`` produces:

=================  ==============================================================================
``image``          :class:`~dvis_attn_pl.data.frames.LazyFrames` (len / int index / slice / iter;
                   each element a (3, h, w) uint8 tensor, resized, channel order ``INPUT.FORMAT``),
                   or with ``eager=True`` a list of those tensors. A window for the model:
                   ``torch.stack(list(item["image"][s:e]))``.
``height/width``   original frame size (predictions are returned at this size)
``length``         number of frames T; ``video_len`` (= T) and ``frame_idx`` (0..T-1) as official
``video_id``       the json's video id
``file_names``     full frame paths (str), as the official loader joins them with the image root
``instances``      ``[]`` (test time)
``annotations``    only when the json has ground truth: the video's tracks sorted by id, each
                   ``{"id", "category_id" (dataset id), "iscrowd", "segmentations" (compressed RLE
                   dict with str counts, or None, per frame), "areas" (per frame, None when absent),
                   "bboxes" (per frame [x, y, w, h] or None)}``; areas/bboxes come from the json,
                   or from the masks when the json has none.
=================  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from .frames import ArrayFrames, FileFrames, FrameSource, LazyFrames, resolve_frame_path
from .rle import rle_area, rle_bbox, video_segmentations_to_rle
from .transforms import ShortestEdgeResize
from .ytvis_json import AnnotationRecord, VideoRecord, YTVISData, load_ytvis_json, parse_ytvis

__all__ = ["YTVISVideoDataset", "annotation_to_gt"]


def annotation_to_gt(ann: AnnotationRecord, video: VideoRecord) -> dict[str, Any]:
    """An annotation in the documented ground-truth form (compressed RLE, per-frame areas and boxes)."""
    rles = video_segmentations_to_rle(ann.segmentations, video.height, video.width)
    if ann.areas is not None:
        areas = [None if a is None else float(a) for a in ann.areas]
    else:
        areas = [None if r is None else float(rle_area(r)) for r in rles]
    if ann.bboxes is not None:
        bboxes = [None if b is None else [float(v) for v in b] for b in ann.bboxes]
    else:
        bboxes = [None if r is None else rle_bbox(r) for r in rles]
    return {
        "id": ann.id,
        "category_id": ann.category_id,
        "iscrowd": ann.iscrowd,
        "segmentations": rles,
        "areas": areas,
        "bboxes": bboxes,
    }


class YTVISVideoDataset(Dataset):
    """A YTVIS-format video set, one item per video (videos in ascending id order).

    Args:
        json_path: the YTVIS json (``annotations`` optional).
        frames_root: folder the json's ``file_names`` are relative to (e.g. ``valid/JPEGImages``).
        cfg: config with ``INPUT.MIN_SIZE_TEST``, ``INPUT.MAX_SIZE_TEST``, ``INPUT.FORMAT`` (None: 480, 1333, RGB).
        eager: decode every frame in ``__getitem__`` (a DataLoader worker) and return a list of tensors.
        check_frames: in ``__getitem__``, check every frame file exists and has the json's size by
            reading headers only (fails early, before the model runs).
    """

    def __init__(
        self,
        json_path: str | Path,
        frames_root: str | Path,
        cfg: Any = None,
        *,
        eager: bool = False,
        check_frames: bool = True,
    ) -> None:
        self._setup_files(load_ytvis_json(json_path), frames_root, cfg, eager, check_frames)

    @classmethod
    def from_data(
        cls,
        data: YTVISData | Mapping,
        frames_root: str | Path,
        cfg: Any = None,
        *,
        eager: bool = False,
        check_frames: bool = True,
    ) -> YTVISVideoDataset:
        """From a parsed :class:`YTVISData` or an in-memory YTVIS json dict, frames on disk."""
        if not isinstance(data, YTVISData):
            data = parse_ytvis(data, source="<memory>")
        self = cls.__new__(cls)
        self._setup_files(data, frames_root, cfg, eager, check_frames)
        return self

    @classmethod
    def from_arrays(
        cls,
        videos: Sequence[Mapping[str, Any]],
        cfg: Any = None,
        categories: Sequence[Mapping[str, Any]] | None = None,
        *,
        eager: bool = False,
    ) -> YTVISVideoDataset:
        """From frames in memory (tests, notebooks): no files involved.

        Each video is ``{"video_id": int, "frames": (T, H, W, 3) uint8 RGB array or tensor}`` plus
        optionally ``"annotations"``: YTVIS annotation dicts (``id``, ``category_id``,
        ``segmentations``, ...; ``video_id`` is filled in). ``categories`` default to the
        category ids the annotations use (or one category ``object`` with id 1).
        """
        json_videos, json_anns, frame_sources = [], [], {}
        labelled = any("annotations" in v for v in videos)
        for v in videos:
            vid = int(v["video_id"])
            src = ArrayFrames(v["frames"], label=f"<memory video {vid}>")
            height, width = src.size(0) if len(src) else (0, 0)
            json_videos.append(
                {
                    "id": vid,
                    "height": height,
                    "width": width,
                    "length": len(src),
                    "file_names": [f"{vid}/{t:05d}" for t in range(len(src))],
                }
            )
            frame_sources[vid] = src
            for ann in v.get("annotations", ()):
                json_anns.append({**ann, "video_id": vid})
        if categories is None:
            ids = sorted({int(a["category_id"]) for a in json_anns}) or [1]
            categories = [{"id": i, "name": "object" if ids == [1] else str(i)} for i in ids]
        obj: dict[str, Any] = {"videos": json_videos, "categories": list(categories)}
        if labelled:
            obj["annotations"] = json_anns
        data = parse_ytvis(obj, source="<memory>")
        self = cls.__new__(cls)
        self._setup(data, [frame_sources[v.id] for v in data.videos], cfg, eager, check_frames=False)
        self.frames_root = None
        return self

    def _setup_files(
        self, data: YTVISData, frames_root: str | Path, cfg: Any, eager: bool, check_frames: bool
    ) -> None:
        root = Path(frames_root)
        sources = [FileFrames([resolve_frame_path(root, n) for n in v.file_names]) for v in data.videos]
        self._setup(data, sources, cfg, eager, check_frames)
        self.frames_root = root

    def _setup(
        self, data: YTVISData, sources: list[FrameSource], cfg: Any, eager: bool, check_frames: bool
    ) -> None:
        self.data = data
        self.sources = sources
        self.transform = ShortestEdgeResize.from_cfg(cfg)
        self.eager = eager
        self.check_frames = check_frames
        self._gt = data.annotations_by_video() if data.has_annotations else None

    # ------------------------------------------------------------------ info
    def __len__(self) -> int:
        return len(self.data.videos)

    @property
    def video_ids(self) -> list[int]:
        return [v.id for v in self.data.videos]

    @property
    def video_lengths(self) -> list[int]:
        """Frames per item (for frame-balanced sampling)."""
        return [v.length for v in self.data.videos]

    @property
    def metadata(self) -> dict[str, Any]:
        """``thing_classes``, ``thing_dataset_id_to_contiguous_id``, ``contiguous_to_dataset_id``."""
        return self.data.metadata()

    @property
    def contiguous_to_dataset_id(self) -> list[int]:
        return self.data.contiguous_to_dataset_id

    @property
    def has_annotations(self) -> bool:
        return self.data.has_annotations

    def resized_hw(self, index: int) -> tuple[int, int]:
        """The (h, w) the model sees for item ``index`` (no decoding)."""
        v = self.data.videos[index]
        return self.transform.output_shape(v.height, v.width)

    # ------------------------------------------------------------------ items
    def frames(self, index: int) -> LazyFrames:
        """Item ``index``'s frames, lazily decoded and resized."""
        v = self.data.videos[index]
        return LazyFrames(self.sources[index], self.transform, expected_hw=(v.height, v.width))

    def ground_truth(self, index: int) -> list[dict[str, Any]] | None:
        """Item ``index``'s annotations in the documented form, or ``None`` for an unlabelled set."""
        if self._gt is None:
            return None
        v = self.data.videos[index]
        return [annotation_to_gt(a, v) for a in self._gt[v.id]]

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"video index {index} out of range for {len(self)} videos")
        v = self.data.videos[index]
        frames = self.frames(index)
        if self.check_frames:
            frames.check_headers()
        source = self.sources[index]
        item: dict[str, Any] = {
            "image": frames.materialize() if self.eager else frames,
            "height": v.height,
            "width": v.width,
            "length": v.length,
            "video_id": v.id,
            "video_len": v.length,
            "frame_idx": list(range(v.length)),
            "file_names": [source.name(t) for t in range(v.length)],
            "instances": [],
        }
        gt = self.ground_truth(index)
        if gt is not None:
            item["annotations"] = gt
        return item
