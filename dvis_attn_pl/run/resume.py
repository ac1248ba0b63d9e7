"""Resuming an interrupted run: a run directory remembers what it ran and which videos are done.

At its start a run writes ``run.json`` with ``"status": "running"`` and a *fingerprint* of
everything that decides its outputs (command, the config after overrides, checkpoint, data json,
frames folder, video selection, capture preset, precision, model source). Started again with the
same ``--out``:

- a directory whose fingerprint differs is refused (one line naming what differs), so outputs of
  two different runs are never mixed;
- a video counts as complete when its result part (``inference/parts/<id>.json``) exists and, when
  attention is captured, its attention manifest part (``attention_maps/video_<id>/manifest.json``)
  exists and lists files that are all present with their recorded sizes. Both parts are written
  atomically and last, so a part on disk means the video's files are whole;
- complete videos are skipped; their stored records still enter the metric, so the final
  ``results.json``, ``metrics.json`` and attention manifest equal those of an uninterrupted run.

Leftover temporary files of a killed writer are removed at the start: only names of the form this
tool gives them (``io_utils.is_own_temporary``), never any other file. A non-empty folder without
``run.json`` is not a run directory and is refused, so a run never touches files it did not write.
The number of processes may change between the two starts.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..utils.errors import UserError
from ..utils.io_utils import is_own_temporary, path_escape
from ..utils.run_layout import RUN_FILE, RunInfo, RunLayout
from .options import RunOptions

_HEAD_TAIL = 1 << 20  # bytes of a checkpoint hashed at each end


def file_identity(path: str | Path) -> dict:
    """Size and a sha256 of the first and last MiB: cheap for multi-GiB checkpoints, and it changes
    when the file is replaced (together with the size)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with path.open("rb") as f:
        digest.update(f.read(_HEAD_TAIL))
        if size > _HEAD_TAIL:
            f.seek(max(_HEAD_TAIL, size - _HEAD_TAIL))
            digest.update(f.read(_HEAD_TAIL))
    return {"path": str(path.resolve()), "bytes": size, "sha256_head_tail": digest.hexdigest()}


def file_sha256(path: str | Path) -> str:
    """sha256 of a whole file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stable_path(path: Path) -> str:
    """The absolute path of a regular file with links resolved; for a pipe (``--data <(...)``) the
    name as given, since its link target changes with every start."""
    path = Path(path)
    return str(path.resolve()) if path.is_file() else str(path.absolute())


def run_fingerprint(
    options: RunOptions, cfg, data_json: Path, frames_root: Path, data_sha256: str | None = None
) -> dict:
    """What decides a run's outputs; two starts with equal fingerprints write the same files.
    ``data_sha256``: of the data json's bytes as read once (``--data`` may be a pipe).

    The keys and the form of each value are those of every earlier version (run directories written
    by them still resume): change them only together with a refusal message for older runs."""
    from .. import __version__

    return {
        "command": options.command,
        "version": __version__,
        "config_sha256": hashlib.sha256(cfg.dump().encode("utf-8")).hexdigest(),
        "checkpoint": file_identity(options.ckpt) if options.ckpt else None,
        "data": {"path": _stable_path(data_json), "sha256": data_sha256 or file_sha256(data_json)},
        "frames": str(Path(frames_root).resolve()),
        "max_videos": options.max_videos,
        "capture": options.capture,
        "precision": str(options.hardware.precision),
        "model_source": options.model_source,
    }


def _read_run_file(run_dir: Path) -> dict | None:
    path = RunLayout(run_dir).run_file
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable ({exc}); choose another --out or remove the file") from None
    return info if isinstance(info, dict) else {}


def check_resumable(run_dir: Path, fingerprint: dict) -> bool:
    """True when ``run_dir`` holds an earlier start of this same run; raises when it holds another run."""
    info = _read_run_file(run_dir)
    parts = RunLayout(run_dir).parts
    if info is None:
        if parts.is_dir() and any(parts.glob("*.json")):
            raise UserError(
                f"{run_dir}: holds results but no {RUN_FILE}, so it cannot be resumed safely; choose another --out"
            )
        if run_dir.is_dir() and any(not _left_by_a_start(p.name) for p in run_dir.iterdir()):
            raise UserError(
                f"{run_dir}: is not empty and not a run directory (no {RUN_FILE}); a run writes into a new or "
                "empty folder, or resumes its own: choose another --out"
            )
        return False
    old = info.get("fingerprint")
    if old == fingerprint:
        return True
    if not isinstance(old, dict):
        raise UserError(f"{run_dir / RUN_FILE}: a run without a fingerprint (older version); choose another --out")
    differs = sorted(k for k in set(old) | set(fingerprint) if old.get(k) != fingerprint.get(k))
    raise UserError(
        f"{run_dir}: holds a different run ({', '.join(differs)} differ{'s' if len(differs) == 1 else ''}); "
        "to resume it, repeat its command; otherwise choose another --out"
    )


PROBE_FILE = ".write_probe"  # written and removed by runner.make_run_dir


def _left_by_a_start(name: str) -> bool:
    """What a start killed before writing ``run.json`` may leave in a new run directory."""
    return name == PROBE_FILE or is_own_temporary(name)


def start_run(run_dir: Path, info: RunInfo) -> None:
    """Write ``run.json`` with status ``running`` (``summary.finish_run`` marks it complete at the end)."""
    assert info.status == "running", info.status
    info.write(RunLayout(run_dir))


def describe_run(options: RunOptions, data_json: Path, frames_root: Path, fingerprint: dict) -> RunInfo:
    """The run's ``run.json`` (status ``running``): the same fields at its start and its end."""
    import platform

    import lightning
    import torch

    return RunInfo(
        command=options.command,
        argv=list(options.argv),
        status="running",
        data=str(Path(data_json).resolve()),
        frames=str(Path(frames_root).resolve()),
        checkpoint=options.ckpt,
        weights=options.weights,
        random_weights=options.random_weights,
        versions={"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__},
        fingerprint=fingerprint,
    )


def remove_temporary_files(run_dir: Path) -> int:
    """Delete the temporary files a killed writer of this tool left behind (names of the tool's own
    form only, see ``io_utils.is_own_temporary``); returns how many."""
    removed = 0
    for path in run_dir.rglob(".*.dvis.tmp*"):
        if is_own_temporary(path.name) and path.is_file() and not path.is_symlink():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _attention_complete(part_path: Path) -> bool:
    try:
        part = json.loads(part_path.read_text())
    except (OSError, ValueError):
        return False
    root = part_path.parent.parent
    for art in part.get("artifacts", []):
        if path_escape(str(art["path"])):  # a manifest naming files outside the run is not ours
            return False
        path = root / art["path"]
        if not path.is_file() or path.stat().st_size != int(art["bytes"]):
            return False
    return True


def completed_videos(run_dir: Path, video_ids: list, with_attention: bool) -> list:
    """The ids in ``video_ids`` whose outputs are complete in ``run_dir`` (see the module docstring)."""
    layout = RunLayout(run_dir)
    done = []
    for vid in video_ids:
        if _read_part_file(layout.part(vid)) is None:  # missing or cut: redo the video
            continue
        if with_attention and not _attention_complete(layout.video_attention_part(vid)):
            continue
        done.append(vid)
    return done


def _read_part_file(path: Path) -> dict | None:
    """A result part, or None when it is missing or unreadable (e.g. cut short by a full disk or a
    copy): such a video is not complete and runs again."""
    try:
        part = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    whole = isinstance(part, dict) and all(isinstance(part.get(k), list) for k in ("records", "temporal"))
    return part if whole and "dimensions" in part else None


def read_part(run_dir: Path, video_id) -> dict:
    """The stored result part of a complete video (see :func:`completed_videos`)."""
    path = RunLayout(run_dir).part(video_id)
    part = _read_part_file(path)
    if part is None:
        raise UserError(f"{path}: result part is missing or unreadable; start the run again to redo the video")
    return part


def is_launching_process() -> bool:
    """True in the process that starts the run (global rank 0 before or without DDP)."""
    rank = os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))
    return int(rank) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0
