"""The frozen segmenter's outputs, computed once per training frame and reused by every clip.

In the tracker and refiner stages the segmenter is frozen (eval mode, no gradient), and it treats
every frame on its own, so the outputs for a frame never change during the stage. Running it again
for every clip cost most of those stages' time (about 85 % of a refiner step on 2 CPU cores). This
cache runs it once per frame and mirroring, the first time a clip holds that frame, and every
clip takes its frames' rows. The stored features are float16 (half the memory; the
tracker and refiner see them cast back to float32), on the model's device.
"""

from __future__ import annotations

import torch

from ..model.tracker import TrackerWindow
from .data import Clip, TrainVideo

__all__ = ["SegmenterCache", "segment_clip"]

_STORED = torch.float16


def _segment(model, frames: torch.Tensor, padded: tuple[int, int]) -> TrackerWindow:
    with torch.no_grad():
        return model.tracker_window(model.sem_seg_head(model.backbone(model.preprocess(frames, padded))))


class SegmenterCache:
    """Per training video and mirroring, the frozen segmenter's outputs of every frame computed so far."""

    def __init__(self, videos: list[TrainVideo]) -> None:
        self.videos = videos
        self._windows: dict[tuple[int, bool], TrackerWindow] = {}
        self._done: dict[tuple[int, bool], torch.Tensor] = {}  # (T,) bool: rows computed

    def __len__(self) -> int:
        """Frames computed so far (over all videos and mirrorings)."""
        return int(sum(int(d.sum()) for d in self._done.values()))

    def _fill(self, model, index: int, flip: bool, frames: torch.Tensor) -> TrackerWindow:
        """The video's stored window, after computing those of ``frames`` not computed yet."""
        key = (index, flip)
        done = self._done.get(key)
        missing = frames if done is None else frames[~done[frames]]
        missing = torch.unique(missing)  # sorted, each frame once
        if missing.numel():
            video = self.videos[index]
            images = video.frames[missing]
            w = _segment(model, images.flip(-1) if flip else images, video.padded)
            if done is None:
                self._windows[key] = _empty_like(w, video.num_frames)
                done = self._done[key] = torch.zeros(video.num_frames, dtype=torch.bool)
            stored = self._windows[key]
            rows = missing.to(stored.frame_embeds.device)
            for name in ("frame_embeds", "mask_features", "seg_logits", "seg_masks"):
                getattr(stored, name)[rows] = getattr(w, name).to(_STORED)
            done[missing] = True
        return self._windows[key]

    def window(self, model, clip: Clip) -> TrackerWindow:
        """The segmenter's outputs for ``clip``'s frames, in the clip's frame order (float32)."""
        source = clip.source
        if source is None:
            raise ValueError("a clip without a source cannot be looked up; use segment_clip")
        w = self._fill(model, source.video, source.flip, source.frames).select(source.frames)
        dtype = w.seg_query_feat.dtype
        return TrackerWindow(
            frame_embeds=w.frame_embeds.to(dtype),
            mask_features=w.mask_features.to(dtype),
            seg_logits=w.seg_logits.to(dtype),
            seg_masks=w.seg_masks.to(dtype),
            seg_query_feat=w.seg_query_feat,
        )


def _empty_like(w: TrackerWindow, num_frames: int) -> TrackerWindow:
    def rows(x: torch.Tensor) -> torch.Tensor:
        return torch.zeros((num_frames, *x.shape[1:]), dtype=_STORED, device=x.device)

    return TrackerWindow(
        frame_embeds=rows(w.frame_embeds),
        mask_features=rows(w.mask_features),
        seg_logits=rows(w.seg_logits),
        seg_masks=rows(w.seg_masks),
        seg_query_feat=w.seg_query_feat,
    )


def segment_clip(model, clip: Clip, cache: SegmenterCache | None = None) -> TrackerWindow:
    """The frozen segmenter's outputs for ``clip``: from ``cache`` when the clip has a source, else computed."""
    if cache is not None and clip.source is not None:
        return cache.window(model, clip)
    return _segment(model, clip.frames, clip.padded)
