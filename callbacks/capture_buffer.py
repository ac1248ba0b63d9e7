"""Which capture sites run, and the per-video device buffer their calls go to (inside the forward).

:class:`CaptureBuffer` chooses the sites on a model (by kind or by glob on the official module
path, :func:`dvis_attn_pl.model.capture.select_sites`), switches them to their weights path for
one video at a time, and keeps each call as a :class:`~callbacks.attention_reduce.CapturedCall`:
tensors detached and left on their device, the calls outside the chosen frames dropped at once,
the bytes counted against an optional budget. Nothing is copied to the host or written here.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

import torch

from dvis_attn_pl.model.capture import CaptureSite, enable_capture, select_sites

from .attention_reduce import SEGMENTER_KINDS, TRACKER_KINDS, CapturedCall, site_layer

__all__ = ["BACKBONE_BLOCKS", "CaptureBudgetError", "CaptureBuffer", "stage_end_blocks"]

BACKBONE_BLOCKS = ("all", "stage_ends")


def stage_end_blocks(model: torch.nn.Module) -> set[int] | None:
    """The ViT blocks that end the interaction stages of ``model``'s ViT-Adapter backbone (None
    without one)."""
    indexes = getattr(getattr(model, "backbone", None), "interaction_indexes", None)
    return None if indexes is None else {int(last) for _, last in indexes}


class CaptureBudgetError(RuntimeError):
    """The attention buffered for one video exceeded ``max_buffer_bytes``."""


class CaptureBuffer:
    """The chosen sites of a model and the calls they made during the current video.

    Args:
        kinds, patterns: the sites to capture (attention kinds; globs on official module paths).
        per_head: the sites emit per-head weights instead of head-averaged ones.
        backbone_blocks: ``"all"``, or ``"stage_ends"``: of a ViT-Adapter backbone's self-attention
            (kind ``backbone_self``) only the last block of each interaction stage, unless a glob
            in ``patterns`` names the block.
        frames: absolute video frames to keep for per-frame kinds (None: all).
        max_buffer_bytes: raise :class:`CaptureBudgetError` when one video buffers more.
    """

    def __init__(
        self,
        kinds: Sequence[str],
        patterns: Sequence[str],
        *,
        per_head: bool = False,
        backbone_blocks: str = "all",
        frames: Sequence[int] | None = None,
        max_buffer_bytes: int | None = None,
    ) -> None:
        if backbone_blocks not in BACKBONE_BLOCKS:
            raise ValueError(f"backbone_blocks must be one of {', '.join(BACKBONE_BLOCKS)}, got {backbone_blocks!r}")
        self.kinds, self.patterns = tuple(kinds), tuple(patterns)
        self.per_head = per_head
        self.backbone_blocks = backbone_blocks
        self.frames = sorted({int(f) for f in frames}) if frames is not None else None
        self.frame_set = torch.tensor(self.frames, dtype=torch.int64) if self.frames is not None else None
        self.max_buffer_bytes = max_buffer_bytes
        self.sites: list[CaptureSite] = []
        self.model: torch.nn.Module | None = None
        self.calls: list[CapturedCall] = []
        self.nbytes = 0

    def attach(self, model: torch.nn.Module) -> None:
        """Choose the sites on ``model``."""
        self.model = model
        sites = select_sites(model, self.kinds, self.patterns) if (self.kinds or self.patterns) else []
        ends = stage_end_blocks(model) if self.backbone_blocks == "stage_ends" else None
        if ends is not None:
            sites = [
                s
                for s in sites
                if s.site_kind != "backbone_self"
                or site_layer(s.site_name) in ends
                or any(fnmatch.fnmatchcase(s.site_name, p) for p in self.patterns)
            ]
        self.sites = sites

    def start(self) -> None:
        """Empty the buffer and switch the sites to capture (one video)."""
        self.calls, self.nbytes = [], 0
        if self.sites:
            enable_capture(self.sites, self._sink, per_head=self.per_head)

    def stop(self) -> tuple[list[CapturedCall], int]:
        """Switch the sites off; the calls buffered since :meth:`start` and their bytes (the buffer
        is left empty)."""
        for site in self.sites:
            site.capture = None
        calls, nbytes = self.calls, self.nbytes
        self.calls, self.nbytes = [], 0
        return calls, nbytes

    def _sink(self, site: CaptureSite, tensors: dict[str, torch.Tensor]) -> None:
        """Called by a site inside the forward pass: append, on the device, nothing else."""
        ctx = getattr(self.model, "capture_context", None)
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
            if not self._keep_segmenter_frames(call, int(ctx.frame_start), int(ctx.frame_end)):
                return
        elif kind in TRACKER_KINDS and ctx is not None:
            call.tracker_frame = int(ctx.tracker_frame)
            call.row_seq_ids = ctx.tracker_row_seq_ids
            if self.frames is not None and call.tracker_frame not in self.frames:
                return
        self.calls.append(call)
        self.nbytes += call.nbytes
        if self.max_buffer_bytes is not None and self.nbytes > self.max_buffer_bytes:
            raise CaptureBudgetError(
                f"attention capture buffered {self.nbytes} bytes for one video (limit "
                f"{self.max_buffer_bytes}) at {site.site_name}; capture fewer kinds or frames, or raise the limit"
            )

    def _keep_segmenter_frames(self, call: CapturedCall, start: int, end: int) -> bool:
        """Number a segmenter call's frames (dim 0 = the window's frames) and drop those not chosen;
        False when none is left."""
        if not all(t.shape[0] == end - start for t in call.tensors.values()):
            return True
        call.frames = torch.arange(start, end)
        if self.frame_set is None:
            return True
        keep = torch.nonzero(torch.isin(call.frames, self.frame_set)).flatten()
        if keep.numel() == 0:
            return False
        if keep.numel() < end - start:
            call.frames = call.frames[keep]
            call.tensors = {k: v.index_select(0, keep.to(v.device)) for k, v in call.tensors.items()}
        return True
