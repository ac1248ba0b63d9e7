"""``DVISDAQOnline``: the online DVIS-DAQ model (segmenter + DAQ tracker), inference only.

``model(batched_inputs)`` takes the official input (one video: ``image`` = T uint8 (3, h, w)
frames after the test-time resize, ``height``/``width`` = original size) and returns the official
VIS dict. The video is processed in windows of 5 frames (hard-coded in the official code;
``MODEL.MASK_FORMER.TEST.WINDOW_SIZE`` under ``MODEL.COMPAT == "fish-dvis"``): only the window's
frames are moved to the device, normalised and padded, run through the segmenter, then through
the tracker frame by frame. The tracker's sequences are then collected and
:func:`inference_video_vis` picks the top ``MAX_NUM`` (sequence, class) pairs.

Shared with the offline model: :class:`VideoInput`, :func:`select_topk`, :func:`resize_masks`,
:func:`inference_video_vis` and the windowing helpers of :class:`DVISDAQOnline`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..data.frames import LazyFrames
from ..data.transforms import normalize_and_pad
from .backbone.base import build_backbone
from .capture import CaptureContext
from .criterion_stub import CriterionStub
from .prefix_logits import mean_prefix_logits
from .sem_seg_head import MaskFormerHead
from .tracker import CollectedSequences, TrackerWindow, VideoInstanceCutter

OFFICIAL_WINDOW = 5  # the official run_window_inference overrides its argument with 5
MASK_FILL = -1e4  # mask logit of frames a sequence did not store
RESIZE_BUDGET = 1 << 27  # float elements per chunk of the final mask resizing (512 MiB)

MaskSource = torch.Tensor | Callable[[torch.Tensor], torch.Tensor]


# ----------------------------------------------------------------------------- input
def _frame_hw(frame: object, t: int) -> tuple[int, int]:
    """``(h, w)`` of input frame ``t``, which must be a (3, h, w) tensor."""
    if not isinstance(frame, torch.Tensor) or frame.dim() != 3 or frame.shape[0] != 3:
        shape = tuple(frame.shape) if isinstance(frame, torch.Tensor) else type(frame).__name__
        raise ValueError(f"batched_inputs[0]['image'][{t}] must be a (3, h, w) tensor, got {shape}")
    return int(frame.shape[-2]), int(frame.shape[-1])


@dataclass
class VideoInput:
    """One video of ``batched_inputs``, validated; frames stay where the caller put them."""

    frames: Sequence[torch.Tensor]  # T x uint8 (3, h, w): a list, or a LazyFrames decoded per window
    image_size: tuple[int, int]  # (h, w) of the first frame: resized, unpadded
    padded_size: tuple[int, int]  # (Hp, Wp) after padding to the size divisibility
    output_size: tuple[int, int]  # (H, W) original size
    video_id: object = None
    keep: bool = False  # long videos fed in parts: continue the tracker instead of resetting it
    first_frame: int = 0  # absolute index of frames[0] (``long_video_start_fidx``)

    @property
    def num_frames(self) -> int:
        return len(self.frames)

    @classmethod
    def from_batched_inputs(cls, batched_inputs: list[dict], size_divisibility: int) -> VideoInput:
        """Read ``batched_inputs[0]`` (the official test loader gives one video per batch)."""
        if not isinstance(batched_inputs, (list, tuple)) or len(batched_inputs) != 1:
            raise ValueError("batched_inputs must be a list with exactly one video dict")
        item = batched_inputs[0]
        if "image" not in item:
            raise ValueError("batched_inputs[0] has no 'image' (the list of (3, h, w) uint8 frames)")
        lazy = isinstance(item["image"], LazyFrames)  # kept lazy: windows are sliced and decoded one by one
        frames = item["image"] if lazy else list(item["image"])
        if len(frames) == 0:
            raise ValueError("batched_inputs[0]['image'] is empty: a video needs at least one frame")
        if lazy:  # one size for every frame (checked on decode); read without decoding when known
            h, w = frames.frame_size or _frame_hw(frames[0], 0)
            max_h, max_w = h, w
        else:
            sizes = [_frame_hw(frame, t) for t, frame in enumerate(frames)]
            h, w = sizes[0]
            max_h, max_w = max(s[0] for s in sizes), max(s[1] for s in sizes)
        div = max(int(size_divisibility), 1)
        padded = (-(-max_h // div) * div, -(-max_w // div) * div)
        start = int(item.get("long_video_start_fidx", -1))
        return cls(
            frames=frames,
            image_size=(h, w),
            padded_size=padded,
            output_size=(int(item.get("height", h)), int(item.get("width", w))),
            video_id=item.get("video_id"),
            keep=bool(item.get("keep", False)),
            first_frame=max(start, 0),
        )


# ----------------------------------------------------------------------------- output
@dataclass
class TopK:
    """The selected (row, class) pairs, best score first."""

    scores: torch.Tensor  # (k,)
    labels: torch.Tensor  # (k,) contiguous class ids
    rows: torch.Tensor  # (k,) rows of the instance matrix


def select_topk(pred_cls: torch.Tensor, num_classes: int, max_num: int) -> TopK:
    """Top ``max_num`` entries of softmax(pred_cls)[:, :K] over all (row, class) pairs.

    The official code takes ``topk(sorted=False)``, whose order is an implementation detail; here
    the order is deterministic: descending score, ties by ascending flat index (row-major), i.e. a
    stable sort. When fewer than ``max_num`` pairs exist all are returned (the official raises).
    """
    scores = F.softmax(pred_cls, dim=-1)[:, :-1]
    flat = scores.flatten()
    k = min(int(max_num), flat.numel())
    order = torch.sort(flat, descending=True, stable=True).indices[:k]
    return TopK(scores=flat[order], labels=order % num_classes, rows=order // num_classes)


def resize_masks(
    masks: torch.Tensor,
    padded_size: tuple[int, int],
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    device: torch.device | None = None,
    budget: int = RESIZE_BUDGET,
) -> torch.Tensor:
    """Mask logits (k, T, h, w) -> bool (k, T, H, W) on the host, as the official post-processing:
    bilinear to the padded input size, crop to the resized image, bilinear to the original size,
    ``> 0``. Runs in float32 on ``device`` (default: the masks' device) in chunks of frames so the
    largest intermediate stays under ``budget`` elements."""
    k, t = masks.shape[:2]
    device = masks.device if device is None else torch.device(device)
    out = torch.empty((k, t, *output_size), dtype=torch.bool)
    planes = masks.reshape(k * t, 1, *masks.shape[2:])
    per_plane = max(padded_size[0] * padded_size[1], output_size[0] * output_size[1])
    step = max(1, budget // max(per_plane, 1))
    flat_out = out.view(k * t, *output_size)
    with torch.autocast(device_type=device.type, enabled=False):
        for s in range(0, k * t, step):
            chunk = planes[s : s + step].to(device=device, dtype=torch.float32)
            chunk = F.interpolate(chunk, size=padded_size, mode="bilinear", align_corners=False)
            chunk = chunk[:, :, : image_size[0], : image_size[1]]
            chunk = F.interpolate(chunk, size=output_size, mode="bilinear", align_corners=False)
            flat_out[s : s + step] = (chunk[:, 0] > 0).cpu()
    return out


def inference_video_vis(
    pred_cls: torch.Tensor,
    pred_masks: MaskSource,
    pred_ids: torch.Tensor,
    image_size: tuple[int, int],
    output_size: tuple[int, int],
    padded_size: tuple[int, int],
    num_classes: int,
    max_num: int,
    device: torch.device | None = None,
) -> tuple[dict, TopK]:
    """The official ``inference_video_vis``: returns the VIS output dict and the selection.

    ``pred_cls`` (n, K+1) logits; ``pred_masks`` either (n, T, h, w) mask logits or a callable
    giving those of the requested rows (so long videos materialise only the selected rows);
    ``pred_ids`` (n,) the id reported per row.
    """
    if pred_cls is None or len(pred_cls) == 0:
        empty = {"image_size": tuple(output_size), "pred_scores": [], "pred_labels": []}
        empty.update({"pred_masks": [], "pred_ids": [], "task": "vis"})
        return empty, TopK(*(torch.zeros(0, dtype=torch.int64),) * 3)
    top = select_topk(pred_cls, num_classes, max_num)
    rows = top.rows
    if callable(pred_masks):
        selected = pred_masks(rows.cpu())
    else:
        selected = pred_masks[rows.to(pred_masks.device)]
    masks = resize_masks(selected, padded_size, image_size, output_size, device=device)
    output = {
        "image_size": tuple(output_size),
        "pred_scores": top.scores.float().tolist(),
        "pred_labels": top.labels.tolist(),
        "pred_masks": list(masks.unbind(0)),
        "pred_ids": pred_ids.cpu()[rows.cpu()].tolist(),
        "task": "vis",
    }
    return output, top


def empty_vis_output(image_size: tuple[int, int]) -> dict:
    """The official model's early return when the tracker kept no sequence: note that its
    ``image_size`` is then the *resized* size and it carries ``segments_infos``."""
    return {
        "image_size": tuple(image_size),
        "pred_scores": [],
        "pred_labels": [],
        "pred_masks": [],
        "pred_ids": [],
        "segments_infos": [],
        "task": "vis",
    }


@dataclass
class PredictionSource:
    """Where one output prediction came from. Frame indices count from the call's first frame."""

    row: int  # row of the instance matrix (= pred_ids entry)
    seq_id: int  # tracker sequence id (creation index within the video)
    start_frame: int  # first frame the sequence stored
    end_frame: int  # one past its last stored frame
    appearance: list[bool]  # per stored frame: valid (True) or carried while invalid (False)


@dataclass
class InferenceTrace:
    """What the harness needs beyond the official outputs of one video: returned beside them by
    :meth:`DVISDAQOnline.run_with_trace` (the model keeps no copy)."""

    video_id: object
    num_frames: int
    first_frame: int  # absolute index of the call's first frame (long videos)
    image_size: tuple[int, int]  # resized, unpadded (h, w)
    padded_size: tuple[int, int]  # (Hp, Wp)
    output_size: tuple[int, int]  # original (H, W)
    predictions: list[PredictionSource] = field(default_factory=list)
    row_seq_ids: list[int] = field(default_factory=list)  # sequence id of every instance row
    prefix_logits: torch.Tensor | None = None  # (rows, T, K+1) class logits after the first k frames
    tracker_rows: list[tuple[int, list[int]]] = field(default_factory=list)  # per tracker frame:
    # the sequence id each query row was assigned after that frame's decisions (-1: none)


def prediction_sources(collected: CollectedSequences, rows: torch.Tensor) -> list[PredictionSource]:
    """Sequence, span and appearance of each selected row."""
    if rows.numel() == 0:
        return []
    stored, valid = collected.frame_table(rows)
    sources = []
    for i, row in enumerate(rows.tolist()):
        frames = torch.nonzero(stored[i]).flatten()
        start, end = (int(frames[0]), int(frames[-1]) + 1) if frames.numel() else (0, 0)
        sources.append(
            PredictionSource(
                row=row,
                seq_id=int(collected.seq_ids[row]),
                start_frame=start,
                end_frame=end,
                appearance=valid[i, start:end][stored[i, start:end]].tolist(),
            )
        )
    return sources


# ----------------------------------------------------------------------------- model
def compat_mode(cfg) -> str:
    """``MODEL.COMPAT`` ("official" when the config does not have the key)."""
    return str(cfg.MODEL.get("COMPAT", "official")).lower()


class DVISDAQOnline(nn.Module):
    """Online DVIS-DAQ: children ``backbone``, ``sem_seg_head``, ``tracker``, ``daq_criterion``
    (the official state-dict prefixes)."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg)
        self.sem_seg_head = MaskFormerHead(cfg, self.backbone.output_shape())
        self.tracker = VideoInstanceCutter(cfg)
        self.daq_criterion = CriterionStub.from_cfg(cfg)
        self.register_buffer("pixel_mean", torch.tensor(cfg.MODEL.PIXEL_MEAN).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(cfg.MODEL.PIXEL_STD).view(-1, 1, 1), False)
        div = int(cfg.MODEL.MASK_FORMER.SIZE_DIVISIBILITY)
        self.size_divisibility = div if div >= 0 else int(getattr(self.backbone, "size_divisibility", 0))
        test = cfg.MODEL.MASK_FORMER.TEST
        self.num_classes = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
        self.max_num = int(test.MAX_NUM)
        self.noise_frame_num = int(cfg.MODEL.VIDEO_HEAD.NOISE_FRAME_NUM)
        self.window_size = int(test.WINDOW_SIZE) if compat_mode(cfg) == "fish-dvis" else OFFICIAL_WINDOW
        if self.window_size < 1:
            raise ValueError(f"MODEL.MASK_FORMER.TEST.WINDOW_SIZE must be >= 1, got {self.window_size}")
        task = str(test.TASK)
        if task != "vis":
            raise ValueError(f"MODEL.MASK_FORMER.TEST.TASK {task!r} is not supported; only 'vis' is")
        self.capture_context = CaptureContext()
        self.tracker.capture_context = self.capture_context

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def forward(self, batched_inputs: list[dict]) -> dict:
        """Official eval-mode forward: the VIS result of the one video in ``batched_inputs``."""
        return self.run_with_trace(batched_inputs)[0]

    def run_with_trace(self, batched_inputs: list[dict]) -> tuple[dict, InferenceTrace]:
        """The official VIS dict of the one video in ``batched_inputs`` and the call's
        :class:`InferenceTrace` (eval mode, like :meth:`forward`)."""
        if self.training:
            raise RuntimeError("DVISDAQOnline supports inference only; call model.eval() first")
        return self.inference(batched_inputs)

    # ------------------------------------------------------------------ windows
    def preprocess(self, frames: Sequence[torch.Tensor], padded_size: tuple[int, int]) -> torch.Tensor:
        """uint8 frames -> normalised, zero-padded (t, 3, Hp, Wp) on the model's device, in its dtype."""
        images = normalize_and_pad(
            [f.to(self.device, non_blocking=True) for f in frames],
            self.pixel_mean,
            self.pixel_std,
            self.size_divisibility,
        ).to(self.pixel_mean.dtype)  # normalised in float32, then the model's dtype (model.to(dtype))
        pad_h, pad_w = padded_size[0] - images.shape[-2], padded_size[1] - images.shape[-1]
        if pad_h < 0 or pad_w < 0:
            raise ValueError(
                f"a frame of {tuple(images.shape[-2:])} (padded) exceeds the video's padded size {padded_size}; "
                "all frames of a video must have the first frame's size"
            )
        if pad_h or pad_w:  # a window of smaller frames: pad to the video's size
            images = F.pad(images, (0, pad_w, 0, pad_h), value=0.0)
        return images

    def windows(self, num_frames: int) -> Iterator[tuple[int, int, int]]:
        """(window index, start, end) of the segmenter windows over ``num_frames`` frames."""
        for w, start in enumerate(range(0, num_frames, self.window_size)):
            yield w, start, min(start + self.window_size, num_frames)

    def run_segmenter(self, video: VideoInput, window_index: int, start: int, end: int) -> dict:
        """Backbone + segmenter head on frames [start, end); updates the capture context."""
        ctx = self.capture_context
        ctx.window_index = window_index
        ctx.frame_start = video.first_frame + start
        ctx.frame_end = video.first_frame + end
        ctx.stage = "segmenter"
        images = self.preprocess(video.frames[start:end], video.padded_size)
        return self.sem_seg_head(self.backbone(images))

    def tracker_window(self, seg_out: dict) -> TrackerWindow:
        """The tracker's view of a segmenter output."""
        return TrackerWindow.from_segmenter(seg_out, self.sem_seg_head.predictor.query_feat.weight)

    def run_windows(self, video: VideoInput) -> None:
        """Segmenter then tracker over every window; results stay in ``tracker.memory``."""
        self.capture_context.reset(video.video_id, video.num_frames)
        for w, start, end in self.windows(video.num_frames):
            seg_out = self.run_segmenter(video, w, start, end)
            window = self.tracker_window(seg_out)
            del seg_out
            self.tracker.inference(window, video.first_frame + start, resume=start > 0 or video.keep)

    # ------------------------------------------------------------------ inference
    def inference(self, batched_inputs: list[dict]) -> tuple[dict, InferenceTrace]:
        """Run one video: the official VIS dict and the call's :class:`InferenceTrace`."""
        video = VideoInput.from_batched_inputs(batched_inputs, self.size_divisibility)
        self.run_windows(video)
        memory = self.tracker.memory
        collected = memory.collect(video.first_frame, video.num_frames, self.noise_frame_num)
        info = InferenceTrace(
            video_id=video.video_id,
            num_frames=video.num_frames,
            first_frame=video.first_frame,
            image_size=video.image_size,
            padded_size=video.padded_size,
            output_size=video.output_size,
            row_seq_ids=collected.seq_ids.tolist(),
            tracker_rows=list(self.tracker.row_history),
        )
        if len(collected) == 0:
            output = empty_vis_output(video.image_size)
        else:
            output, top = inference_video_vis(
                collected.logits,
                lambda rows: collected.masks(rows, fill=MASK_FILL),
                torch.arange(len(collected)),
                video.image_size,
                video.output_size,
                video.padded_size,
                self.num_classes,
                self.max_num,
                device=self.device,
            )
            info.predictions = prediction_sources(collected, top.rows.cpu())
            frame_logits, stored = collected.frame_logits()
            info.prefix_logits = mean_prefix_logits(frame_logits, stored)
        self.tracker.end_call()
        return output, info
