"""Frame files without decoding (and without torch): path safety, stat checks, header sizes.

``frames`` decodes; this module only answers "is this frame file usable?" cheaply, so a run can
check every frame of a video set before it writes anything. Errors are :class:`FrameError`
(a ``ValueError`` and a :class:`~dvis_attn_pl.utils.errors.UserError`) with one line naming the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..utils.errors import UserError
from ..utils.io_utils import path_escape

__all__ = [
    "FrameError",
    "check_frame_file",
    "check_frame_size",
    "read_frame_size",
    "resolve_frame_path",
]

_EXIF_ORIENTATION = 0x0112
_SWAPS_AXES = {5, 6, 7, 8}


class FrameError(UserError, ValueError):
    """A frame file is missing, empty, corrupt, of the wrong size, or outside the frames root."""


def resolve_frame_path(root: str | Path, name: str) -> Path:
    """``root / name``, refusing names that are absolute or lead out of ``root`` (checked lexically).

    Symbolic links inside ``root`` are followed as the user set them up.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise FrameError(f"{root}: invalid frame file name {name!r}")
    problem = path_escape(name)
    if problem == "is an absolute path":
        raise FrameError(f"{name}: absolute frame file names are refused (they must be relative to {root})")
    if problem:
        raise FrameError(f"{name}: frame file name leads outside the frames root {root}")
    return Path(root) / os.path.normpath(name.replace("\\", "/"))


def check_frame_file(path: Path) -> None:
    """``path`` exists, is a regular file and is not empty (one ``stat``, nothing read)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise FrameError(f"{path}: frame file not found") from None
    except OSError as exc:
        raise FrameError(f"{path}: cannot access frame file ({exc.strerror or exc})") from None
    if not path.is_file():
        raise FrameError(f"{path}: frame path is not a file")
    if size == 0:
        raise FrameError(f"{path}: frame file is empty (0 bytes)")


def read_frame_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` after EXIF orientation, from the file header only (no pixel decode)."""
    path = Path(path)
    check_frame_file(path)
    try:
        with Image.open(path) as img:
            width, height = img.size
            orientation = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Image.DecompressionBombError as exc:
        raise FrameError(f"{path}: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FrameError(f"{path}: cannot read frame header ({type(exc).__name__}: {exc})") from None
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return height, width


def check_frame_size(name: str, hw: tuple[int, int], expected_hw: tuple[int, int]) -> None:
    """Refuse frame ``name`` of size ``hw`` when the video (the json) says ``expected_hw``."""
    if tuple(hw) != tuple(expected_hw):
        raise FrameError(
            f"{name}: frame is {hw[1]}x{hw[0]} (WxH) but the video is {expected_hw[1]}x{expected_hw[0]}; "
            "all frames of a video must have the json's size"
        )
