"""Reading and checking YouTube-VIS ground truth and results for the metric.

Inputs are paths or already-loaded json (a dict for the ground truth, a list for the results).
Everything that the official evaluator would crash on, silently mis-score, or that makes two
files disagree is rejected with :class:`YTVISInputError` (a ``ValueError``) whose one-line message
names the file (``<memory>`` for loaded json), the entry and the problem.

After parsing, every present frame is a compressed COCO RLE dict (``counts`` a str or bytes) and
every absent frame is ``None`` (the official presence test is truthiness: ``null``, ``[]`` and
``{}`` are absent). Input objects are never modified.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import NamedTuple

import numpy as np
from pycocotools import mask as mask_utils

from ..data.rle import check_compressed_rles, encode_run_lengths

try:  # about twice as fast on YTVIS files (mostly RLE strings); the standard parser is the fallback
    import orjson
except ImportError:  # pragma: no cover - orjson is a declared dependency
    orjson = None

__all__ = [
    "YTVISInputError",
    "VideoGT",
    "VideoDets",
    "GroundTruth",
    "read_json",
    "load_ground_truth",
    "load_results",
    "parse_categories",
    "parse_video_ground_truth",
    "parse_video_predictions",
    "gc_paused",
]

MEMORY = "<memory>"


class YTVISInputError(ValueError):
    """A ground-truth or results input the metric cannot score (message: one line)."""


@dataclass
class VideoGT:
    """One video and its ground-truth tracks (columns in GT-file order)."""

    id: int
    height: int
    width: int
    length: int | None
    ids: list[int] = field(default_factory=list)
    categories: list[int] = field(default_factory=list)
    crowd: list[bool] = field(default_factory=list)
    avg_areas: list[float] = field(default_factory=list)
    segmentations: list[list] = field(default_factory=list)  # per track, per frame: RLE dict or None
    present_areas: np.ndarray | None = None  # pixel counts of the present frames (by track, then frame)


@dataclass
class VideoDets:
    """One video's predictions (columns in results-file order)."""

    categories: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    order: list[int] = field(default_factory=list)  # position in the results list (ties)
    segmentations: list[list] = field(default_factory=list)
    present_areas: np.ndarray | None = None  # as VideoGT.present_areas


@dataclass
class GroundTruth:
    source: str
    videos: dict[int, VideoGT]  # by id, ascending
    categories: dict[int, str]  # id -> name, ascending ids

    @property
    def category_ids(self) -> list[int]:
        return list(self.categories)


@contextmanager
def gc_paused():
    """No garbage collection inside: parsing and checking allocate many small objects and no cycles,
    and a full collection over a parsed file costs more than the parse."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def read_json(obj, what: str, source: str = MEMORY):
    """``(data, source)``: parse ``obj`` when it is a path, else return it with ``source`` (default
    ``<memory>``; e.g. the file an already-decoded document was read from)."""
    if isinstance(obj, (str, Path)):
        path = Path(obj)
        try:
            text = path.read_bytes()
        except FileNotFoundError:
            raise YTVISInputError(f"{path}: no such {what} file") from None
        except OSError as exc:
            raise YTVISInputError(f"{path}: cannot read the {what} file ({exc.strerror or exc})") from None
        try:
            with gc_paused():  # parsing allocates many small objects: collections only cost time
                return _loads(text), str(path)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise YTVISInputError(f"{path}: not valid JSON ({exc})") from None
    return obj, source


def _loads(text: bytes):
    """``json.loads``, through orjson when it is there; what orjson refuses but the standard parser
    accepts (``NaN``) is parsed by the standard parser, as officially. orjson reads an integer past
    64 bits as a float: refused where an integer is expected (:func:`_int_field` names the range),
    a number like any other where a float is accepted (scores, areas)."""
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass
    return json.loads(text)


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _int_field(obj: Mapping, key: str, where: str, *, positive: bool = False) -> int:
    if key not in obj:
        raise YTVISInputError(f"{where}: missing '{key}'")
    value = obj[key]
    if isinstance(value, float) and value.is_integer() and not _INT64_MIN <= value <= _INT64_MAX:
        # orjson reads an integer past 64 bits as a float (the standard parser: as an int)
        raise YTVISInputError(f"{where}: '{key}' is about {value:.3g}, outside the 64-bit integer range")
    if not _is_int(value) or (positive and value <= 0):
        kind = "a positive integer" if positive else "an integer"
        raise YTVISInputError(f"{where}: '{key}' must be {kind}, got {value!r}")
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise YTVISInputError(f"{where}: '{key}' is {value}, outside the 64-bit integer range")
    return int(value)


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def _check_rles(tracks: Sequence[tuple[VideoGT | VideoDets, int, Callable[[int, int], str]]]) -> None:
    """Check the compressed RLEs of every ``(tracks, h*w, where)`` and set ``tracks.present_areas``.

    The first frame whose counts are not a mask of h*w pixels is refused (pycocotools decodes such
    strings into a meaningless mask without complaint); ``where(track, frame)`` names it. All
    strings are decoded in one pass (:func:`~dvis_attn_pl.data.rle.check_compressed_rles`), which
    also gives the pixel counts the overlaps need.
    """
    counts: list = []
    sizes: list[int] = []
    for owner, _, _ in tracks:
        before = len(counts)
        counts += [seg["counts"] for segs in owner.segmentations for seg in segs if seg is not None]
        sizes.append(len(counts) - before)
    pixels = np.repeat(np.array([hw for _, hw, _ in tracks], dtype=np.int64), sizes)
    invalid, areas = check_compressed_rles(counts, pixels)
    if invalid.any():
        first = int(np.argmax(invalid))
        group = int(np.searchsorted(np.cumsum(sizes), first, side="right"))
        owner, hw, where = tracks[group]
        present = [
            (k, t)
            for k, segs in enumerate(owner.segmentations)
            for t, seg in enumerate(segs)
            if seg is not None
        ]
        k, t = present[first - sum(sizes[:group])]
        raise YTVISInputError(
            f"{where(k, t)}: not a valid compressed RLE of a {hw}-pixel mask (corrupt 'counts')"
        )
    for (owner, _, _), part in zip(tracks, np.split(areas, np.cumsum(sizes)[:-1])):
        owner.present_areas = part


# ------------------------------------------------------------------ frames
def _bad_frame(seg, h: int, w: int, where: str, results: bool) -> YTVISInputError:
    """The error for a present frame entry that is not an acceptable RLE/polygon."""
    if isinstance(seg, Mapping):
        if "size" not in seg or "counts" not in seg:
            return YTVISInputError(f"{where}: an RLE needs 'size' and 'counts'")
        size = seg["size"]
        if not isinstance(size, Sequence) or len(size) != 2 or list(size) != [h, w]:
            return YTVISInputError(f"{where}: mask size {size!r} differs from the video's [{h}, {w}]")
        counts = seg["counts"]
        if results and isinstance(counts, list):
            return YTVISInputError(
                f"{where}: uncompressed RLE (counts as a list) is not accepted in results, as by the official "
                "loader; encode it with pycocotools.mask.encode"
            )
        return YTVISInputError(f"{where}: RLE 'counts' must be a string, got {type(counts).__name__}")
    if results and isinstance(seg, list):
        return YTVISInputError(f"{where}: polygons are not accepted in results (give compressed RLE)")
    return YTVISInputError(
        f"{where}: a segmentation must be an RLE dict, a polygon list or null, got {type(seg).__name__}"
    )


def _plain_rles(segs: list, hw: list[int]) -> bool:
    """Whether every frame is None or a dict with ``size == hw`` and str ``counts`` (C-level passes)."""
    present = [s for s in segs if s is not None]
    if not set(map(type, present)) <= {dict}:
        return False
    try:
        sizes, counts = list(map(itemgetter("size"), present)), list(map(itemgetter("counts"), present))
    except KeyError:
        return False
    return all(map(hw.__eq__, sizes)) and set(map(type, counts)) <= {str}


def _result_tracks(dets: VideoDets, h: int, w: int, where: Callable[[int], str]) -> None:
    """Check the frames of every result of a video (``where(k)`` names result ``k``) and bring
    them to :func:`_result_frames`' form: one C-level pass when all are plain RLE dicts."""
    if not _plain_rles(list(chain.from_iterable(dets.segmentations)), [h, w]):
        dets.segmentations = [_result_frames(segs, h, w, where(k)) for k, segs in enumerate(dets.segmentations)]


def _result_frames(segs: list, h: int, w: int, where: str) -> list:
    """A result's frames: compressed RLE dicts kept as they are, absent frames as ``None``."""
    hw = [h, w]
    if _plain_rles(segs, hw):  # the usual case: nothing to convert, the list is used as it is (never modified)
        return segs
    odd = [
        t
        for t, s in enumerate(segs)
        if s is not None and (type(s) is not dict or s.get("size") != hw or type(s.get("counts")) is not str)
    ]
    out = list(segs)
    for t in odd:
        s = segs[t]
        if not s:
            out[t] = None
        elif (
            isinstance(s, Mapping)
            and list(s.get("size") or ()) == hw
            and isinstance(s.get("counts"), (str, bytes))
        ):
            out[t] = {"size": hw, "counts": s["counts"]}
        else:
            raise _bad_frame(s, h, w, f"{where} frame {t}", results=True)
    return out


def _polygon_rle(seg: list, h: int, w: int, where: str) -> dict:
    if not all(
        isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 and all(map(_is_number, p)) for p in seg
    ):
        raise YTVISInputError(
            f"{where}: a polygon must be a list of [x1, y1, x2, y2, ...] with at least 3 points"
        )
    return mask_utils.merge(mask_utils.frPyObjects(seg, h, w))


class _Uncompressed(NamedTuple):
    """An uncompressed RLE of a GT track: ``frames[t]`` (a dict with list ``counts``) of an h x w video."""

    frames: list
    t: int
    h: int
    w: int
    where: str

    @property
    def counts(self) -> list:
        return self.frames[self.t]["counts"]


def _gt_frames(segs: list, h: int, w: int, where: str, uncompressed: list[_Uncompressed]) -> list:
    """A GT track's frames as RLE dicts: polygons converted to compressed RLE; each uncompressed
    RLE is added to ``uncompressed`` for :func:`_compress_frames` (one call for a whole file)."""
    hw = [h, w]
    out = [s if s else None for s in segs]
    for t, s in enumerate(out):
        if s is None:
            continue
        if isinstance(s, Mapping):
            if list(s.get("size") or ()) != hw or "counts" not in s:
                raise _bad_frame(s, h, w, f"{where} frame {t}", results=False)
            counts = s["counts"]
            if type(counts) in (str, bytes):
                continue
            if isinstance(counts, list):
                uncompressed.append(_Uncompressed(out, t, h, w, f"{where} frame {t}"))
                continue
            raise _bad_frame(s, h, w, f"{where} frame {t}", results=False)
        if isinstance(s, list):
            out[t] = _polygon_rle(s, h, w, f"{where} frame {t}")
            continue
        raise _bad_frame(s, h, w, f"{where} frame {t}", results=False)
    return out


def _run_lengths(lists: list[list], pixels: int) -> np.ndarray | None:
    """The runs of ``lists`` laid end to end, when every list holds non-negative integers (not
    booleans) that add up to ``pixels``; else None."""
    flat = list(chain.from_iterable(lists))
    if not set(map(type, flat)) <= {int}:  # what a json parser gives; anything else: one by one
        if not all(_is_int(c) for c in flat):
            return None
        flat = [int(c) for c in flat]
    sizes = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
    try:
        runs = np.array(flat, dtype=np.int64)
    except OverflowError:
        return None
    if not sizes.all() or (runs < 0).any() or (runs > pixels).any():
        return None
    if not (np.add.reduceat(runs, np.cumsum(sizes) - sizes) == pixels).all():
        return None
    return runs


def _compress_frames(uncompressed: list[_Uncompressed]) -> None:
    """Check the uncompressed RLEs (see :func:`_gt_frames`) and replace each by its compressed RLE
    (all masks of one size encoded together); the first bad one in file order is refused."""
    by_size: dict[tuple[int, int], list[_Uncompressed]] = {}
    for entry in uncompressed:
        by_size.setdefault((entry.h, entry.w), []).append(entry)
    runs = {(h, w): _run_lengths([e.counts for e in group], h * w) for (h, w), group in by_size.items()}
    if any(r is None for r in runs.values()):
        for e in uncompressed:
            if _run_lengths([e.counts], e.h * e.w) is None:
                raise YTVISInputError(
                    f"{e.where}: uncompressed RLE counts must be non-negative integers summing to "
                    f"{e.h}*{e.w}={e.h * e.w}"
                )
    for (h, w), group in by_size.items():
        strings = encode_run_lengths(runs[h, w], [len(e.counts) for e in group])
        for e, counts in zip(group, strings):
            e.frames[e.t] = {"size": [h, w], "counts": counts}


def _average_area(areas: list, where: str) -> float:
    """Mean of the truthy per-frame areas (0 when none), as the official ``np.array(l).mean()``."""
    values = [a for a in areas if a is not None]
    if all(type(a) is int for a in values) and min(values, default=0) >= 0:  # the usual case
        kept = [a for a in values if a]
        return sum(kept) / len(kept) if kept else 0.0  # exact integer sum: identical to numpy's mean
    for t, a in enumerate(areas):
        if a is not None and (not _is_number(a) or not math.isfinite(a) or a < 0):
            raise YTVISInputError(f"{where}: areas[{t}] must be a non-negative number or null, got {a!r}")
    kept = [a for a in values if a]
    return float(np.asarray(kept, dtype=np.float64).mean()) if kept else 0.0


# ------------------------------------------------------------------ ground truth
def _parse_annotation(
    ann,
    video: VideoGT,
    categories: Mapping[int, str],
    where: str,
    seen_ids: set,
    uncompressed: list[_Uncompressed],
) -> None:
    if not isinstance(ann, Mapping):
        raise YTVISInputError(f"{where}: an annotation must be an object")
    for key in ("id", "category_id", "segmentations", "areas"):
        if key not in ann:
            raise YTVISInputError(f"{where}: missing '{key}'")
    aid = _int_field(ann, "id", where)
    if aid == 0:
        raise YTVISInputError(
            f"{where}: annotation id 0 is not allowed (the official evaluator never counts a match to GT id 0); "
            "number annotations from 1"
        )
    if aid in seen_ids:
        raise YTVISInputError(f"{where}: duplicate annotation id {aid}")
    seen_ids.add(aid)
    cat = _int_field(ann, "category_id", where)
    if cat not in categories:
        raise YTVISInputError(f"{where}: category_id {cat} is not one of the file's categories")
    crowd = ann.get("iscrowd", 0)  # optional, as for the official evaluator ('iscrowd' in gt and ...)
    if not (_is_int(crowd) or isinstance(crowd, bool)) or crowd < 0:
        raise YTVISInputError(f"{where}: 'iscrowd' must be 0 or 1, got {crowd!r}")
    segs, areas = ann["segmentations"], ann["areas"]
    if not isinstance(segs, list) or not isinstance(areas, list):
        raise YTVISInputError(f"{where}: 'segmentations' and 'areas' must be lists (one entry per frame)")
    if video.length is None:
        video.length = len(segs)
    if len(segs) != video.length:
        raise YTVISInputError(
            f"{where}: {len(segs)} segmentations for video {video.id} of {video.length} frames"
        )
    if len(areas) != video.length:
        raise YTVISInputError(f"{where}: {len(areas)} areas for video {video.id} of {video.length} frames")
    video.ids.append(aid)
    video.categories.append(cat)
    video.crowd.append(bool(crowd))
    video.avg_areas.append(_average_area(areas, where))
    video.segmentations.append(_gt_frames(segs, video.height, video.width, where, uncompressed))


def _parse_video(v, where: str) -> VideoGT:
    if not isinstance(v, Mapping):
        raise YTVISInputError(f"{where}: a video must be an object")
    vid = _int_field(v, "id", where)
    h, w = _int_field(v, "height", where, positive=True), _int_field(v, "width", where, positive=True)
    length = v.get("length")
    if length is None and isinstance(v.get("file_names"), list):
        length = len(v["file_names"])
    if length is not None and (not _is_int(length) or length < 0):  # 0: an empty video, never matched
        raise YTVISInputError(f"{where}: 'length' must be a non-negative integer, got {length!r}")
    return VideoGT(vid, h, w, None if length is None else int(length))


def parse_categories(cats: list, source: str = MEMORY) -> dict[int, str]:
    """``{id: name}`` (ascending ids) from a YTVIS ``categories`` list; duplicates rejected."""
    names: dict[int, str] = {}
    for i, c in enumerate(cats):
        where = f"{source}: categories[{i}]"
        if not isinstance(c, Mapping):
            raise YTVISInputError(f"{where}: a category must be an object")
        cid = _int_field(c, "id", where)
        if cid in names:
            raise YTVISInputError(f"{where}: duplicate category id {cid}")
        names[cid] = str(c.get("name", cid))
    return dict(sorted(names.items()))


def load_ground_truth(gt, source: str = MEMORY) -> GroundTruth:
    """Parse and check a YTVIS ground-truth json (path, or a dict read from the file ``source``)."""
    data, source = read_json(gt, "ground-truth", source)
    if not isinstance(data, Mapping):
        raise YTVISInputError(
            f"{source}: the ground truth must be a JSON object with videos, categories, annotations"
        )
    for key in ("videos", "categories"):
        if not isinstance(data.get(key), list):
            raise YTVISInputError(f"{source}: missing or invalid '{key}' list")
    if data.get("annotations") is None:
        raise YTVISInputError(f"{source}: no 'annotations' (an unlabelled split cannot be scored)")
    if not isinstance(data["annotations"], list):
        raise YTVISInputError(f"{source}: 'annotations' must be a list")
    categories = parse_categories(data["categories"], source)
    videos: dict[int, VideoGT] = {}
    for i, v in enumerate(data["videos"]):
        video = _parse_video(v, f"{source}: videos[{i}]")
        if video.id in videos:
            raise YTVISInputError(f"{source}: videos[{i}]: duplicate video id {video.id}")
        videos[video.id] = video
    seen: set[int] = set()
    uncompressed: list[_Uncompressed] = []
    for i, ann in enumerate(data["annotations"]):
        where = f"{source}: annotations[{i}]"
        if not isinstance(ann, Mapping) or "video_id" not in ann:
            raise YTVISInputError(f"{where}: missing 'video_id'")
        vid = ann["video_id"]
        if not _is_int(vid) or vid not in videos:
            raise YTVISInputError(f"{where}: video_id {vid!r} is not one of the file's videos")
        _parse_annotation(ann, videos[vid], categories, where, seen, uncompressed)
    _compress_frames(uncompressed)
    _check_rles(
        [
            (
                v,
                v.height * v.width,
                lambda k, t, v=v: f"{source}: annotation id {v.ids[k]} (video {v.id}) frame {t}",
            )
            for v in videos.values()
        ]
    )
    return GroundTruth(source, dict(sorted(videos.items())), categories)


def parse_video_ground_truth(item: Mapping, categories: Mapping[int, str], source: str = MEMORY) -> VideoGT:
    """One video's ground truth from a mapping with ``video_id`` (or ``id``), ``height``, ``width``,
    optional ``length``, and ``annotations`` (YTVIS annotation dicts; ``video_id`` in them is optional).
    This is the dataset item of :mod:`dvis_attn_pl.data.dataset` or a GT ``videos`` entry plus its tracks."""
    if not isinstance(item, Mapping):
        raise YTVISInputError(f"{source}: the ground truth of a video must be a mapping")
    key = "video_id" if "video_id" in item else "id"
    video = _parse_video({**item, "id": item.get(key)}, f"{source}: video {item.get(key)!r}")
    anns = item.get("annotations")
    if anns is None:
        raise YTVISInputError(
            f"{source}: video {video.id}: no 'annotations' (an unlabelled video cannot be scored)"
        )
    seen: set[int] = set()
    uncompressed: list[_Uncompressed] = []
    for i, ann in enumerate(anns):
        where = f"{source}: video {video.id} annotations[{i}]"
        if isinstance(ann, Mapping) and ann.get("video_id", video.id) != video.id:
            raise YTVISInputError(
                f"{where}: video_id {ann['video_id']!r} differs from the video's {video.id}"
            )
        _parse_annotation(ann, video, categories, where, seen, uncompressed)
    _compress_frames(uncompressed)
    return video


# ------------------------------------------------------------------ results
def _parse_result(
    r, pos: int, video: VideoGT, categories: Mapping[int, str], dets: VideoDets, where: str
) -> None:
    cat = r["category_id"]
    if not _is_int(cat) or cat not in categories:
        raise YTVISInputError(
            f"{where}: category_id {cat!r} is not a ground-truth category (use the dataset's category ids)"
        )
    score = r["score"]
    if not _is_number(score) or not math.isfinite(score):
        raise YTVISInputError(f"{where}: 'score' must be a finite number, got {score!r}")
    segs = r["segmentations"]
    if not isinstance(segs, list):
        raise YTVISInputError(f"{where}: 'segmentations' must be a list (one entry per frame)")
    if video.length is None:
        video.length = len(segs)
    if len(segs) != video.length:
        raise YTVISInputError(
            f"{where}: {len(segs)} segmentations for video {video.id} of {video.length} frames"
        )
    dets.categories.append(int(cat))
    dets.scores.append(float(score))
    dets.order.append(pos)
    dets.segmentations.append(segs)  # checked, all results of the video at once, by _result_tracks


def _check_result(r, where: str) -> None:
    if not isinstance(r, Mapping):
        raise YTVISInputError(f"{where}: a result must be an object")
    for key in ("video_id", "category_id", "score", "segmentations"):
        if key not in r:
            raise YTVISInputError(f"{where}: missing '{key}'")


def load_results(results, gt: GroundTruth) -> dict[int, VideoDets]:
    """Parse and check a results list (path or list) against ``gt``; predictions grouped by video id."""
    data, source = read_json(results, "results")
    if not isinstance(data, list):
        raise YTVISInputError(f"{source}: results must be a JSON list of predictions")
    if not data:
        raise YTVISInputError(f"{source}: the results list is empty (the official evaluator cannot score it)")
    per_video: dict[int, VideoDets] = {}
    for pos, r in enumerate(data):
        where = f"{source}: results[{pos}]"
        _check_result(r, where)
        vid = r["video_id"]
        video = gt.videos.get(vid) if _is_int(vid) else None
        if video is None:
            raise YTVISInputError(f"{where}: video_id {vid!r} is not in the ground truth")
        dets = per_video.get(video.id)
        if dets is None:
            dets = per_video[video.id] = VideoDets()
        _parse_result(r, pos, video, gt.categories, dets, where)
    for vid, d in per_video.items():
        v = gt.videos[vid]
        _result_tracks(d, v.height, v.width, lambda k, d=d: f"{source}: results[{d.order[k]}]")
    _check_rles(
        [
            (
                d,
                gt.videos[vid].height * gt.videos[vid].width,
                lambda k, t, d=d: f"{source}: results[{d.order[k]}] frame {t}",
            )
            for vid, d in per_video.items()
        ]
    )
    return per_video


def parse_video_predictions(
    records: Sequence[Mapping], video: VideoGT, categories: Mapping[int, str], source: str = MEMORY
) -> VideoDets:
    """One video's result records (the ``results.json`` form; ``video_id`` optional but checked)."""
    dets = VideoDets()
    for pos, r in enumerate(records):
        where = f"{source}: video {video.id} predictions[{pos}]"
        if isinstance(r, Mapping) and "video_id" not in r:
            r = {**r, "video_id": video.id}
        _check_result(r, where)
        if r["video_id"] != video.id:
            raise YTVISInputError(f"{where}: video_id {r['video_id']!r} differs from the video's {video.id}")
        _parse_result(r, pos, video, categories, dets, where)
    _result_tracks(dets, video.height, video.width, lambda k: f"{source}: video {video.id} predictions[{dets.order[k]}]")
    return dets
