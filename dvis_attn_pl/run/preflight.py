"""Cheap checks of a run's inputs before anything is written or the model is built (no torch).

``test`` and ``predict`` call :func:`check_inputs` first: the video json parses, the model and the
data agree on the classes, every frame file named in the json lies inside the frames folder,
exists, is not empty and has the json's size (headers only, nothing decoded), and the run
directory can be created. Each problem is one :class:`~dvis_attn_pl.utils.errors.UserError` line naming
the file; a frame that only fails when decoded still fails later, naming the frame file.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from ..data.frame_files import check_frame_size, read_frame_size, resolve_frame_path
from ..data.ytvis_json import YTVISData, load_ytvis_json
from ..utils.errors import UserError

__all__ = [
    "check_frames",
    "check_ground_truth",
    "check_inputs",
    "check_run_dir_creatable",
    "first_process_of_node",
    "load_data",
    "select_videos",
]


def select_videos(data: YTVISData, keep_ids) -> YTVISData:
    """``data`` restricted to the videos in ``keep_ids`` (and their annotations), order kept."""
    keep = set(keep_ids)
    videos = tuple(v for v in data.videos if v.id in keep)
    anns = None if data.annotations is None else tuple(a for a in data.annotations if a.video_id in keep)
    return replace(data, videos=videos, annotations=anns)


def load_data(data_json: Path, max_videos: int | None) -> YTVISData:
    """The video json, limited to its first ``max_videos`` videos (by id) when asked."""
    data = load_ytvis_json(data_json)
    if max_videos:
        data = select_videos(data, [v.id for v in data.videos[:max_videos]])
    return data


def check_ground_truth(data: YTVISData) -> None:
    """The verdict of the metric's (and ``evaluate``'s) ground-truth reader on the json already read:
    a file ``test`` accepts is one the metric can score, refused before anything runs."""
    from ..metrics.ytvis_io import YTVISInputError, load_ground_truth

    try:
        load_ground_truth(data.document, source=data.source)
    except YTVISInputError as exc:
        raise UserError(str(exc)) from None


def check_frames(data: YTVISData, frames_root: Path) -> None:
    """Every frame of every video: inside ``frames_root``, a non-empty file of the json's size."""
    for video in data.videos:
        for name in video.file_names:
            path = resolve_frame_path(frames_root, name)
            check_frame_size(str(path), read_frame_size(path), (video.height, video.width))


def _why_not_writable(folder: Path) -> str | None:
    """Why files cannot be created in the existing directory ``folder``, or None."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError as exc:
        return exc.strerror or str(exc)
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    return None


def check_run_dir_creatable(run_dir: Path) -> None:
    """``run_dir`` is a writable directory, or can be created as one (nothing is created here)."""
    path = Path(os.path.abspath(run_dir))
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{run_dir}: cannot create the run directory: {existing} is not a directory")
    problem = _why_not_writable(existing)
    if problem:
        where = "" if existing == path else f" in {existing}"
        raise UserError(f"{run_dir}: cannot write the run directory{where} ({problem})")


def first_process_of_node() -> bool:
    """True unless this is a node's second or later process (``LOCAL_RANK`` > 0): Lightning starts
    those only after the first one has checked the inputs, and they share its file system."""
    try:
        return int(os.environ.get("LOCAL_RANK", "0")) == 0
    except ValueError:
        return True


def check_inputs(
    command: str, data_json: Path, frames_root: Path, cfg, max_videos: int | None, frames: bool = True
) -> YTVISData:
    """Load and check the videos of a ``test``/``predict`` run; returns the (selected) data.

    ``frames=False`` skips the per-frame file checks (done once per node, see
    :func:`first_process_of_node`)."""
    data = load_data(data_json, max_videos)
    if not data.videos:
        raise UserError(f"{data_json}: has no videos")
    k_model = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    k_data = len(data.contiguous_to_dataset_id)
    if k_model != k_data:
        raise UserError(
            f"{data_json}: the dataset has {k_data} categories but the model has "
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES {k_model}"
        )
    if command == "test":
        if not data.has_annotations:
            raise UserError(f"{data_json}: has no annotations; use 'predict' for unlabelled videos")
        check_ground_truth(data)
    else:  # predict reads no annotation field: what it does not use cannot stop it
        data = replace(data, annotations=None)
    if frames:
        check_frames(data, frames_root)
    return data
