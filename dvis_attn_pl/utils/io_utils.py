"""Atomic file writing and run-directory path safety."""

from __future__ import annotations

import json
import os
import posixpath
import re
import stat
import tempfile
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import UserError


def _default_file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return (stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IWGRP | stat.S_IROTH | stat.S_IWOTH) & ~mask


_FILE_MODE = _default_file_mode()

# Temporary names the tool gives its files while writing them: ".<name>.<random>.dvis.tmp" (atomic
# writes) and ".<stem>.<pid>.<hex>.dvis.tmp.mp4" (videos). Only names of this form are ever removed.
TMP_SUFFIX = ".dvis.tmp"
_OWN_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.dvis\.tmp$|^\..+\.\d+\.[0-9a-f]{12}\.dvis\.tmp\.mp4$")


def is_own_temporary(name: str) -> bool:
    """True for a file name this tool gives a file while writing it (see ``TMP_SUFFIX``)."""
    return _OWN_TEMPORARY.match(name) is not None


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it into place.

    On failure the temporary file is removed and an OSError names ``path`` (not the temporary file).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)  # mkstemp creates 0600; give the usual umask-based permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.errno is not None and exc.filename != str(path):
            # write()/fsync() errors carry no file name and replace() names the temporary file:
            # name the file the caller asked for (same errno, so the same OSError subclass)
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def atomic_write_json(path: Path, obj, indent: int | None = None) -> None:
    """Serialise ``obj`` as JSON (keys in insertion order) and write it atomically."""
    atomic_write_bytes(Path(path), json.dumps(obj, indent=indent).encode("utf-8"))


def safe_name(value: object) -> str:
    """A file-name component for a video id; refuses anything that could leave the run directory."""
    text = str(value)
    if not text or text in (".", "..") or "/" in text or "\\" in text or "\x00" in text or text.startswith("~"):
        raise UserError(f"video id {text!r} cannot be used as a file name inside the run directory")
    return text


def path_escape(name: str) -> str | None:
    """Why the relative file name ``name`` would leave the folder it is relative to, or None.

    Judged lexically: absolute names (POSIX or Windows) and names whose ``..`` lead above the
    folder are refused; ``a/../b`` stays inside. Symbolic links are not followed.
    """
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        return "is an absolute path"
    normalised = posixpath.normpath(name.replace("\\", "/"))
    if normalised == ".." or normalised.startswith("../"):
        return "leads outside its folder"
    return None
