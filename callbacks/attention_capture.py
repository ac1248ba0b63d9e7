"""AttentionCapture: keeps the attention a run asks for, one video at a time, without slowing the forward pass.

For each test/predict step (one video):

1. ``on_*_batch_start``: the chosen capture sites (by kind or by glob on the official module path)
   are switched to their weights path with a sink that only *appends* ``(site, kind, context,
   tensors)`` to a per-video buffer. The tensors stay on the device, detached; nothing is copied to
   the host or written while the model runs. The bytes buffered are counted (and can be capped
   with ``max_buffer_bytes``).
2. ``on_*_batch_end``: with the video's predictions known, :mod:`callbacks.attention_reduce` keeps
   what was asked (rows of the predicted instances, per-prediction decoder maps, ...). Registered
   processors (e.g. :class:`callbacks.temporal_rollout.TemporalRollout`) run on the same device
   tensors through :attr:`AttentionCapture.last_video`. Floating tensors are cast (float16 by
   default) on the device, copied to the host once per kind (one transfer per dtype), and handed to
   the :class:`~callbacks.attention_store.AttentionStore` writer thread. Capture is then switched
   off and the buffer dropped, so host and device memory do not grow across videos.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from lightning.pytorch.callbacks import Callback

from dvis_attn_pl.capture_presets import get_preset, resolve_selection
from dvis_attn_pl.model.capture import CaptureSite, enable_capture, select_sites
from dvis_attn_pl.model.meta_arch import InferenceTrace
from dvis_attn_pl.model.meta_arch_offline import OfflineInferenceTrace
from dvis_attn_pl.utils.run_layout import RunLayout

from .attention_reduce import (
    SEGMENTER_KINDS,
    TRACKER_KINDS,
    CapturedCall,
    InstanceTable,
    KindResult,
    instance_table,
    reduce_activation,
    reduce_decoder_cross,
    reduce_generic,
    reduce_refiner_time,
    reduce_tracker_cross,
    site_layer,
    tracker_row_table,
)
from .attention_store import AttentionStore, merge_manifest, video_dir_name

if TYPE_CHECKING:
    from dvis_attn_pl.lightning_module import VideoResult

__all__ = ["Artifact", "AttentionCapture", "CaptureBudgetError", "VideoCapture"]

log = logging.getLogger(__name__)

_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


class CaptureBudgetError(RuntimeError):
    """The attention buffered for one video exceeded ``max_buffer_bytes``."""


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
    extras: dict = field(default_factory=dict)


Processor = Callable[[VideoCapture], list[Artifact]]


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
    """

    def __init__(
        self,
        run_dir: str | Path | None = None,
        *,
        preset: str | None = "temporal",
        kinds: Sequence[str] = (),
        patterns: Sequence[str] = (),
        per_head: bool = False,
        instances: str = "predicted",
        top_k: int | None = None,
        map_top_k: int | None = None,
        frames: Sequence[int] | None = None,
        dtype: torch.dtype | str | None = torch.float16,
        tracker_weight_layer: str = "last",
        decoder_raw: bool = False,
        max_buffer_bytes: int | None = None,
        queue_size: int = 4,
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
        if map_top_k is None and preset:
            map_top_k = get_preset(preset).defaults.get("map_top_k")
        self.preset = preset
        self.per_head = per_head
        self.instances = instances
        self.top_k = top_k
        self.map_top_k = map_top_k
        self.frames = sorted({int(f) for f in frames}) if frames is not None else None
        self.dtype = _parse_dtype(dtype)
        self.tracker_weight_layer = tracker_weight_layer
        self.decoder_raw = decoder_raw
        self.max_buffer_bytes = max_buffer_bytes
        self.root = RunLayout(run_dir).attention if run_dir is not None else None
        self.queue_size = queue_size
        self.run_info: dict = {
            "preset": preset,
            "kinds": list(self.kinds),
            "patterns": list(self.patterns),
            "per_head": per_head,
            "instances": instances,
            "top_k": top_k,
            "map_top_k": map_top_k,
            "frames": self.frames,
            "dtype": str(self.dtype).replace("torch.", "") if self.dtype is not None else "float32",
            "tracker_weight_layer": tracker_weight_layer,
            "decoder_raw": decoder_raw,
        }
        self.store: AttentionStore | None = None
        self.last_video: VideoCapture | None = None
        self.device_buffer_bytes_peak = 0
        self.host_bytes_total = 0
        self.frames_total = 0
        self._processors: list[Processor] = []
        self._sites: list[CaptureSite] = []
        self._model = None
        self._calls: list[CapturedCall] = []
        self._buffer_bytes = 0
        self._frame_set = torch.tensor(self.frames, dtype=torch.int64) if self.frames is not None else None

    # ------------------------------------------------------------------ public
    @property
    def sites(self) -> list[CaptureSite]:
        """The capture sites chosen on the model (after ``setup``)."""
        return list(self._sites)

    def add_processor(self, processor: Processor, info: dict | None = None, name: str | None = None) -> None:
        """Run ``processor(video)`` after each video's reduction; the artifacts it returns are stored
        with the video. ``info`` is recorded in the manifest's ``capture`` section under ``name``."""
        self._processors.append(processor)
        if info is not None and name:
            self.run_info[name] = info

    def attach(self, model: torch.nn.Module) -> None:
        """Choose the sites on ``model`` (done by ``setup``; callable directly without a Trainer)."""
        self._model = model
        self._sites = select_sites(model, self.kinds, self.patterns) if (self.kinds or self.patterns) else []

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer, pl_module, stage: str) -> None:
        self.attach(getattr(pl_module, "model", pl_module))
        if self.root is not None and (self.store is None or self.store.closed):
            self.store = AttentionStore(self.root, float_dtype=self.dtype, queue_size=self.queue_size)
        found = {s.site_kind for s in self._sites}
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
        self._disable()
        self._calls, self._buffer_bytes = [], 0
        if self.store is not None:
            self.store.abort()

    # ------------------------------------------------------------------ per video
    def begin_video(self) -> None:
        """Reset the buffer and switch the chosen sites to capture."""
        self._calls, self._buffer_bytes = [], 0
        self.last_video = None
        if self._sites:
            enable_capture(self._sites, self._sink, per_head=self.per_head)

    def end_video(self, outputs: VideoResult | None, batch) -> VideoCapture | None:
        """Keep what was asked for the video just run, store it, and switch capture off."""
        self._disable()
        calls, self._calls = self._calls, []
        buffered, self._buffer_bytes = self._buffer_bytes, 0
        if not self._sites or outputs is None:
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
        for processor in self._processors:
            artifacts.extend(processor(video))
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
    def _disable(self) -> None:
        for site in self._sites:
            site.capture = None

    def _context(self):
        return getattr(self._model, "capture_context", None)

    def _sink(self, site: CaptureSite, tensors: dict[str, torch.Tensor]) -> None:
        """Called by a site inside the forward pass: append, on the device, nothing else."""
        ctx = self._context()
        kind = site.site_kind
        call = CapturedCall(
            site=site.site_name,
            kind=kind,
            layer=site_layer(site.site_name),
            tensors={k: v.detach() for k, v in tensors.items()},
            stage=getattr(ctx, "stage", ""),
            window_index=getattr(ctx, "window_index", -1),
        )
        if kind in SEGMENTER_KINDS and ctx is not None:
            start, end = int(ctx.frame_start), int(ctx.frame_end)
            if all(t.shape[0] == end - start for t in call.tensors.values()):
                call.frames = torch.arange(start, end)
                if self.frames is not None:
                    keep = torch.nonzero(torch.isin(call.frames, self._frame_set)).flatten()
                    if keep.numel() == 0:
                        return
                    if keep.numel() < end - start:
                        call.frames = call.frames[keep]
                        call.tensors = {
                            k: v.index_select(0, keep.to(v.device)) for k, v in call.tensors.items()
                        }
        elif kind in TRACKER_KINDS and ctx is not None:
            call.tracker_frame = int(ctx.tracker_frame)
            call.row_seq_ids = ctx.tracker_row_seq_ids
            if self.frames is not None and call.tracker_frame not in self.frames:
                return
        self._calls.append(call)
        self._buffer_bytes += call.nbytes
        if self.max_buffer_bytes is not None and self._buffer_bytes > self.max_buffer_bytes:
            raise CaptureBudgetError(
                f"attention capture buffered {self._buffer_bytes} bytes for one video (limit "
                f"{self.max_buffer_bytes}) at {site.site_name}; capture fewer kinds or frames, or raise the limit"
            )

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
        meta = {
            "video_id": video_id,
            "num_frames": num_frames,
            "frame_range": [0, num_frames],
            "frames": self.frames,
        }
        ref_of_seq = {s: r for s, r in zip(table.sequence_ids, table.refiner_ids) if s >= 0}
        ref_of_seq.update(_all_refiner_of_sequence(info))
        keep_all = self.instances == "all"
        results: dict[str, KindResult] = {}
        rows = None
        if by_kind.get("tracker_cross"):
            rows = tracker_row_table(by_kind["tracker_cross"], self._rows_after(info), self.per_head)
        for kind, kind_calls in by_kind.items():
            if kind == "refiner_time":
                results[kind] = reduce_refiner_time(kind_calls, table, meta, self.per_head)
            elif kind == "activation":
                results[kind] = reduce_activation(kind_calls, table, meta)
            elif kind == "tracker_cross" and rows is not None:
                results[kind] = reduce_tracker_cross(
                    rows, table, meta, self.per_head, keep_all_rows=keep_all, refiner_of_sequence=ref_of_seq
                )
            elif kind == "decoder_cross":
                results[kind] = reduce_decoder_cross(
                    kind_calls,
                    rows,
                    self._map_table(table),
                    meta,
                    self.per_head,
                    padded_size=padded,
                    weight_layer=self.tracker_weight_layer,
                    keep_raw=self.decoder_raw,
                )
            else:
                results[kind] = reduce_generic(
                    kind,
                    kind_calls,
                    table,
                    meta,
                    self.per_head,
                    keep_all_rows=keep_all,
                    frames=self._frame_set,
                )
        return VideoCapture(
            video_id=video_id,
            num_frames=num_frames,
            table=table,
            results=results,
            device_buffer_bytes=buffered,
            padded_size=padded,
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
            history = getattr(getattr(self._model, "tracker", None), "row_history", None) or ()
        return {int(frame): list(ids) for frame, ids in history}

    def _padded_size(self, info: InferenceTrace | None, batch) -> tuple[int, int] | None:
        padded = None if info is None else info.padded_size
        if padded is None and batch and len(batch[0]["image"]):  # unknown for an empty video
            frames = batch[0]["image"]
            div = max(int(getattr(self._model, "size_divisibility", 32) or 1), 1)
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
        self._disable()
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
