"""The LightningModule: one video per test/predict step through the DVIS-DAQ model.

A step runs the official inference (windows, tracking, refiner) and returns a :class:`VideoResult`
holding the official outputs, the YTVIS result records, the per-prediction temporal information
(refiner id, tracker sequence id, frames where the instance is present, the class posterior as
frames accumulate) and the video's image dimensions. The result records (one compressed RLE per
frame) are encoded on a background thread while the next video runs: ``VideoResult.records``
waits for them. The metric takes a video's records once they are ready (at a later step, at the
latest at the epoch's end); callbacks (writers, attention capture, TensorBoard) consume the
result in their batch-end hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import lightning as L
import torch
from torch import nn

from .analysis.decision import foreground_probs, prefix_lengths, settle_frame
from .data.datamodule import is_placeholder
from .model.meta_arch import InferenceTrace, empty_vis_output
from .model.meta_arch_offline import OfflineInferenceTrace, OfflinePredictionSource
from .results import to_ytvis_records
from .utils.temporal_record import (
    CATEGORY_ID,
    CLASS_PROBS,
    DECISION_SETTLE_FRAME,
    FRAME_IMPORTANCE,
    LABEL_BY_FRAME,
    PRESENT_FRAMES,
    REFINER_ID,
    SCORE,
    SCORE_AFTER_K_FRAMES,
    SEQUENCE_ID,
    STORED_FRAMES,
    VIDEO_ID,
)

PREFIX_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


@dataclass
class VideoResult:
    """Everything one step produced for one video (host memory only). ``records`` may be given as a
    :class:`~concurrent.futures.Future` (encoding in progress); reading it waits for the list."""

    video_id: int
    num_frames: int
    outputs: dict
    records_pending: list[dict] | Future
    temporal: list[dict]
    dimensions: dict
    info: InferenceTrace | None = None  # the model call's trace (None: a model without one, an empty video)
    extras: dict = field(default_factory=dict)

    @property
    def records(self) -> list[dict]:
        if isinstance(self.records_pending, Future):
            self.records_pending = self.records_pending.result()
        return self.records_pending

    @property
    def records_ready(self) -> bool:
        return not isinstance(self.records_pending, Future) or self.records_pending.done()


class DVISDAQModule(L.LightningModule):
    """Wraps a DVIS-DAQ model for Lightning's test and predict loops."""

    def __init__(
        self,
        model: nn.Module,
        contiguous_to_dataset_id: Sequence[int],
        metric: nn.Module | None = None,
        prefix_fractions: Sequence[float] = PREFIX_FRACTIONS,
    ) -> None:
        super().__init__()
        self.model = model
        self.contiguous_to_dataset_id = list(contiguous_to_dataset_id)
        self.metric = metric
        self.prefix_fractions = tuple(prefix_fractions)
        self.frames_seen = 0
        self.videos_run = 0
        self.metric_results: dict | None = None
        self.resumed_videos: list[tuple[list[dict], dict]] = []  # (records, ground truth) of skipped videos
        self._encoder: ThreadPoolExecutor | None = None  # RLE encoding of the result records
        self._metric_pending: list[tuple[VideoResult, dict]] = []  # results whose records are on the way
        self._loop_ended = False  # set by on_test_end / on_predict_end: teardown need not move the model

    def _encode(self, outputs: dict, video_id) -> Future:
        """The video's YTVIS records, encoded on the background thread (one video at a time)."""
        if self._encoder is None:
            self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rle-encoder")
        return self._encoder.submit(to_ytvis_records, outputs, video_id, self.contiguous_to_dataset_id)

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Keep frames on the host: the model moves one segmenter window at a time."""
        return batch

    def forward(self, video: dict) -> dict:
        return self.model([video])

    def infer(self, video: dict) -> VideoResult:
        """Run one video and gather its outputs, records and temporal information."""
        self.videos_run += 1
        video_id = video["video_id"]
        num_frames = len(video["image"])
        if num_frames == 0:  # an empty video: nothing to run, no predictions
            outputs = empty_vis_output((int(video["height"]), int(video["width"])))
            return VideoResult(video_id, 0, outputs, [], [], self._dimensions(video, None))
        outputs, info = self.model.run_with_trace([video])
        records = self._encode(outputs, video_id)
        temporal = self._temporal_records(outputs, info, num_frames)
        for score, label, extra in zip(outputs["pred_scores"], outputs["pred_labels"], temporal):
            category = int(self.contiguous_to_dataset_id[int(label)])
            extra.update({VIDEO_ID: video_id, SCORE: float(score), CATEGORY_ID: category})
        self.frames_seen += num_frames
        return VideoResult(
            video_id=video_id,
            num_frames=num_frames,
            outputs=outputs,
            records_pending=records,
            temporal=temporal,
            dimensions=self._dimensions(video, info),
            info=info,
        )

    def _temporal_records(self, outputs: dict, info: InferenceTrace | None, num_frames: int) -> list[dict]:
        """Per prediction: refiner/sequence ids, frames present, and the class posterior over time."""
        n = len(outputs["pred_scores"])
        sources = [] if info is None else list(info.predictions)
        if info is None or len(sources) != n:
            return [{} for _ in range(n)]
        ks = prefix_lengths(num_frames, self.prefix_fractions)
        prefix = info.prefix_logits
        if n and prefix is not None:
            rows = torch.as_tensor([src.row for src in sources], dtype=torch.long)
            labels = torch.as_tensor(outputs["pred_labels"], dtype=torch.long)
            probs = foreground_probs(prefix[rows].float())  # (n, T, K)
            own = probs.gather(2, labels.view(n, 1, 1).expand(n, num_frames, 1))[..., 0]
            argmax = probs.nan_to_num(-1.0).argmax(dim=2)
            settle = settle_frame(argmax)
        class_probs = None
        if isinstance(info, OfflineInferenceTrace) and info.class_logits is not None:
            class_probs = foreground_probs(info.class_logits.float())  # (N, K) by refiner row
        temporal = []
        for i, src in enumerate(sources):
            offline = isinstance(src, OfflinePredictionSource)
            entry = {
                REFINER_ID: src.refiner_id if offline else None,
                SEQUENCE_ID: None if src.seq_id is None or src.seq_id < 0 else int(src.seq_id),
                PRESENT_FRAMES: [src.start_frame + j for j, ok in enumerate(src.appearance) if ok],
                STORED_FRAMES: [int(src.start_frame), int(src.end_frame)],
            }
            pooling = src.pooling_weights if offline else None
            if pooling:
                entry[FRAME_IMPORTANCE] = [round(float(w), 7) for w in pooling]
            if class_probs is not None:
                probs = class_probs[src.row].tolist()
                entry[CLASS_PROBS] = {
                    str(self.contiguous_to_dataset_id[c]): round(p, 6) for c, p in enumerate(probs)
                }
            if n and prefix is not None:
                entry[DECISION_SETTLE_FRAME] = int(settle[i])
                entry[LABEL_BY_FRAME] = [self.contiguous_to_dataset_id[c] for c in argmax[i].tolist()]
                entry[SCORE_AFTER_K_FRAMES] = {
                    str(k): (None if torch.isnan(own[i, k - 1]) else float(own[i, k - 1])) for k in ks
                }
            temporal.append(entry)
        return temporal

    @staticmethod
    def _dimensions(video: dict, info: InferenceTrace | None) -> dict:
        """Original, resized and padded sizes and the feature grid of each stride."""
        dims = {"original": [int(video["height"]), int(video["width"])], "num_frames": len(video["image"])}
        if info is not None:
            hp, wp = info.padded_size
            dims.update(
                resized=list(info.image_size),
                padded=[int(hp), int(wp)],
                feature_grids={f"stride_{s}": [-(-int(hp) // s), -(-int(wp) // s)] for s in (4, 8, 16, 32)},
            )
        return dims

    def test_step(self, batch: list[dict], batch_idx: int) -> VideoResult | None:
        (video,) = batch
        if is_placeholder(video):
            return None
        self._update_metric(wait=False)
        result = self.infer(video)
        if self.metric is not None and video.get("annotations") is not None:
            self._metric_pending.append((result, video))
        return result

    def _update_metric(self, wait: bool) -> None:
        """Feed the metric the videos whose records are encoded (all of them with ``wait``), in order."""
        while self._metric_pending and (wait or self._metric_pending[0][0].records_ready):
            result, video = self._metric_pending.pop(0)
            self.metric.update(result.records, video)

    def predict_step(self, batch: list[dict], batch_idx: int) -> VideoResult | None:
        (video,) = batch
        return None if is_placeholder(video) else self.infer(video)

    def on_test_epoch_start(self) -> None:
        """Add the videos a resumed run skipped (their stored records) to the metric, once."""
        if self.metric is not None and self.global_rank == 0:
            for records, ground_truth in self.resumed_videos:
                self.metric.update(records, ground_truth)

    def on_test_start(self) -> None:
        self._loop_ended = False

    def on_predict_start(self) -> None:
        self._loop_ended = False

    def on_test_end(self) -> None:
        self._loop_ended = True

    def on_predict_end(self) -> None:
        self._loop_ended = True

    def cpu(self) -> DVISDAQModule:
        """Move to the CPU, except after the loop: Lightning's strategy teardown moves the module
        back to the CPU, which an inference run never needs (0.75 s for ViT-L on a GPU)."""
        if self._loop_ended:
            return self
        return super().cpu()

    def teardown(self, stage: str) -> None:
        """Let the encoder thread finish its last video and stop."""
        if self._encoder is not None:
            self._encoder.shutdown(wait=True)
            self._encoder = None

    def on_test_epoch_end(self) -> None:
        if self.metric is None:
            return
        self._update_metric(wait=True)
        results = self.metric.compute()
        self.metric_results = results
        scalars = {f"metrics/{k}": float(v) for k, v in results.items() if not isinstance(v, dict)}
        if scalars:
            self.log_dict(scalars, sync_dist=False, rank_zero_only=True)
        self.metric.reset()
