"""YTVIS-format json -> typed records, with one-line validation errors.

A YTVIS json holds ``videos`` (id, file_names, height, width, length), ``categories`` (id, name)
and, for labelled splits, ``annotations`` (one per object track: id, video_id, category_id,
iscrowd, one segmentation / area / bbox entry per frame). Unlabelled splits have no
``annotations`` key (or ``"annotations": null``); :attr:`YTVISData.annotations` is then ``None``.

Videos and categories are kept sorted by id, as the official loader does. Categories map to
contiguous labels by sorted dataset id (``dataset_id_to_contiguous``) and back
(``contiguous_to_dataset_id``). Annotations keep the dataset's category id; their
segmentation entries are kept as given (RLE dict, polygon list or ``None``);
:mod:`dvis_attn_pl.data.rle` turns them into compressed RLE.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..utils.errors import UserError
from ..utils.io_utils import path_escape
from .rle import invalid_compressed_rles

__all__ = [
    "YTVISFormatError",
    "VideoRecord",
    "CategoryRecord",
    "AnnotationRecord",
    "YTVISData",
    "load_ytvis_json",
    "parse_ytvis",
]


class YTVISFormatError(UserError, ValueError):
    """A YTVIS json is unusable; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class VideoRecord:
    """One entry of ``videos``; ``file_names`` are relative to the frames root."""

    id: int
    file_names: tuple[str, ...]
    height: int
    width: int
    length: int
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class CategoryRecord:
    """One entry of ``categories``; any other keys (``supercategory``, ``cue``, ...) are in ``extra``."""

    id: int
    name: str
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True)
class AnnotationRecord:
    """One object track of one video. Lists have one entry per frame (``None`` = absent there)."""

    id: int
    video_id: int
    category_id: int
    segmentations: tuple[Any, ...]
    areas: tuple[float | None, ...] | None
    bboxes: tuple[Any, ...] | None
    iscrowd: int = 0


@dataclass(frozen=True)
class YTVISData:
    """A parsed YTVIS json: videos and categories sorted by id, annotations (or ``None``)."""

    source: str
    videos: tuple[VideoRecord, ...]
    categories: tuple[CategoryRecord, ...]
    annotations: tuple[AnnotationRecord, ...] | None
    document: Any = field(default=None, compare=False, repr=False)  # the decoded json, as read once
    sha256: str | None = field(default=None, compare=False, repr=False)  # of the bytes read

    @property
    def has_annotations(self) -> bool:
        return self.annotations is not None

    @property
    def thing_classes(self) -> list[str]:
        """Category names in contiguous-label order."""
        return [c.name for c in self.categories]

    @property
    def contiguous_to_dataset_id(self) -> list[int]:
        """``[dataset id of label 0, of label 1, ...]`` (sorted dataset ids)."""
        return [c.id for c in self.categories]

    @property
    def dataset_id_to_contiguous(self) -> dict[int, int]:
        """``{dataset id: contiguous label 0..K-1}``, labels assigned by sorted dataset id."""
        return {c.id: i for i, c in enumerate(self.categories)}

    def video(self, video_id: int) -> VideoRecord:
        for v in self.videos:
            if v.id == video_id:
                return v
        raise KeyError(f"{self.source}: no video with id {video_id}")

    def annotations_by_video(self) -> dict[int, list[AnnotationRecord]]:
        """``{video id: [annotations of that video, sorted by id]}`` (every video present; empty when unlabelled)."""
        table: dict[int, list[AnnotationRecord]] = {v.id: [] for v in self.videos}
        for ann in self.annotations or ():
            table[ann.video_id].append(ann)
        for anns in table.values():
            anns.sort(key=lambda a: a.id)
        return table

    def metadata(self) -> dict[str, Any]:
        """The detectron2-style metadata the rest of the harness uses."""
        return {
            "thing_classes": self.thing_classes,
            "thing_dataset_id_to_contiguous_id": self.dataset_id_to_contiguous,
            "contiguous_to_dataset_id": self.contiguous_to_dataset_id,
        }


def read_json_document(path: str | Path) -> tuple[Any, str]:
    """``(decoded json, sha256 of its bytes)`` of ``path``, read exactly once (``--data`` may be a pipe).

    A UTF-8 byte-order mark is allowed, as ``json.loads(bytes)`` allows it."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise YTVISFormatError(f"{path}: file not found") from None
    except OSError as exc:
        raise YTVISFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise YTVISFormatError(
            f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start})"
        ) from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise YTVISFormatError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except RecursionError:
        raise YTVISFormatError(f"{path}: not valid JSON (nested too deeply)") from None
    return obj, hashlib.sha256(raw).hexdigest()


def load_ytvis_json(path: str | Path) -> YTVISData:
    """Read (once) and validate a YTVIS-format json file; the result keeps the decoded document."""
    obj, digest = read_json_document(path)
    data = parse_ytvis(obj, source=str(path))
    return YTVISData(data.source, data.videos, data.categories, data.annotations, obj, digest)


def parse_ytvis(obj: Any, source: str = "<memory>") -> YTVISData:
    """Validate an already-decoded YTVIS json object; ``source`` names it in error messages."""
    return _Parser(source).parse(obj)


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1  # ids and sizes are stored as 64-bit integers


_VIDEO_KNOWN = {"id", "file_names", "height", "width", "length"}
_CATEGORY_KNOWN = {"id", "name"}


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> YTVISFormatError:
        return YTVISFormatError(" ".join(f"{self.source}: {where}: {problem}".split()))

    # ----------------------------------------------------------------- helpers
    def require(self, entry: Any, key: str, where: str) -> Any:
        if not isinstance(entry, Mapping):
            raise self.fail(where, f"expected an object, got {type(entry).__name__}")
        if key not in entry:
            raise self.fail(where, f"missing field '{key}'")
        return entry[key]

    def as_int(self, value: Any, where: str, key: str, minimum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int):  # 1.0 too: the evaluator takes ints only
            raise self.fail(where, f"field '{key}' must be an integer, got {value!r}")
        if not INT64_MIN <= value <= INT64_MAX:
            raise self.fail(where, f"field '{key}' is {value}, outside the 64-bit integer range")
        if minimum is not None and value < minimum:
            raise self.fail(where, f"field '{key}' must be >= {minimum}, got {value}")
        return value

    def as_list(self, value: Any, where: str, key: str) -> list:
        if not isinstance(value, (list, tuple)):
            raise self.fail(where, f"field '{key}' must be a list, got {type(value).__name__}")
        return list(value)

    # ------------------------------------------------------------------ parts
    def parse(self, obj: Any) -> YTVISData:
        if not isinstance(obj, Mapping):
            raise self.fail("top level", f"expected a JSON object, got {type(obj).__name__}")
        videos = self.parse_videos(
            self.as_list(self.require(obj, "videos", "top level"), "top level", "videos")
        )
        categories = self.parse_categories(
            self.as_list(self.require(obj, "categories", "top level"), "top level", "categories")
        )
        raw_anns = obj.get("annotations")
        annotations = None
        if raw_anns is not None:
            annotations = self.parse_annotations(
                self.as_list(raw_anns, "top level", "annotations"),
                {v.id: v for v in videos},
                {c.id for c in categories},
            )
        return YTVISData(self.source, videos, categories, annotations)

    def parse_videos(self, entries: list) -> tuple[VideoRecord, ...]:
        seen: dict[int, int] = {}
        out = []
        for i, entry in enumerate(entries):
            where = f"videos[{i}]"
            vid = self.as_int(self.require(entry, "id", where), where, "id")
            where = f"videos[{i}] (id {vid})"
            if vid in seen:
                raise self.fail(where, f"duplicate video id {vid} (also videos[{seen[vid]}])")
            seen[vid] = i
            names = self.as_list(self.require(entry, "file_names", where), where, "file_names")
            for j, name in enumerate(names):
                if not isinstance(name, str) or not name:
                    raise self.fail(where, f"file_names[{j}] must be a non-empty string, got {name!r}")
                escape = path_escape(name)
                if escape:
                    raise self.fail(
                        where, f"file_names[{j}] {name!r} {escape}; frame names are relative to the frames folder"
                    )
            height = self.as_int(self.require(entry, "height", where), where, "height", minimum=1)
            width = self.as_int(self.require(entry, "width", where), where, "width", minimum=1)
            length = len(names)
            if "length" in entry and entry["length"] is not None:
                given = self.as_int(entry["length"], where, "length", minimum=0)
                if given != length:
                    raise self.fail(where, f"file_names has {length} entries but length is {given}")
            extra = {k: v for k, v in entry.items() if k not in _VIDEO_KNOWN}
            out.append(VideoRecord(vid, tuple(names), height, width, length, extra))
        out.sort(key=lambda v: v.id)
        return tuple(out)

    def parse_categories(self, entries: list) -> tuple[CategoryRecord, ...]:
        seen: dict[int, int] = {}
        out = []
        for i, entry in enumerate(entries):
            where = f"categories[{i}]"
            cid = self.as_int(self.require(entry, "id", where), where, "id")
            where = f"categories[{i}] (id {cid})"
            if cid in seen:
                raise self.fail(where, f"duplicate category id {cid} (also categories[{seen[cid]}])")
            seen[cid] = i
            name = self.require(entry, "name", where)
            if not isinstance(name, str):
                raise self.fail(where, f"field 'name' must be a string, got {name!r}")
            extra = {k: v for k, v in entry.items() if k not in _CATEGORY_KNOWN}
            out.append(CategoryRecord(cid, name, extra))
        out.sort(key=lambda c: c.id)
        return tuple(out)

    def per_frame(self, entry: Mapping, key: str, where: str, length: int, required: bool) -> tuple | None:
        if key not in entry or entry[key] is None:
            if required:
                raise self.fail(where, f"missing field '{key}'")
            return None
        values = self.as_list(entry[key], where, key)
        if len(values) != length:
            raise self.fail(where, f"'{key}' has {len(values)} entries but the video has {length} frames")
        return tuple(values)

    def parse_annotations(
        self, entries: list, videos: dict[int, VideoRecord], category_ids: set[int]
    ) -> tuple[AnnotationRecord, ...]:
        seen: dict[int, int] = {}
        out = []
        rles: list[tuple[str | bytes, int, str, int]] = []  # compressed RLEs: counts, pixels, where, frame
        for i, entry in enumerate(entries):
            where = f"annotations[{i}]"
            aid = self.as_int(self.require(entry, "id", where), where, "id")
            where = f"annotations[{i}] (id {aid})"
            if aid in seen:
                raise self.fail(where, f"duplicate annotation id {aid} (also annotations[{seen[aid]}])")
            seen[aid] = i
            vid = self.as_int(self.require(entry, "video_id", where), where, "video_id")
            if vid not in videos:
                raise self.fail(where, f"video_id {vid} is not a video of this file")
            cid = self.as_int(self.require(entry, "category_id", where), where, "category_id")
            if cid not in category_ids:
                raise self.fail(where, f"category_id {cid} is not in categories")
            length = videos[vid].length
            segms = self.per_frame(entry, "segmentations", where, length, required=True)
            for t, seg in enumerate(segms):
                if seg is not None and not isinstance(seg, (Mapping, list, tuple)):
                    raise self.fail(
                        where, f"segmentations[{t}] must be an RLE object, a polygon list or null"
                    )
                if isinstance(seg, Mapping) and seg:  # {} means absent, like null
                    if "counts" not in seg or "size" not in seg:
                        raise self.fail(
                            where, f"segmentations[{t}] is an RLE object without 'size' and 'counts'"
                        )
                    size = [videos[vid].height, videos[vid].width]
                    if list(seg["size"]) != size:
                        raise self.fail(
                            where,
                            f"segmentations[{t}] has size {list(seg['size'])} but the video is {size} (h, w)",
                        )
                    if isinstance(seg["counts"], (str, bytes)):
                        rles.append((seg["counts"], size[0] * size[1], where, t))
            areas = self.per_frame(entry, "areas", where, length, required=False)
            bboxes = self.per_frame(entry, "bboxes", where, length, required=False)
            iscrowd = self.as_int(entry.get("iscrowd", 0), where, "iscrowd", minimum=0)
            out.append(AnnotationRecord(aid, vid, cid, segms, areas, bboxes, iscrowd))
        self.check_rles(rles)
        out.sort(key=lambda a: a.id)
        return tuple(out)

    def check_rles(self, rles: list[tuple[str | bytes, int, str, int]]) -> None:
        """Refuse the first compressed RLE whose counts do not describe a mask of the video's size."""
        bad = invalid_compressed_rles([r[0] for r in rles], [r[1] for r in rles])
        if len(bad):
            _, pixels, where, t = rles[int(bad[0])]
            raise self.fail(
                where, f"segmentations[{t}] is not a valid compressed RLE of a {pixels}-pixel mask (corrupt 'counts')"
            )
