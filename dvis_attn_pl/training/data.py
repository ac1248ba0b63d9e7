"""Training videos in memory and the per-step samples drawn from them.

Every video of a YTVIS json with annotations is decoded once: frames resized as at test time
(uint8, (T, 3, h, w)) and each annotated object's masks as soft targets at the resolution of the
mask features (stride 4 of the padded input): the fraction of each 4x4 cell the object covers.
Samples are drawn by index from a seeded generator, so a step's sample is the same on every run
and under DDP each rank draws different indices of the same sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ..data.rle import decode_rle
from ..data.transforms import ShortestEdgeResize, padded_size
from ..data.ytvis_json import YTVISData
from ..utils.errors import UserError

MASK_STRIDE = 4  # the pixel decoder's mask features are at 1/4 of the padded input


@dataclass
class TrainVideo:
    """One annotated video, ready for training."""

    video_id: int
    frames: torch.Tensor  # (T, 3, h, w) uint8, resized as at test time
    padded: tuple[int, int]  # (Hp, Wp) after padding to the size divisibility
    masks: torch.Tensor  # (N, T, Hp/4, Wp/4) float16 soft targets
    labels: torch.Tensor  # (N,) int64 contiguous class ids

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])


@dataclass(frozen=True)
class ClipSource:
    """Where a clip's frames come from: which training video, which of its frames, mirrored or not."""

    video: int  # index into the list of training videos
    frames: torch.Tensor  # (t,) int64 frame indices, in the clip's order
    flip: bool


@dataclass
class Clip:
    """Consecutive frames of one video and its objects' targets over them."""

    frames: torch.Tensor  # (t, 3, h, w) uint8
    padded: tuple[int, int]
    masks: torch.Tensor  # (N, t, hm, wm) float32 soft targets (objects absent from the clip removed)
    labels: torch.Tensor  # (N,) int64
    source: ClipSource | None = None  # None: frames not drawn from a list of training videos

    def present(self) -> torch.Tensor:
        """(N, t) bool: where each object has at least one pixel."""
        return self.masks.flatten(2).amax(dim=2) > 0


def _target_masks(ann_segms, height: int, width: int, size: tuple[int, int], padded: tuple[int, int]) -> np.ndarray:
    """(T, Hp/4, Wp/4) float16: each frame's mask resized like the frame, padded, area-pooled by 4."""
    full = np.stack(
        [decode_rle(s) if s is not None else np.zeros((height, width), bool) for s in ann_segms]
    ).astype(np.float32)
    t = torch.from_numpy(full)[:, None]
    t = F.interpolate(t, size=size, mode="bilinear", align_corners=False)
    t = F.pad(t, (0, padded[1] - size[1], 0, padded[0] - size[0]))
    t = F.avg_pool2d(t, MASK_STRIDE)
    return t[:, 0].clamp_(0, 1).to(torch.float16).numpy()


def load_training_videos(data: YTVISData, frames_root: Path, cfg) -> list[TrainVideo]:
    """Decode every annotated video of ``data`` (frames under ``frames_root``) for training."""
    if not data.has_annotations or not data.annotations:
        raise UserError(f"{data.source}: has no annotations; training needs labelled videos")
    resize = ShortestEdgeResize.from_cfg(cfg)
    div = max(int(cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY), MASK_STRIDE, 1)
    to_label = data.dataset_id_to_contiguous
    by_video = data.annotations_by_video()
    videos = []
    for v in data.videos:
        anns = by_video.get(v.id, [])
        if not anns:
            continue
        frames = []
        for name in v.file_names:
            with Image.open(frames_root / name) as im:
                frames.append(resize(np.asarray(im.convert("RGB"))))
        size = tuple(frames[0].shape[-2:])
        padded = padded_size(size[0], size[1], div)
        masks = np.stack([_target_masks(a.segmentations, v.height, v.width, size, padded) for a in anns])
        videos.append(
            TrainVideo(
                video_id=v.id,
                frames=torch.stack(frames),
                padded=padded,
                masks=torch.from_numpy(masks),
                labels=torch.tensor([to_label[a.category_id] for a in anns], dtype=torch.int64),
            )
        )
    return videos


def clip_of(video: TrainVideo, start: int, length: int, flip: bool, index: int | None = None) -> Clip:
    """Frames ``[start, start+length)`` of ``video`` (mirrored left-right when ``flip``); ``index``:
    the video's place in the training list, recorded as the clip's :class:`ClipSource`."""
    frames = video.frames[start : start + length]
    masks = video.masks[:, start : start + length].float()
    keep = masks.flatten(1).amax(dim=1) > 0
    masks, labels = masks[keep], video.labels[keep]
    if flip:  # mirror the image, then the padded target grid over the image's own width
        frames = frames.flip(-1)
        w_cells = -(-frames.shape[-1] // MASK_STRIDE)
        masks = torch.cat([masks[..., :w_cells].flip(-1), masks[..., w_cells:]], dim=-1)
    source = None if index is None else ClipSource(index, torch.arange(start, start + length), flip)
    return Clip(frames=frames, padded=video.padded, masks=masks, labels=labels, source=source)


class ClipSamples(Dataset):
    """``length`` samples, sample ``i`` = ``clips_per_sample`` clips drawn with generator seed (seed, i).

    ``clip_frames`` 1 gives single frames (the segmenter stage). ``shuffle_frames`` permutes each clip's
    frames (and targets) at random: a control model trained so cannot learn the order of frames.
    """

    def __init__(
        self, videos: list[TrainVideo], length: int, clip_frames: int, clips_per_sample: int, seed: int,
        shuffle_frames: bool = False,
    ):
        if not videos:
            raise UserError("no annotated video to train on")
        self.videos = videos
        self.length = length
        self.clip_frames = clip_frames
        self.clips_per_sample = clips_per_sample
        self.seed = seed
        self.shuffle_frames = shuffle_frames

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> list[Clip]:
        rng = np.random.default_rng([self.seed, index])
        clips = []
        for _ in range(self.clips_per_sample):
            index = int(rng.integers(len(self.videos)))
            video = self.videos[index]
            length = min(self.clip_frames, video.num_frames)
            start = int(rng.integers(video.num_frames - length + 1))
            clip = clip_of(video, start, length, flip=bool(rng.random() < 0.5), index=index)
            if self.shuffle_frames:
                order = torch.as_tensor(rng.permutation(length))
                source = replace(clip.source, frames=clip.source.frames[order])
                clip = Clip(clip.frames[order], clip.padded, clip.masks[:, order], clip.labels, source)
            clips.append(clip)
        return clips


def collate_clips(batch: list[list[Clip]]) -> list[Clip]:
    """Samples are lists of clips; a batch is their concatenation."""
    return [clip for sample in batch for clip in sample]
