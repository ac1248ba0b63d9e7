"""The frozen segmenter's outputs, kept per training frame and reused by every clip.

In the tracker and refiner stages the segmenter is frozen (eval mode, no gradient), and it treats
every frame on its own, so the outputs for a frame never change during the stage. Running it again
for every clip cost most of those stages' time (about 85 % of a refiner step on 2 CPU cores). This
cache keeps each frame's outputs (per mirroring) from the first clip that holds it, and every
clip takes its frames' rows, batched exactly as the stage batches them without the cache. The rows
keep the model's dtype and live on its device, so a step computes what it would have computed
without the cache (on the 2-core CPU machine the losses are bit-identical, and so are the trained
weights).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..model.tracker import TrackerWindow
from .data import Clip, TrainVideo

__all__ = ["SegmenterCache", "segment_clip"]


def _segment(model, frames: torch.Tensor, padded: tuple[int, int]) -> TrackerWindow:
    with torch.no_grad():
        return model.tracker_window(model.sem_seg_head(model.backbone(model.preprocess(frames, padded))))


class SegmenterCache:
    """Per training video and mirroring, the frozen segmenter's outputs of the frames held so far.

    ``chunk``: how many frames the stage segments in one batch without the cache (the tracker stage:
    its clip length; the refiner stage: the model's window size, as ``run_windows`` does). A clip is
    split the same way; a chunk of that size is taken from the cache or segmented and kept, and a
    shorter chunk (a clip's or short video's tail) is segmented every time. CPU kernels are chosen by
    the batch's shape, so a frame segmented in a batch of another size would differ in the last bits
    (about 1e-6), which a training run amplifies; done so, a stage computes bit for bit what it
    computed without the cache."""

    def __init__(self, videos: list[TrainVideo], chunk: int) -> None:
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.videos = videos
        self.chunk = chunk
        self._windows: dict[tuple[int, bool], TrackerWindow] = {}
        self._done: dict[tuple[int, bool], torch.Tensor] = {}  # (T,) bool: rows held

    def __len__(self) -> int:
        """Frames held (over all videos and mirrorings)."""
        return int(sum(int(d.sum()) for d in self._done.values()))

    def clear(self) -> None:
        """Drop every stored row (a stage's end: the next stage's segmenter may differ)."""
        self._windows.clear()
        self._done.clear()

    def _chunk(self, model, index: int, flip: bool, frames: torch.Tensor) -> TrackerWindow:
        """The outputs of ``frames`` (one chunk): a full-size chunk from the cache where it holds all of
        them, else segmented and kept; a shorter (tail) chunk segmented, never looked up or kept."""
        video = self.videos[index]
        key = (index, flip)
        done = self._done.get(key)
        full = len(frames) == self.chunk
        if full and done is not None and bool(done[frames].all()):
            return self._windows[key].select(frames)
        images = video.frames[frames]
        w = _segment(model, images.flip(-1) if flip else images, video.padded)
        if not full:
            return w
        if done is None:
            self._windows[key] = _empty_like(w, video.num_frames)
            done = self._done[key] = torch.zeros(video.num_frames, dtype=torch.bool)
        stored = self._windows[key]
        new = ~done[frames]  # keep the rows held already as they are
        src, dst = torch.nonzero(new).flatten(), frames[new]
        device = stored.frame_embeds.device
        for name in TrackerWindow.PER_FRAME:
            getattr(stored, name)[dst.to(device)] = getattr(w, name)[src.to(device)]
        done[dst] = True
        return w

    def window(self, model, clip: Clip) -> TrackerWindow:
        """The segmenter's outputs for ``clip``'s frames, in the clip's frame order."""
        source = clip.source
        if source is None:
            raise ValueError("a clip without a source cannot be looked up; use segment_clip")
        parts = [
            self._chunk(model, source.video, source.flip, source.frames[start : start + self.chunk])
            for start in range(0, len(source.frames), self.chunk)
        ]
        return parts[0] if len(parts) == 1 else _concat(parts)


def _concat(parts: list[TrackerWindow]) -> TrackerWindow:
    return replace(parts[0], **{name: torch.cat([getattr(p, name) for p in parts]) for name in TrackerWindow.PER_FRAME})


def _empty_like(w: TrackerWindow, num_frames: int) -> TrackerWindow:
    return w.per_frame(lambda x: x.new_zeros((num_frames, *x.shape[1:])))


def segment_clip(model, clip: Clip, cache: SegmenterCache | None = None) -> TrackerWindow:
    """The frozen segmenter's outputs for ``clip``: from ``cache`` when the clip has a source, else computed."""
    if cache is not None and clip.source is not None:
        return cache.window(model, clip)
    return _segment(model, clip.frames, clip.padded)
