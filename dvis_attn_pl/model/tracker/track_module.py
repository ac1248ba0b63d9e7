"""The DAQ tracker ``VideoInstanceCutter`` (state_dict prefix ``tracker.``): online, one frame at a time.

Frame 0 of a video: the segmenter's frame embeddings are refined by the tracker layers and every
query whose *segmenter* foreground score passes ``AUX_INFERENCE_SELECT_THRESHOLD`` opens a
sequence. Later frames use Dynamic Anchor Queries: the live sequences' last outputs followed by
``NUM_NEW_INS`` copies of the learned ``new_ins_embeds``; positions come from mask-pooled raw mask
features (segmenter masks for the anchors and the keys, the tracker's own masks, fused over time,
for the tracks). A query is valid when its *tracker* foreground score passes
``INFERENCE_SELECT_THRESHOLD`` (with ``OVIS_INFER`` a track also needs the slot branch's score to
pass ``DIS_FG_THRESHOLD``). Bookkeeping lives in :class:`~.sequence.SequenceMemory`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

from ..capture import CaptureContext
from ..layers import MLP, CrossAttentionLayer, FFNLayer, SelfAttentionLayer
from .sequence import AUTO, FrameUpdate, SequenceMemory
from .slot_attention import SlotCrossAttentionLayer


@dataclass(frozen=True)
class TrackerSettings:
    """Hyper-parameters of the tracker, read from the official config keys."""

    hidden_dim: int
    feedforward_dim: int
    num_heads: int
    num_layers: int
    num_classes: int
    num_queries: int
    num_new_ins: int
    num_slots: int
    inference_threshold: float
    aux_threshold: float
    keep_threshold: float
    ovis_infer: bool
    fish_compat: bool = False  # MODEL.COMPAT == "fish-dvis"
    kick_out_frames: int = 8  # hard-coded in the official tracker

    @classmethod
    def from_cfg(cls, cfg) -> TrackerSettings:
        mf, head = cfg.MODEL.MASK_FORMER, cfg.MODEL.VIDEO_HEAD
        settings = cls(
            hidden_dim=int(mf.HIDDEN_DIM),
            feedforward_dim=int(mf.DIM_FEEDFORWARD),
            num_heads=int(mf.NHEADS),
            num_layers=int(cfg.MODEL.TRACKER.DECODER_LAYERS),
            num_classes=int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES),
            num_queries=int(mf.NUM_OBJECT_QUERIES),
            num_new_ins=int(head.NUM_NEW_INS),
            num_slots=int(head.NUM_SLOTS),
            inference_threshold=float(head.INFERENCE_SELECT_THRESHOLD),
            aux_threshold=float(head.AUX_INFERENCE_SELECT_THRESHOLD),
            keep_threshold=float(head.DIS_FG_THRESHOLD),
            ovis_infer=bool(head.OVIS_INFER),
            fish_compat=str(cfg.MODEL.get("COMPAT", "official")).lower() == "fish-dvis",
        )
        if settings.num_new_ins > settings.num_queries:
            raise ValueError(
                f"MODEL.VIDEO_HEAD.NUM_NEW_INS ({settings.num_new_ins}) exceeds MODEL.MASK_FORMER."
                f"NUM_OBJECT_QUERIES ({settings.num_queries}): each new-instance query is anchored on one segmenter query"
            )
        return settings


@dataclass
class TrackerWindow:
    """Segmenter outputs for one window of frames, in the layout the tracker consumes."""

    frame_embeds: torch.Tensor  # (T, Q, C) decoder-normed segmenter query embeddings
    mask_features: torch.Tensor  # (T, C, h, w) raw pixel-decoder mask features
    seg_logits: torch.Tensor  # (T, Q, K+1) final segmenter class logits
    seg_masks: torch.Tensor  # (T, Q, h, w) final segmenter mask logits
    seg_query_feat: torch.Tensor  # (Q, C) the segmenter's learned ``query_feat`` (slot initialisation)

    @classmethod
    def from_segmenter(cls, out: dict[str, torch.Tensor], seg_query_feat: torch.Tensor) -> TrackerWindow:
        """From the segmenter head's output dict (official layouts: ``pred_embds`` (1,C,T,Q),
        ``mask_features`` (T,C,h,w), ``pred_logits`` (1,T,Q,K+1), ``pred_masks`` (1,Q,T,h,w))."""
        return cls(
            frame_embeds=out["pred_embds"][0].permute(1, 2, 0),
            mask_features=out["mask_features"],
            seg_logits=out["pred_logits"][0],
            seg_masks=out["pred_masks"][0].transpose(0, 1),
            seg_query_feat=seg_query_feat,
        )

    @property
    def num_frames(self) -> int:
        return int(self.frame_embeds.shape[0])

    # the fields with one row per frame (``seg_query_feat`` is shared by all frames)
    PER_FRAME: ClassVar[tuple[str, ...]] = ("frame_embeds", "mask_features", "seg_logits", "seg_masks")

    def per_frame(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> TrackerWindow:
        """This window with ``fn`` applied to every per-frame field."""
        return replace(self, **{name: fn(getattr(self, name)) for name in self.PER_FRAME})

    def select(self, frames: torch.Tensor | slice) -> TrackerWindow:
        """The window of the frames ``frames`` (indices or a slice, in the order given)."""
        return self.per_frame(lambda x: x[frames])


def foreground_score(logits: torch.Tensor) -> torch.Tensor:
    """Max softmax probability over the non-background classes (last class = background)."""
    return logits.softmax(dim=-1)[..., :-1].max(dim=-1)[0]


class VideoInstanceCutter(nn.Module):
    """The DVIS-DAQ tracker with the official parameter names (``tracker.*`` keys).

    Work the official code does but whose results inference never reads is skipped: the decoding
    head runs on the last layer only, and the slot branch (with its CPU Hungarian matching) runs
    only when ``OVIS_INFER`` needs it or a slot capture site is active. The outputs are the same
    either way.

    The meta-architecture sets :attr:`capture_context`; before each frame the tracker writes
    ``tracker_frame``, ``tracker_row_seq_ids`` (sequence id per query row, -1 for the
    new-instance anchor rows, and for every row at a video's first frame) and ``stage``.
    :attr:`row_history` keeps, per frame, the sequence id each row ended up with.
    """

    def __init__(self, cfg) -> None:
        super().__init__()
        s = self.settings = TrackerSettings.from_cfg(cfg)
        c = s.hidden_dim
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(c, s.num_heads) for _ in range(s.num_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(c, s.num_heads) for _ in range(s.num_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(c, s.feedforward_dim) for _ in range(s.num_layers)
        )
        self.slot_cross_attention_layers = nn.ModuleList(
            SlotCrossAttentionLayer(c, s.num_heads) for _ in range(s.num_layers)
        )
        self.slot_ffn_layers = nn.ModuleList(FFNLayer(c, s.feedforward_dim) for _ in range(s.num_layers))
        self.decoder_norm = nn.LayerNorm(c)
        self.class_embed = nn.Linear(c, s.num_classes + 1)
        self.pos_embed = MLP(c, c, c, 3)
        self.mask_embed = MLP(c, c, c, 3)
        self.mask_feature_proj = nn.Conv2d(c, c, kernel_size=1)
        self.new_ins_embeds = nn.Embedding(1, c)
        self.bg_slots = nn.Embedding(s.num_slots, c)

        self.memory = SequenceMemory(c, kick_out_frames=s.kick_out_frames)
        self.capture_context: CaptureContext | None = None
        self._rows: list[tuple[int, torch.Tensor]] = []  # per frame: sequence id per row, device

    # ------------------------------------------------------------------ public API
    @property
    def num_new_ins(self) -> int:
        return self.settings.num_new_ins

    def set_store_device(self, device) -> None:
        """Where per-frame sequence masks are kept: ``"auto"`` (default: on the model's device while
        they fit, see :class:`MaskStore`), ``"cpu"`` (like the official) or a device."""
        self.memory.store_device = device if str(device) == AUTO else torch.device(device)

    @property
    def row_history(self) -> list[tuple[int, list[int]]]:
        """Per tracked frame: ``(frame, sequence id of each query row)``, read from the device in one
        copy."""
        if not self._rows:
            return []
        flat = torch.cat([ids for _, ids in self._rows]).tolist()
        out, at = [], 0
        for frame, ids in self._rows:
            out.append((frame, flat[at : at + ids.numel()]))
            at += ids.numel()
        return out

    def reset(self) -> None:
        """Forget every sequence (the official ``_clear_memory``)."""
        self.memory.reset()
        self._rows = []

    def end_call(self) -> None:
        """After a video's result was read: drop per-frame records, keep live sequences (``keep``)."""
        self.memory.end_call()
        self._rows = []

    def forward(self, window: TrackerWindow, start_frame: int, resume: bool = False) -> None:
        """Same as :meth:`inference`."""
        self.inference(window, start_frame, resume)

    def inference(self, window: TrackerWindow, start_frame: int, resume: bool = False) -> None:
        """Track the frames of ``window`` (absolute indices from ``start_frame``); results go to
        :attr:`memory`. Without ``resume`` the memory is cleared at the window's first frame."""
        self._run(window, start_frame, resume, offline_mode=False)

    def forward_offline_mode(self, window: TrackerWindow, start_frame: int, resume: bool = False) -> None:
        """The official ``forward_offline_mode`` used at evaluation by fish-dvis: with
        ``OVIS_INFER``, track validity uses the mean of the main and slot logits (and fish-dvis caps
        the track queries)."""
        self._run(window, start_frame, resume, offline_mode=True)

    # ------------------------------------------------------------------ helpers
    def _slot_branch_needed(self) -> bool:
        if self.settings.ovis_infer:
            return True
        return any(
            layer.multihead_attn.capture is not None or layer.slot_attn.capture is not None
            for layer in self.slot_cross_attention_layers
        )

    def get_mask_pos_embed(
        self, masks: torch.Tensor, features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``pos_embed`` of the mean raw mask feature under each mask (``sigmoid > 0.5``).

        ``masks`` (n, h, w) logits, ``features`` (C, h, w) -> (positions (n, C), pooled (n, C)).
        The pooling runs in float32 with autocast off, as the official elementwise product and sum
        effectively do; the MLP follows the ambient precision.
        """
        binary = masks.sigmoid() > 0.5
        with torch.autocast(device_type=features.device.type, enabled=False):
            weights = binary.flatten(1).to(torch.float32)
            feats = features.flatten(1).to(torch.float32)
            pooled = (weights @ feats.transpose(0, 1)) / (weights.sum(dim=1, keepdim=True) + 1e-8)
        pooled = pooled.to(features.dtype)
        return self.pos_embed(pooled), pooled

    def match_with_embeds(self, track_feats: torch.Tensor, seg_feats: torch.Tensor) -> torch.Tensor:
        """Segmenter query index for each row of ``track_feats`` (M, C): Hungarian assignment on
        the cosine cost against ``seg_feats`` (Q, C); rows left unassigned take their argmin."""
        a = track_feats.detach()
        b = seg_feats.detach()
        a = a / (a.norm(dim=1)[:, None] + 1e-6)
        b = b / (b.norm(dim=1)[:, None] + 1e-6)
        cost = 1 - torch.mm(a, b.transpose(0, 1))
        choice = cost.argmin(dim=1)
        rows, cols = linear_sum_assignment(cost.cpu().to(torch.float64).numpy())
        choice[torch.as_tensor(rows, device=choice.device)] = torch.as_tensor(
            np.asarray(cols, dtype=np.int64), device=choice.device
        )
        return choice

    def prediction(
        self, outputs: torch.Tensor, mask_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode queries ``outputs`` (L, n, C) against projected ``mask_features`` (C, h, w):
        class logits (L, n, K+1) and mask logits (L, n, h, w)."""
        normed = self.decoder_norm(outputs)
        logits = self.class_embed(normed)
        masks = torch.einsum("lqc,chw->lqhw", self.mask_embed(normed), mask_features)
        return logits, masks

    def _set_context(self, frame: int, row_ids: torch.Tensor) -> None:
        ctx = self.capture_context
        if ctx is not None:
            ctx.tracker_frame = frame
            ctx.set_tracker_rows(row_ids)  # read from the device only if a capture asks for it
            ctx.stage = "tracker"

    # ------------------------------------------------------------------ the frame loop
    def _run(self, window: TrackerWindow, start_frame: int, resume: bool, offline_mode: bool) -> None:
        proj = self.mask_feature_proj(window.mask_features)
        for i in range(window.num_frames):
            first = i == 0 and not resume
            if first:
                self.reset()
            self._track_frame(window, i, proj[i], start_frame + i, first, offline_mode)
        self.memory.end_window()

    def _track_frame(
        self, window: TrackerWindow, i: int, proj: torch.Tensor, frame: int, first: bool, offline_mode: bool
    ) -> None:
        s = self.settings
        frame_embeds = window.frame_embeds[i][:, None, :]  # (Q, 1, C)
        raw = window.mask_features[i]
        slot_logits = None
        if first:
            self._set_context(frame, torch.full((frame_embeds.shape[0],), -1, device=frame_embeds.device))
            out = frame_embeds
            for j in range(s.num_layers):
                out = self.transformer_cross_attention_layers[j](out, frame_embeds)
                out = self.transformer_self_attention_layers[j](out)
                out = self.transformer_ffn_layers[j](out)
            num_tracks = 0
        else:
            track_q = self.memory.track_queries(frame_embeds)
            track_pos = self.memory.track_positions(frame_embeds)
            if offline_mode and s.fish_compat:  # the fork caps the track queries at 200 - NUM_NEW_INS
                track_q, track_pos = track_q[: 200 - s.num_new_ins], track_pos[: 200 - s.num_new_ins]
            num_tracks = track_q.shape[0]
            anchor_ids = torch.full((s.num_new_ins,), -1, device=frame_embeds.device)
            self._set_context(frame, torch.cat([self.memory.live[:num_tracks], anchor_ids]))
            frame_pos, _ = self.get_mask_pos_embed(window.seg_masks[i], raw)
            frame_pos = frame_pos[:, None, :]
            anchors = self.new_ins_embeds.weight[:, None, :].expand(s.num_new_ins, 1, -1)
            # torch.cat promotes mixed dtypes (autocast) exactly as the official concatenations do
            out = torch.cat([track_q, anchors])
            query_pos = torch.cat([track_pos, frame_pos[: s.num_new_ins]])
            for j in range(s.num_layers):
                out = self.transformer_cross_attention_layers[j](
                    out, frame_embeds, pos=frame_pos, query_pos=query_pos
                )
                out = self.transformer_self_attention_layers[j](out)
                out = self.transformer_ffn_layers[j](out)
            if self._slot_branch_needed():
                slot_logits = self._slot_branch(window, frame_embeds, track_q, track_pos)

        last = out[:, 0]  # (Nq, C): only the last layer is decoded
        logits, masks = self.prediction(last[None], proj)
        logits, masks = logits[0], masks[0]
        positions, _ = self.get_mask_pos_embed(masks, raw)

        valid = self._validity(window, i, first, logits, slot_logits, num_tracks, offline_mode)
        row_ids = self.memory.update(
            FrameUpdate(
                frame=frame, outputs=last, logits=logits, masks=masks, positions=positions, valid=valid
            )
        )
        self._rows.append((frame, row_ids))

    def _slot_branch(
        self,
        window: TrackerWindow,
        frame_embeds: torch.Tensor,
        track_q: torch.Tensor,
        track_pos: torch.Tensor,
    ) -> torch.Tensor:
        """Track queries and background slots compete for the frame queries; returns the last
        slot layer's class logits (q'+S, K+1)."""
        bg = self.bg_slots.weight[:, None, :]
        slot_keys = torch.cat([track_q, bg])
        seg_feat = window.seg_query_feat
        chosen = self.match_with_embeds(slot_keys[:, 0], seg_feat)
        slots = seg_feat[chosen][:, None, :]
        slot_query = torch.cat([track_pos, bg])
        for j in range(self.settings.num_layers):
            slots = self.slot_cross_attention_layers[j](
                slots, frame_embeds, query_pos=slot_keys, slot_query=slot_query
            )
            slots = self.slot_ffn_layers[j](slots)
        return self.class_embed(self.decoder_norm(slots[:, 0]))

    def _validity(
        self,
        window: TrackerWindow,
        i: int,
        first: bool,
        logits: torch.Tensor,
        slot_logits: torch.Tensor | None,
        num_tracks: int,
        offline_mode: bool,
    ) -> torch.Tensor:
        """Which query rows are valid at this frame (see the module docstring)."""
        s = self.settings
        if first:
            return foreground_score(window.seg_logits[i]) > s.aux_threshold
        if not s.ovis_infer:
            return foreground_score(logits) > s.inference_threshold
        track_logits, anchor_logits = logits[:num_tracks], logits[num_tracks:]
        slot_track = slot_logits[:num_tracks]
        if offline_mode:
            track_ok = foreground_score(slot_track * 0.5 + track_logits * 0.5) > s.inference_threshold
        else:
            track_ok = (foreground_score(track_logits) > s.inference_threshold) & (
                foreground_score(slot_track) > s.keep_threshold
            )
        return torch.cat([track_ok, foreground_score(anchor_logits) > s.inference_threshold])
