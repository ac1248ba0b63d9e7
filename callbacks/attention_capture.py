"""AttentionCapture: keeps the attention a run asks for, one video at a time, without slowing the forward pass.

For each test/predict step (one video):

1. ``on_*_batch_start``: the :class:`~callbacks.capture_buffer.CaptureBuffer` switches the chosen
   capture sites (by kind or by glob on the official module path) to their weights path with a
   sink that only *appends* ``(site, kind, context, tensors)`` to a per-video buffer. The tensors
   stay on the device, detached; nothing is copied to the host or written while the model runs.
   The bytes buffered are counted (and can be capped with ``max_buffer_bytes``).
2. ``on_*_batch_end``: with the video's predictions known, each kind's reducer
   (:data:`callbacks.attention_reduce.REDUCERS`) keeps what was asked (rows of the predicted
   instances, per-prediction decoder maps, ...). The processors passed in (e.g.
   :class:`callbacks.temporal_rollout.TemporalRollout`) run on the same device tensors (the
   :class:`VideoCapture`). Floating tensors are cast (float16 by default) on the device, copied to
   the host once per kind (one transfer per dtype), and handed to the
   :class:`~callbacks.attention_store.AttentionStore` writer thread. Capture is then switched off
   and the buffer dropped, so host and device memory do not grow across videos.
3. At the end of the loop the store is flushed and rank 0 merges the manifest.

Differences from the original tool (fish-dvis ``attention_extractor.py``): no disk I/O or host copy
inside hooks; one file per video and kind instead of one per call; shapes are read from the
tensors (no fixed 200x200); the frame importance (``activation``) is always written; tracker rows
carry their sequence id and refiner id; padding frames are marked (``present``); file names are
uniform (``video_<id>/<kind>.safetensors``).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import torch
from lightning.pytorch.callbacks import Callback

from dvis_attn_pl.capture_presets import get_preset, resolve_selection
from dvis_attn_pl.model.capture import CaptureSite
from dvis_attn_pl.model.meta_arch import InferenceTrace
from dvis_attn_pl.model.meta_arch_offline import OfflineInferenceTrace
from dvis_attn_pl.utils.run_layout import RunLayout

from .attention_reduce import (
    CapturedCall,
    InstanceTable,
    KindResult,
    ReduceRequest,
    instance_table,
    reduce_kind,
    tracker_row_table,
)
from .attention_store import AttentionStore, merge_manifest, video_dir_name
from .capture_buffer import CaptureBudgetError, CaptureBuffer

if TYPE_CHECKING:
    from dvis_attn_pl.lightning_module import VideoResult

__all__ = ["Artifact", "AttentionCapture", "CaptureBudgetError", "VideoCapture", "VideoProcessor"]

log = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


@dataclass
class Artifact:
    """One file to write: a path under ``attention_maps/``, tensors and manifest meta."""

    relpath: str
    tensors: dict[str, torch.Tensor]
    meta: dict


@dataclass
class VideoCapture:
    """What was kept for the last video, still on the device (shared with processors)."""

    video_id: object
    num_frames: int
    table: InstanceTable
    results: dict[str, KindResult]
    device_buffer_bytes: int
    padded_size: tuple[int, int] | None = None
    stored_dtype: torch.dtype | None = None  # the dtype floating tensors are stored in (None: as computed)
    extras: dict = field(default_factory=dict)


class VideoProcessor(Protocol):
    """Work on each video's kept attention while it is still on the device (e.g. the rollout).

    ``name`` and ``options`` are recorded in the manifest's ``capture`` section; ``requires`` are
    the attention kinds it reads (the capture refuses a processor whose kinds it does not capture).
    """

    name: str
    requires: tuple[str, ...]

    @property
    def options(self) -> dict: ...

    def process_video(self, video: VideoCapture) -> list[Artifact]:
        """The artifacts to store with ``video``."""
        ...


def _parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise ValueError(f"capture dtype {dtype!r} is not one of {', '.join(_DTYPES)} (or None)") from None


def batched_to_host(
    tensors: dict[str, torch.Tensor], dtype: torch.dtype | None
) -> tuple[dict[str, torch.Tensor], int]:
    """Cast floating tensors to ``dtype`` on their device, then copy every device tensor to the host
    with one transfer per dtype (flattened and concatenated on the device, split on the host).
    Returns the host tensors and the bytes transferred."""
    out: dict[str, torch.Tensor] = {}
    groups: dict[tuple[torch.device, torch.dtype], list[tuple[str, torch.Tensor]]] = defaultdict(list)
    for name, t in tensors.items():
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        if t.device.type == "cpu":
            out[name] = t
        else:
            groups[(t.device, t.dtype)].append((name, t))
    moved = 0
    for items in groups.values():
        flat = torch.cat([t.reshape(-1) for _, t in items]).cpu()
        moved += flat.numel() * flat.element_size()
        offset = 0
        for name, t in items:
            out[name] = flat[offset : offset + t.numel()].view(t.shape)
            offset += t.numel()
    return {name: out[name] for name in tensors}, moved


class AttentionCapture(Callback):
    """Capture attention during test/predict and store it under ``<run_dir>/attention_maps``.

    Args:
        run_dir: run directory (files go to ``run_dir/attention_maps``); None keeps results in
            memory only (:attr:`last_video`), e.g. for interactive use.
        preset: ``none``/``temporal``/``decoder``/``all`` (see :mod:`dvis_attn_pl.capture_presets`).
        kinds: extra attention kinds; ``patterns``: globs on official module paths.
        per_head: keep per-head weights (MHA sites) instead of head-averaged ones.
        backbone_blocks: ``"stage_ends"`` or ``"all"`` blocks of a ViT-Adapter backbone's
            self-attention (default: the preset's, else all; see :class:`CaptureBuffer`).
        instances: ``"predicted"`` (rows of the predicted instances) or ``"all"`` (every row).
        top_k: only the first ``top_k`` predictions (by score) define the kept instances.
        map_top_k: predictions for which decoder maps are made (default: the preset's, else all kept).
        frames: video frames to keep for per-frame kinds (segmenter, tracker, refiner object/cross);
            the refiner time attention and pooling weights always cover the whole video.
        dtype: dtype of stored floating tensors (float16 default; None keeps float32).
        tracker_weight_layer: ``"last"`` tracker layer or ``"mean"`` over layers for decoder-map weights.
        decoder_raw: also store the raw (frame, query, y, x) decoder maps.
        max_buffer_bytes: raise :class:`CaptureBudgetError` when one video buffers more.
        queue_size: writer queue length (host memory bound: about ``queue_size`` kinds' tensors).
        processors: run on each video's kept attention, in order; their artifacts are stored with
            the video (e.g. :class:`~callbacks.temporal_rollout.TemporalRollout`).
    """

    def __init__(
        self,
        run_dir: str | Path | None = None,
        *,
        preset: str | None = "temporal",
        kinds: Sequence[str] = (),
        patterns: Sequence[str] = (),
        per_head: bool = False,
        backbone_blocks: str | None = None,
        instances: str = "predicted",
        top_k: int | None = None,
        map_top_k: int | None = None,
        frames: Sequence[int] | None = None,
        dtype: torch.dtype | str | None = torch.float16,
        tracker_weight_layer: str = "last",
        decoder_raw: bool = False,
        max_buffer_bytes: int | None = None,
        queue_size: int = 4,
        processors: Sequence[VideoProcessor] = (),
    ) -> None:
        if instances not in ("predicted", "all"):
            raise ValueError(f"instances must be 'predicted' or 'all', got {instances!r}")
        if tracker_weight_layer not in ("last", "mean"):
            raise ValueError(f"tracker_weight_layer must be 'last' or 'mean', got {tracker_weight_layer!r}")
        for name, value in (
            ("top_k", top_k),
            ("map_top_k", map_top_k),
            ("max_buffer_bytes", max_buffer_bytes),
        ):
            if value is not None and int(value) < 1:
                raise ValueError(f"{name} must be a positive integer or None, got {value}")
        if frames is not None and any(int(f) < 0 for f in frames):
            raise ValueError(f"frames must be non-negative frame indices, got {list(frames)}")
        self.kinds, self.patterns = resolve_selection(preset, kinds, patterns)
        for processor in processors:
            missing = [k for k in processor.requires if k not in self.kinds]
            if missing:
                raise ValueError(
                    f"{type(processor).__name__} needs the {', '.join(missing)} attention: capture the "
                    f"{', '.join(repr(k) for k in missing)} kind (presets temporal, decoder or all)"
                )
        if map_top_k is None and preset:
            map_top_k = get_preset(preset).defaults.get("map_top_k")
        if backbone_blocks is None:
            backbone_blocks = get_preset(preset).defaults.get("backbone_blocks", "all") if preset else "all"
        self.preset = preset
        self.per_head = per_head
        self.instances = instances
        self.top_k = top_k
        self.map_top_k = map_top_k
        self.buffer = CaptureBuffer(
            self.kinds,
            self.patterns,
            per_head=per_head,
            backbone_blocks=backbone_blocks,
            frames=frames,
            max_buffer_bytes=max_buffer_bytes,
        )
        self.dtype = _parse_dtype(dtype)
        self.tracker_weight_layer = tracker_weight_layer
        self.decoder_raw = decoder_raw
        self.root = RunLayout(run_dir).attention if run_dir is not None else None
        self.queue_size = queue_size
        self.processors: tuple[VideoProcessor, ...] = tuple(processors)
        self.run_info: dict = {
            "preset": preset,
            "kinds": list(self.kinds),
            "patterns": list(self.patterns),
            "per_head": per_head,
            "backbone_blocks": backbone_blocks,
            "instances": instances,
            "top_k": top_k,
            "map_top_k": map_top_k,
            "frames": self.frames,
            "dtype": str(self.dtype).replace("torch.", "") if self.dtype is not None else "float32",
            "tracker_weight_layer": tracker_weight_layer,
            "decoder_raw": decoder_raw,
            **{p.name: dict(p.options) for p in self.processors},
        }
        self.store: AttentionStore | None = None
        self.last_video: VideoCapture | None = None
        self.device_buffer_bytes_peak = 0
        self.host_bytes_total = 0
        self.frames_total = 0

    # ------------------------------------------------------------------ public
    @property
    def frames(self) -> list[int] | None:
        """The chosen video frames for per-frame kinds (None: all)."""
        return self.buffer.frames

    @property
    def sites(self) -> list[CaptureSite]:
        """The capture sites chosen on the model (after ``setup``)."""
        return list(self.buffer.sites)

    def attach(self, model: torch.nn.Module) -> None:
        """Choose the sites on ``model`` (done by ``setup``; callable directly without a Trainer)."""
        self.buffer.attach(model)

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        self.attach(getattr(pl_module, "model", pl_module))
        if self.root is not None and (self.store is None or self.store.closed):
            self.store = AttentionStore(self.root, float_dtype=self.dtype, queue_size=self.queue_size)
        found = {s.site_kind for s in self.buffer.sites}
        missing = [k for k in self.kinds if k not in found]
        self.run_info["missing_kinds"] = missing
        if missing:
            log.info("attention capture: the model has no %s sites", ", ".join(missing))

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.begin_video()

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.begin_video()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.end_video(outputs, batch)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.end_video(outputs, batch)

    def on_test_end(self, trainer, pl_module) -> None:
        self._finish_loop(trainer)

    def on_predict_end(self, trainer, pl_module) -> None:
        self._finish_loop(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.buffer.stop()
        if self.store is not None:
            self.store.abort()

    # ------------------------------------------------------------------ per video
    def begin_video(self) -> None:
        """Reset the buffer and switch the chosen sites to capture."""
        self.last_video = None
        self.buffer.start()

    def end_video(self, outputs: VideoResult | None, batch) -> VideoCapture | None:
        """Keep what was asked for the video just run, store it, and switch capture off."""
        calls, buffered = self.buffer.stop()
        if not self.buffer.sites or outputs is None:
            return None
        video = self._reduce(calls, outputs, batch, buffered)
        del calls
        self.last_video = video
        self.device_buffer_bytes_peak = max(self.device_buffer_bytes_peak, buffered)
        self.frames_total += video.num_frames
        artifacts = [
            Artifact(f"{video_dir_name(video.video_id)}/{kind}.safetensors", r.tensors, r.meta)
            for kind, r in video.results.items()
        ]
        for processor in self.processors:
            artifacts.extend(processor.process_video(video))
        host_bytes = 0
        for art in artifacts:
            host, _ = batched_to_host(art.tensors, self.dtype)
            host_bytes += sum(t.numel() * t.element_size() for t in host.values())
            if self.store is not None:
                self.store.put(video.video_id, art.relpath, host, art.meta)
        self.host_bytes_total += host_bytes
        if self.store is not None:
            self.store.finish_video(video.video_id, self._summary(video, host_bytes))
        return video

    # ------------------------------------------------------------------ internals
    def _reduce(self, calls: list[CapturedCall], outputs: VideoResult, batch, buffered: int) -> VideoCapture:
        info, official, video_id = outputs.info, outputs.outputs, outputs.video_id
        num_frames = int(outputs.num_frames or len(batch[0]["image"]))
        by_kind: dict[str, list[CapturedCall]] = defaultdict(list)
        for call in calls:
            by_kind[call.kind].append(call)
        num_rows = None
        if by_kind.get("refiner_time"):
            num_rows = int(by_kind["refiner_time"][0].tensors["weights"].shape[0])
        table = instance_table(
            official, info, num_frames, instances=self.instances, top_k=self.top_k, num_rows=num_rows
        )
        padded = self._padded_size(info, batch)
        ref_of_seq = {s: r for s, r in zip(table.sequence_ids, table.refiner_ids) if s >= 0}
        ref_of_seq.update(_all_refiner_of_sequence(info))
        request = ReduceRequest(
            table=table,
            map_table=self._map_table(table),
            video_meta={
                "video_id": video_id,
                "num_frames": num_frames,
                "frame_range": [0, num_frames],
                "frames": self.frames,
            },
            per_head=self.per_head,
            keep_all_rows=self.instances == "all",
            frames=self.buffer.frame_set,
            padded_size=padded,
            tracker_rows=(
                tracker_row_table(by_kind["tracker_cross"], self._rows_after(info), self.per_head)
                if by_kind.get("tracker_cross")
                else None
            ),
            refiner_of_sequence=ref_of_seq,
            tracker_weight_layer=self.tracker_weight_layer,
            decoder_raw=self.decoder_raw,
        )
        return VideoCapture(
            video_id=video_id,
            num_frames=num_frames,
            table=table,
            results={kind: reduce_kind(kind, kind_calls, request) for kind, kind_calls in by_kind.items()},
            device_buffer_bytes=buffered,
            padded_size=padded,
            stored_dtype=self.dtype,
        )

    def _map_table(self, table: InstanceTable) -> InstanceTable:
        """The instances of the first ``map_top_k`` predictions (all kept ones when None)."""
        if self.map_top_k is None:
            return table
        wanted = list(dict.fromkeys(p["instance"] for p in table.predictions[: self.map_top_k]))
        return table.subset(wanted)

    def _rows_after(self, info: InferenceTrace | None) -> dict[int, list[int]]:
        if info is not None:
            history = info.tracker_rows
        else:  # a model without a trace
            history = getattr(getattr(self.buffer.model, "tracker", None), "row_history", None) or ()
        return {int(frame): list(ids) for frame, ids in history}

    def _padded_size(self, info: InferenceTrace | None, batch) -> tuple[int, int] | None:
        padded = None if info is None else info.padded_size
        if padded is None and batch and len(batch[0]["image"]):  # unknown for an empty video
            frames = batch[0]["image"]
            div = max(int(getattr(self.buffer.model, "size_divisibility", 32) or 1), 1)
            h = max(int(f.shape[-2]) for f in frames)
            w = max(int(f.shape[-1]) for f in frames)
            padded = (-(-h // div) * div, -(-w // div) * div)
        return (int(padded[0]), int(padded[1])) if padded is not None else None

    def _summary(self, video: VideoCapture, host_bytes: int) -> dict:
        t = video.table
        return {
            "num_frames": video.num_frames,
            "frame_range": [0, video.num_frames],
            "frames": self.frames,
            "padded_size": list(video.padded_size) if video.padded_size else None,
            "kinds": sorted(video.results),
            "device_buffer_bytes": video.device_buffer_bytes,
            "host_bytes": host_bytes,
            "predictions": t.predictions,
            "instances": [
                {
                    "instance": i,
                    "instance_row": t.rows[i],
                    "refiner_id": t.refiner_ids[i],
                    "sequence_id": t.sequence_ids[i],
                    "present_frames": torch.nonzero(t.present[i]).flatten().tolist(),
                }
                for i in range(len(t))
            ],
        }

    def _finish_loop(self, trainer) -> None:
        self.buffer.stop()
        self.last_video = None
        if self.store is None:
            return
        self.store.close()
        trainer.strategy.barrier("attention_capture_merge")
        if trainer.is_global_zero:
            merge_manifest(self.root, self.run_info)
        trainer.strategy.barrier("attention_capture_merged")


def _all_refiner_of_sequence(info: InferenceTrace | None) -> dict[int, int]:
    """Sequence id -> refiner instance row for every refiner row the model reports."""
    if not isinstance(info, OfflineInferenceTrace):
        return {}
    seqs, refs = info.sequence_ids, info.refiner_ids
    return {
        int(s): int(r)
        for s, r in zip(list(seqs), list(refs))
        if s is not None and r is not None and int(s) >= 0
    }
