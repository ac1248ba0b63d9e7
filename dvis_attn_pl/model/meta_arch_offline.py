"""``DVISDAQOffline``: the offline DVIS-DAQ model (segmenter + DAQ tracker + temporal refiner).

What the official ``DVIS_DAQ_offline`` does at inference, and how it is laid out here:

1. The segmenter runs over the video in windows (5 frames, or ``TEST.WINDOW_SIZE`` under
   ``MODEL.COMPAT == "fish-dvis"``) and the tracker follows window by window, exactly as online.
   The official code runs every segmenter window first and the tracker afterwards; the segmenter
   treats frames independently and the tracker carries its state across windows, so running them
   interleaved (as the online model does) gives the same numbers. The whole-video ``pred_embds``
   (T, Q, C), ``mask_features`` (T, C, h, w) and segmenter logits (T, Q, K+1) are kept, written
   into buffers allocated once (no concatenation copy). The segmenter masks are not kept: the
   official code stores them for the whole video but inference never reads them.
2. The tracker's sequences are collected as online (same noise filter, mean raw logits); each
   gets per-frame tracker embeddings with the frames it did not store filled with its final
   similarity-guided position (``refiner.padding_embed`` is an identity).
3. The top ``OFFLINE_TOPK_NUM`` sequences by foreground score are taken with
   ``topk(sorted=False)`` as the official code does (all of them, in creation order, when there
   are fewer than ``OFFLINE_TOPK_NUM``); this fixes the refiner's row order, which only matters
   for row ids and intermediates since the refiner is permutation-equivariant over instances.
4. When fewer than ``NUM_NEW_INS`` rows result, MinVIS naive-linked segmenter chains fill the
   rest: the top ones by foreground score, again ``topk(sorted=False)``, with no padding.
5. The refiner runs once on the N instances; its logits (frame 0 of the repeated logits) feed
   ``inference_video_vis``. Masks are decoded only for the rows the final top-k keeps (at most
   ``MAX_NUM``), in time chunks, instead of all N rows on the host as the official code does.

Memory (long videos): like the official model, ``pred_embds`` and ``mask_features`` of the whole
video stay on the device (the latter is the large one: T*C*h*w floats, ~8 GB for 300 frames at
480p with C=256). Set :attr:`DVISDAQOffline.mask_feature_device` to ``"cpu"`` to keep them on the
host instead; the refiner layers never read them and the mask decoding streams only the chunks it
needs. The tracker's per-frame sequence masks already live on the host.

Quirk kept from the official code: when the refiner would get at most one instance, the result
is empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from .meta_arch import (
    DVISDAQOnline,
    InferenceTrace,
    PredictionSource,
    VideoInput,
    compat_mode,
    empty_vis_output,
    inference_video_vis,
    prediction_sources,
)
from .minvis import naive_link, naive_link_ids
from .prefix_logits import pooled_prefix_logits
from .refiner import TemporalRefiner
from .tracker import CollectedSequences, TrackerWindow, foreground_score

TRACKED = "tracked"
NAIVE_LINK = "naive_link"


@dataclass
class VideoFeatures:
    """Whole-video segmenter outputs kept for the refiner and the naive linking."""

    frame_embeds: torch.Tensor  # (T, Q, C) decoder-normed segmenter queries, model device
    mask_features: torch.Tensor  # (T, C, h, w) pixel-decoder mask features, ``mask_feature_device``
    seg_logits: torch.Tensor  # (T, Q, K+1) final segmenter class logits, model device


@dataclass
class RefinerInstances:
    """The refiner's N instance rows: tracked sequences first, then naive-linked chains."""

    embeds: torch.Tensor  # (N, T, C) per-frame instance queries
    padding: torch.Tensor  # (N, T) bool, True where a tracked sequence stored no frame
    logits: torch.Tensor  # (N, K+1) online logits (mean raw tracker / segmenter logits)
    kinds: list[str]  # TRACKED or NAIVE_LINK per row
    sequence_ids: list[int]  # tracker sequence id per row, -1 for naive-linked rows
    official_ids: list[int]  # the official id list: sequence id, or the naive-link id
    minvis_rows: list[int]  # naive-link chain (segmenter query of frame 0) per row, -1 for tracked
    sources: list[PredictionSource]  # span/appearance per row (naive rows: whole video, no appearance)
    online_scores: torch.Tensor  # (n_seq,) foreground scores of every collected sequence

    def __len__(self) -> int:
        return int(self.embeds.shape[0])


@dataclass
class OfflinePredictionSource(PredictionSource):
    """A prediction of the offline model: its refiner row and temporal pooling weights as well."""

    refiner_id: int = -1  # row of the refiner input (= ``row``)
    kind: str = TRACKED  # TRACKED or NAIVE_LINK
    official_id: int = -1  # sequence id (tracked) or official naive-link id
    pooling_weights: list[float] = field(default_factory=list)  # (T,) softmax over time of the class pooling


@dataclass
class OfflineInferenceTrace(InferenceTrace):
    """:class:`InferenceTrace` plus the refiner's view; lists are indexed by refiner row."""

    refiner_ids: list[int] = field(default_factory=list)
    sequence_ids: list[int] = field(default_factory=list)  # -1 for naive-linked rows
    official_ids: list[int] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    minvis_rows: list[int] = field(default_factory=list)
    present: torch.Tensor | None = None  # (N, T) bool: frames where the row has its own data
    pooling_weights: torch.Tensor | None = None  # (N, T) float32, host
    class_logits: torch.Tensor | None = None  # (N, K+1) the refiner's class logits, host
    refiner_inputs: RefinerInputs | None = None  # only when ``keep_refiner_inputs`` is set (probes)
    online_scores: list[float] = field(default_factory=list)  # every collected sequence's fg score


@dataclass
class RefinerInputs:
    """What the refiner read for one video (model device): enough to run it again on a subset of frames."""

    instance_embeds: torch.Tensor  # (N, T, C)
    frame_embeds: torch.Tensor  # (T, Q, C)

    def run(self, refiner: TemporalRefiner, frame_sets: torch.Tensor) -> torch.Tensor:
        """Class logits (B, N, K+1) of the refiner shown only the frames ``frame_sets`` (B, T') of each
        variant (one batch: every variant keeps the same number of frames)."""
        idx = frame_sets.to(self.instance_embeds.device)
        inst = self.instance_embeds[:, idx].permute(1, 3, 2, 0)  # (N, B, T', C) -> (B, C, T', N)
        frames = self.frame_embeds[idx].permute(0, 3, 1, 2)  # (B, T', Q, C) -> (B, C, T', Q)
        out = refiner.refine(inst, frames)  # (B, T', N, C)
        logits, _ = refiner.classify(refiner.decoder_norm(out))
        return logits


def official_topk(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the official instance pick: ``arange`` when ``k`` exceeds the count, else
    ``topk(k, sorted=False)`` (whose order is the official row order on the same device type)."""
    if k > scores.numel():
        return torch.arange(scores.numel(), device=scores.device)
    return scores.topk(k, sorted=False).indices


class DVISDAQOffline(DVISDAQOnline):
    """Offline DVIS-DAQ: the online children plus ``refiner`` (official state-dict prefixes)."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.refiner = TemporalRefiner(cfg)
        self.offline_topk = int(cfg.MODEL.VIDEO_HEAD.OFFLINE_TOPK_NUM)
        if self.offline_topk < 0:
            raise ValueError(f"MODEL.VIDEO_HEAD.OFFLINE_TOPK_NUM must be >= 0, got {self.offline_topk}")
        self.fish_compat = compat_mode(cfg) == "fish-dvis"
        self.mask_feature_device: torch.device | str | None = None  # None: the model's device
        self.keep_refiner_inputs = False  # set by probes that re-run the refiner (deletion curves)

    # ------------------------------------------------------------------ windows
    def track_window(self, window: TrackerWindow, start_frame: int, resume: bool) -> None:
        """The tracker on one window: ``inference`` (official), ``forward_offline_mode`` (fish-dvis)."""
        if self.fish_compat:
            self.tracker.forward_offline_mode(window, start_frame, resume=resume)
        else:
            self.tracker.inference(window, start_frame, resume=resume)

    def run_windows(self, video: VideoInput, segmented: TrackerWindow | None = None) -> VideoFeatures:
        """Segmenter then tracker over every window, keeping the whole-video features.

        ``segmented``: the segmenter's outputs for all of the video's frames, already computed (a
        frozen segmenter in training); the tracker then runs on its windows without the segmenter."""
        self.capture_context.reset(video.video_id, video.num_frames)
        if segmented is not None and segmented.num_frames != video.num_frames:
            raise ValueError(f"segmented has {segmented.num_frames} frames, the video {video.num_frames}")
        store = self.device if self.mask_feature_device is None else torch.device(self.mask_feature_device)
        feats: VideoFeatures | None = None
        for w, start, end in self.windows(video.num_frames):
            if segmented is None:
                seg_out = self.run_segmenter(video, w, start, end)
                window = self.tracker_window(seg_out)
                del seg_out
            else:
                window = segmented.select(slice(start, end))
            if feats is None:
                feats = self._allocate_features(window, video.num_frames, store)
            feats.frame_embeds[start:end] = window.frame_embeds
            feats.mask_features[start:end] = window.mask_features
            feats.seg_logits[start:end] = window.seg_logits
            self.track_window(window, video.first_frame + start, resume=start > 0 or video.keep)
            del window
        return feats

    @staticmethod
    def _allocate_features(window: TrackerWindow, num_frames: int, store: torch.device) -> VideoFeatures:
        def like(x: torch.Tensor, device: torch.device) -> torch.Tensor:
            return torch.empty((num_frames, *x.shape[1:]), dtype=x.dtype, device=device)

        return VideoFeatures(
            frame_embeds=like(window.frame_embeds, window.frame_embeds.device),
            mask_features=like(window.mask_features, store),
            seg_logits=like(window.seg_logits, window.seg_logits.device),
        )

    # ------------------------------------------------------------------ instances
    def common_inference(
        self, video: VideoInput, segmented: TrackerWindow | None = None
    ) -> tuple[VideoFeatures, RefinerInstances]:
        """Windows, sequence collection, top-k sequences and naive-link padding (official
        ``common_inference``). Ends the tracker's call (dead sequences are released).
        ``segmented``: precomputed segmenter outputs of every frame (see :meth:`run_windows`)."""
        feats = self.run_windows(video, segmented)
        memory = self.tracker.memory
        collected = memory.collect(video.first_frame, video.num_frames, self.noise_frame_num)
        try:
            instances = self._select_instances(video, feats, collected)
        finally:
            memory.end_call()
        return feats, instances

    def _select_instances(
        self, video: VideoInput, feats: VideoFeatures, collected: CollectedSequences
    ) -> RefinerInstances:
        frames, queries, channels = feats.frame_embeds.shape
        device = feats.frame_embeds.device
        n_seq = len(collected)
        if n_seq:
            scores = foreground_score(collected.logits)
            picked = official_topk(scores, self.offline_topk)
            rows = picked.cpu()
            embeds = collected.embeds().index_select(0, picked.to(device))
            logits = collected.logits.index_select(0, picked.to(collected.logits.device))
            stored, _ = collected.frame_table(rows)
            padding = ~stored
            seq_ids = collected.seq_ids[rows].tolist()
            sources = [replace(s, row=i) for i, s in enumerate(prediction_sources(collected, rows))]
        else:
            scores = feats.seg_logits.new_zeros((0,))
            embeds = feats.frame_embeds.new_zeros((0, frames, channels))
            logits = feats.seg_logits.new_zeros((0, feats.seg_logits.shape[-1]))
            padding = torch.zeros((0, frames), dtype=torch.bool)
            seq_ids, sources = [], []
        kinds = [TRACKED] * len(seq_ids)
        official, minvis_rows = list(seq_ids), [-1] * len(seq_ids)

        num_left = self.tracker.num_new_ins - len(seq_ids)
        if num_left > 0:
            if num_left > queries:
                raise ValueError(
                    f"MODEL.VIDEO_HEAD.NUM_NEW_INS leaves {num_left} instances to fill but the segmenter "
                    f"has only {queries} queries"
                )
            links = naive_link(feats.frame_embeds, feats.seg_logits)
            chains = official_topk(foreground_score(links.logits), num_left)
            embeds = torch.cat([embeds, links.embeds.index_select(0, chains).to(embeds.dtype)])
            logits = torch.cat([logits, links.logits.index_select(0, chains).to(logits.dtype)])
            padding = torch.cat([padding, torch.zeros((num_left, frames), dtype=torch.bool)])
            base = len(seq_ids)
            for j, chain in enumerate(chains.tolist()):
                sources.append(
                    PredictionSource(row=base + j, seq_id=-1, start_frame=0, end_frame=frames, appearance=[])
                )
                minvis_rows.append(chain)
            kinds += [NAIVE_LINK] * num_left
            seq_ids += [-1] * num_left
            official += naive_link_ids(num_left, video.first_frame)
        return RefinerInstances(
            embeds=embeds,
            padding=padding,
            logits=logits,
            kinds=kinds,
            sequence_ids=seq_ids,
            official_ids=official,
            minvis_rows=minvis_rows,
            sources=sources,
            online_scores=scores,
        )

    # ------------------------------------------------------------------ refiner
    def run_refiner(self, video: VideoInput, feats: VideoFeatures, instances: RefinerInstances) -> dict:
        """The refiner on the N instances (masks not decoded: see :meth:`decode_masks`)."""
        ctx = self.capture_context
        ctx.stage = "refiner"
        ctx.window_index = -1
        ctx.frame_start, ctx.frame_end = video.first_frame, video.first_frame + video.num_frames
        ctx.tracker_frame = -1
        ctx.tracker_row_seq_ids = list(instances.sequence_ids)  # refiner row -> sequence id (-1: naive link)
        device = feats.frame_embeds.device
        return self.refiner(
            instances.embeds.permute(2, 1, 0)[None],  # (1, C, T, N)
            instances.padding[None].to(device),
            feats.frame_embeds.permute(2, 0, 1)[None],  # (1, C, T, Q)
            decode_masks=False,
        )

    def decode_masks(self, refined: dict, feats: VideoFeatures, rows: torch.Tensor) -> torch.Tensor:
        """Mask logits (len(rows), T, h, w) float32 on the model's device; each distinct row once."""
        unique, inverse = torch.unique(rows, return_inverse=True)
        masks = self.refiner.decode_masks(
            refined["mask_embeds"], feats.mask_features[None], rows=unique, mask_device=self.device
        )[0]
        return masks.index_select(0, inverse.to(masks.device))

    # ------------------------------------------------------------------ inference
    def inference(self, batched_inputs: list[dict]) -> tuple[dict, OfflineInferenceTrace]:
        """Run one video: the official VIS dict and the call's :class:`OfflineInferenceTrace`."""
        video = VideoInput.from_batched_inputs(batched_inputs, self.size_divisibility)
        feats, instances = self.common_inference(video)
        info = OfflineInferenceTrace(
            video_id=video.video_id,
            num_frames=video.num_frames,
            first_frame=video.first_frame,
            image_size=video.image_size,
            padded_size=video.padded_size,
            output_size=video.output_size,
            row_seq_ids=list(instances.sequence_ids),
            tracker_rows=list(self.tracker.row_history),
            refiner_ids=list(range(len(instances))),
            sequence_ids=list(instances.sequence_ids),
            official_ids=list(instances.official_ids),
            kinds=list(instances.kinds),
            minvis_rows=list(instances.minvis_rows),
            present=~instances.padding.cpu(),
            online_scores=instances.online_scores.float().cpu().tolist(),
        )
        if len(instances) <= 1:  # official: a single refiner instance gives an empty result
            return empty_vis_output(video.image_size), info
        refined = self.run_refiner(video, feats, instances)
        if self.keep_refiner_inputs:
            info.refiner_inputs = RefinerInputs(instances.embeds, feats.frame_embeds)
        pooling = refined["pooling_weights"][0].float().cpu()  # (N, T)
        info.pooling_weights = pooling
        info.class_logits = refined["pred_logits"][0, 0].float().cpu()
        output, top = inference_video_vis(
            refined["pred_logits"][0, 0],
            lambda rows: self.decode_masks(refined, feats, rows),
            torch.arange(len(instances)),
            video.image_size,
            video.output_size,
            video.padded_size,
            self.num_classes,
            self.max_num,
            device=self.device,
        )
        info.predictions = [self._prediction(instances, int(r), pooling) for r in top.rows.tolist()]
        info.prefix_logits = self.prefix_logits(refined)
        return output, info

    def prefix_logits(self, refined: dict) -> torch.Tensor:
        """(N, T, K+1) class logits of the temporal pooling restricted to frames 0..k, every k (host)."""
        normed = self.refiner.decoder_norm(refined["pred_embds"][0].permute(2, 1, 0))  # (C,T,N) -> (N,T,C)
        scores = self.refiner.activation_proj(normed)  # a module call: a knockout's hook applies here too
        return pooled_prefix_logits(scores[..., 0], normed, self.refiner.class_embed).cpu()

    @staticmethod
    def _prediction(instances: RefinerInstances, row: int, pooling: torch.Tensor) -> OfflinePredictionSource:
        src = instances.sources[row]
        return OfflinePredictionSource(
            row=row,
            seq_id=src.seq_id,
            start_frame=src.start_frame,
            end_frame=src.end_frame,
            appearance=list(src.appearance),
            refiner_id=row,
            kind=instances.kinds[row],
            official_id=instances.official_ids[row],
            pooling_weights=pooling[row].tolist(),
        )
