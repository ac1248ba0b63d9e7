"""Capture sites: the switch that lets any attention module hand out its weights at run time.

Every attention module of the model (MHA, MSDeformAttn, SlotAttention, the refiner's temporal
pooling, ViT self-attention) is a :class:`CaptureSite`. By default a site has no request and runs
its fast path (fused SDPA, no weights materialised). When a capture asks for it, the site computes
its weights and hands them, still on the device, to the request's sink together with its official
module path (``site_name``) and kind. The sink decides what to keep; nothing here touches the disk.

The model keeps a :class:`CaptureContext` that the meta-architecture updates as inference walks
through a video (which window, which tracker frame, which tracker rows belong to which sequence),
so a sink can place every tensor in time without hooks of its own.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

# Kinds of attention, matched on the official module path. The first pattern that matches wins.
_KIND_PATTERNS: tuple[tuple[str, str], ...] = (
    ("sem_seg_head.pixel_decoder.transformer.encoder.layers.*.self_attn", "deform_sampling"),
    ("sem_seg_head.predictor.transformer_cross_attention_layers.*.multihead_attn", "decoder_cross"),
    ("sem_seg_head.predictor.transformer_self_attention_layers.*.self_attn", "decoder_self"),
    ("tracker.transformer_cross_attention_layers.*.multihead_attn", "tracker_cross"),
    ("tracker.transformer_self_attention_layers.*.self_attn", "tracker_self"),
    ("tracker.slot_cross_attention_layers.*.multihead_attn", "slot_cross"),
    ("tracker.slot_cross_attention_layers.*.slot_attn", "slot_attn"),
    ("refiner.transformer_time_self_attention_layers.*.self_attn", "refiner_time"),
    ("refiner.transformer_obj_self_attention_layers.*.self_attn", "refiner_obj"),
    ("refiner.transformer_cross_attention_layers.*.multihead_attn", "refiner_cross"),
    ("refiner.activation_proj", "activation"),
    ("backbone.vit_module.blocks.*.attn", "backbone_self"),
    ("backbone.interactions.*", "deform_sampling"),
)

KINDS: tuple[str, ...] = (
    "decoder_cross",
    "decoder_self",
    "tracker_cross",
    "tracker_self",
    "slot_cross",
    "slot_attn",
    "refiner_time",
    "refiner_obj",
    "refiner_cross",
    "activation",
    "deform_sampling",
    "backbone_self",
)


def attention_kind(site_name: str) -> str:
    """Return the attention kind of an official module path ("other" when none matches)."""
    for pattern, kind in _KIND_PATTERNS:
        if fnmatch.fnmatchcase(site_name, pattern):
            return kind
    return "other"


Sink = Callable[["CaptureSite", dict[str, torch.Tensor]], None]


@dataclass
class CaptureRequest:
    """What a capture asks of one site: per-head or head-averaged weights, delivered to ``sink``."""

    sink: Sink
    per_head: bool = False


class CaptureSite(nn.Module):
    """Mixin for modules that can hand out attention weights on request.

    Subclasses call :meth:`emit` with the tensors they computed, only when :attr:`capture` is set,
    and otherwise take their fast path. ``site_name`` and ``site_kind`` are filled in by
    :func:`name_capture_sites` once the model is built.
    """

    site_name: str = ""
    site_kind: str = "other"
    capture: CaptureRequest | None = None

    def emit(self, tensors: dict[str, torch.Tensor]) -> None:
        """Hand ``tensors`` (e.g. ``{"weights": w}``) to the active request's sink."""
        if self.capture is not None:
            self.capture.sink(self, tensors)


@dataclass
class CaptureContext:
    """Where inference currently is inside a video; updated by the meta-architecture.

    ``frame_start``/``frame_end`` (end exclusive) give the frames of the segmenter window being
    run; ``tracker_frame`` the frame the tracker is on; ``tracker_row_seq_ids`` the sequence id of
    each tracker query row at that frame (-1 for a new-instance anchor row, whose segmenter query
    index is its position minus the number of track rows).
    """

    video_id: object = None
    num_frames: int = 0
    window_index: int = -1
    frame_start: int = 0
    frame_end: int = 0
    tracker_frame: int = -1
    stage: str = ""
    _row_ids: list[int] | torch.Tensor = field(default_factory=list, repr=False)

    @property
    def tracker_row_seq_ids(self) -> list[int]:
        """Sequence id per tracker query row; a device tensor set by the tracker is read (once)
        only when someone asks."""
        if isinstance(self._row_ids, torch.Tensor):
            self._row_ids = self._row_ids.tolist()
        return self._row_ids

    @tracker_row_seq_ids.setter
    def tracker_row_seq_ids(self, ids: list[int]) -> None:
        self._row_ids = ids

    def set_tracker_rows(self, ids: torch.Tensor) -> None:
        """The tracker's row ids as a tensor on the model's device (no host read here)."""
        self._row_ids = ids

    def reset(self, video_id: object = None, num_frames: int = 0) -> None:
        """Start a new video."""
        self.video_id = video_id
        self.num_frames = num_frames
        self.window_index = -1
        self.frame_start = self.frame_end = 0
        self.tracker_frame = -1
        self._row_ids = []
        self.stage = ""


def name_capture_sites(model: nn.Module) -> None:
    """Record each site's official module path and kind on the site itself."""
    for name, module in model.named_modules():
        if isinstance(module, CaptureSite):
            module.site_name = name
            module.site_kind = attention_kind(name)


def capture_sites(model: nn.Module) -> Iterator[CaptureSite]:
    """All capture sites of ``model`` in module order."""
    for module in model.modules():
        if isinstance(module, CaptureSite):
            yield module


def select_sites(
    model: nn.Module, kinds: Iterable[str] = (), patterns: Iterable[str] = ()
) -> list[CaptureSite]:
    """Sites whose kind is in ``kinds`` or whose official path matches one of the glob ``patterns``."""
    kinds, patterns = set(kinds), list(patterns)
    unknown = kinds - set(KINDS)
    if unknown:
        raise ValueError(f"unknown attention kind(s) {sorted(unknown)}; known: {', '.join(KINDS)}")
    return [
        site
        for site in capture_sites(model)
        if site.site_kind in kinds or any(fnmatch.fnmatchcase(site.site_name, p) for p in patterns)
    ]


def enable_capture(sites: Iterable[CaptureSite], sink: Sink, per_head: bool = False) -> None:
    """Make ``sites`` compute their weights and deliver them to ``sink``."""
    for site in sites:
        site.capture = CaptureRequest(sink=sink, per_head=per_head)


def disable_capture(model: nn.Module) -> None:
    """Return every site of ``model`` to its fast path."""
    for site in capture_sites(model):
        site.capture = None
