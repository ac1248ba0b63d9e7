"""AttentionStore: writes captured attention to ``attention_maps/`` from a background thread.

Layout (``root`` = ``<run>/attention_maps``)::

    video_<id>/<kind>.safetensors      one file per video and attention kind
    video_<id>/manifest.json           the video's manifest part, written after all its files
    rolled_out/video_<id>.safetensors  temporal rollout results
    manifest.json                      merged on rank 0 at the end of the loop

Producers (the capture callbacks, on the main thread) hand over host tensors with :meth:`put`;
one writer thread serialises them (safetensors, floating tensors cast to ``float_dtype``), hashes
the bytes (sha256) and writes each file atomically (temporary name + rename). The queue is
bounded, so a slow disk slows the producer instead of letting host memory grow. When all files of
a video are queued, :meth:`finish_video` queues its manifest part; since the queue is FIFO the part
appears only after every file it lists, so a part on disk means the video is complete.

Each process writes only the parts of its own videos; :func:`merge_manifest` (rank 0, after a
barrier) collects every part in video-id order, so the merged ``manifest.json`` of an N-process
run is byte-identical to a 1-process run. An exception in the writer thread is re-raised, as
:class:`AttentionStoreError`, by the next :meth:`put`/:meth:`finish_video`/:meth:`flush` or by
:meth:`close`.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as safetensors_bytes

from dvis_attn_pl.utils.io_utils import atomic_write_bytes, atomic_write_json
from dvis_attn_pl.utils.run_layout import MANIFEST, video_dir_name, video_sort_key

__all__ = [
    "MANIFEST_NAME",
    "METADATA_KEY",
    "PART_NAME",
    "AttentionStore",
    "AttentionStoreError",
    "merge_manifest",
    "video_dir_name",
]

MANIFEST_NAME = MANIFEST  # the run's attention manifest
PART_NAME = MANIFEST  # and each video's part
FORMAT = "dvis_attn_pl.attention_maps"
FORMAT_VERSION = 1
METADATA_KEY = "dvis_attn_pl"  # the one safetensors metadata entry: JSON {format, video_id, meta}
_DTYPE_NAMES = {
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.float32: "F32",
    torch.float64: "F64",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


class AttentionStoreError(RuntimeError):
    """The background writer failed; the message names the file it was writing."""



@dataclass
class _Artifact:
    video_id: object
    relpath: str
    tensors: dict[str, torch.Tensor]
    meta: dict


@dataclass
class _Finish:
    video_id: object
    summary: dict


_STOP = object()


class AttentionStore:
    """Background writer of attention artifacts and their manifest (see the module docstring).

    Args:
        root: the ``attention_maps`` folder (created on first write).
        float_dtype: dtype floating tensors are written in (default float16); None keeps theirs.
        queue_size: jobs waiting at most; :meth:`put` blocks beyond that.
        run_info: JSON-able description of the capture (options), copied into the manifest.
    """

    def __init__(
        self,
        root: str | Path,
        *,
        float_dtype: torch.dtype | None = torch.float16,
        queue_size: int = 4,
        run_info: Mapping | None = None,
    ) -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.root = Path(root)
        self.float_dtype = float_dtype
        self.run_info = dict(run_info or {})
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._error_where = ""
        self._entries: dict[str, list[dict]] = {}  # video dir -> artifact entries (writer thread only)
        self._closed = False
        self.bytes_written = 0
        self.files_written = 0

    # ------------------------------------------------------------------ producer side
    def put(self, video_id: object, relpath: str, tensors: Mapping[str, torch.Tensor], meta: Mapping) -> None:
        """Queue ``tensors`` (host tensors, name -> tensor) for ``root/relpath``; ``meta`` (JSON-able)
        goes into the manifest entry and the file's metadata."""
        self._check()
        if Path(relpath).is_absolute() or ".." in Path(relpath).parts:
            raise ValueError(f"attention artifact path {relpath!r} must stay inside {self.root}")
        for name, t in tensors.items():
            if t.device.type != "cpu":
                raise ValueError(
                    f"attention artifact {relpath}: tensor {name!r} is on {t.device}, not the host"
                )
        self._submit(_Artifact(video_id, relpath, dict(tensors), dict(meta)))

    def finish_video(self, video_id: object, summary: Mapping) -> None:
        """Queue the video's manifest part (written after every file queued before it)."""
        self._check()
        self._submit(_Finish(video_id, dict(summary)))

    def flush(self) -> None:
        """Wait until every queued job is written; raise the writer's error if any."""
        if self._thread is not None:
            self._queue.join()
        self._check()

    def close(self) -> None:
        """Flush, stop the thread and raise the writer's error if any. Safe to call twice."""
        if self._closed:
            self._check()
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join()
            self._thread = None
        self._check()

    def abort(self) -> None:
        """Stop the writer without raising (exception paths); queued jobs are still written."""
        try:
            self.close()
        except AttentionStoreError:
            pass

    @property
    def closed(self) -> bool:
        """True after :meth:`close`: a new store is needed for more writes."""
        return self._closed

    def completed_videos(self) -> set[str]:
        """File-name ids of the videos whose manifest part exists under ``root``."""
        if not self.root.is_dir():
            return set()
        return {p.parent.name[len("video_") :] for p in self.root.glob(f"video_*/{PART_NAME}")}

    # ------------------------------------------------------------------ internals
    def _submit(self, job) -> None:
        if self._closed:
            raise AttentionStoreError(f"{self.root}: the attention store is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="attention-store-writer", daemon=True)
            self._thread.start()
        self._queue.put(job)

    def _check(self) -> None:
        if self._error is not None:
            raise AttentionStoreError(
                f"attention writer failed on {self._error_where}: {type(self._error).__name__}: {self._error}"
            ) from self._error

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is _STOP:
                    return
                if self._error is None:  # after a failure, drain without writing
                    self._handle(job)
            except BaseException as exc:  # noqa: BLE001 - surfaced on the main thread
                self._error = exc
            finally:
                self._queue.task_done()

    def _handle(self, job) -> None:
        if isinstance(job, _Artifact):
            self._error_where = str(self.root / job.relpath)
            self._write_artifact(job)
        else:
            self._error_where = str(self.root / video_dir_name(job.video_id) / PART_NAME)
            self._write_part(job)

    def _write_artifact(self, job: _Artifact) -> None:
        tensors = {}
        for name, t in job.tensors.items():
            if self.float_dtype is not None and t.is_floating_point() and t.dtype != self.float_dtype:
                t = t.to(self.float_dtype)
            tensors[name] = t.contiguous()
        # One metadata key: safetensors writes several keys in a varying order, and the bytes (and
        # so the checksums) must not depend on the run.
        header = json.dumps({"format": FORMAT, "video_id": job.video_id, "meta": job.meta}, sort_keys=True)
        data = safetensors_bytes(tensors, metadata={METADATA_KEY: header})
        atomic_write_bytes(self.root / job.relpath, data)
        entry = {
            "path": job.relpath,
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "tensors": {
                name: {"shape": list(t.shape), "dtype": _DTYPE_NAMES.get(t.dtype, str(t.dtype))}
                for name, t in tensors.items()
            },
            **job.meta,
        }
        self._entries.setdefault(video_dir_name(job.video_id), []).append(entry)
        self.bytes_written += len(data)
        self.files_written += 1

    def _write_part(self, job: _Finish) -> None:
        key = video_dir_name(job.video_id)
        entries = sorted(self._entries.pop(key, []), key=lambda e: e["path"])
        part = {"video_id": job.video_id, **job.summary, "artifacts": entries}
        atomic_write_json(self.root / key / PART_NAME, part)


def merge_manifest(root: str | Path, run_info: Mapping | None = None) -> dict:
    """Merge every video's manifest part under ``root`` into ``root/manifest.json``; returns it.

    Videos are ordered by id (integers first, numerically), so the result does not depend on how
    many processes wrote the parts or in which order.
    """
    root = Path(root)
    parts = [json.loads(p.read_text()) for p in sorted(root.glob(f"video_*/{PART_NAME}"))]
    parts.sort(key=lambda p: video_sort_key(p["video_id"]))
    videos = {str(p["video_id"]): p for p in parts}
    manifest = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "capture": dict(run_info or {}),
        "complete_videos": [p["video_id"] for p in parts],
        "num_artifacts": sum(len(p["artifacts"]) for p in parts),
        "total_bytes": sum(a["bytes"] for p in parts for a in p["artifacts"]),
        "device_buffer_bytes_peak": max((int(p.get("device_buffer_bytes", 0)) for p in parts), default=0),
        "videos": videos,
    }
    atomic_write_json(root / MANIFEST_NAME, manifest, indent=1)
    return manifest
