"""The loss of one training step in each stage, on the model's own modules.

* ``segmenter``: single frames; Hungarian matching per frame and per decoder layer (deep
  supervision), as Mask2Former / MinVIS.
* ``tracker``: clips; the segmenter runs frozen, the tracker runs frame by frame as at inference
  (frame 0 refines the segmenter queries; later frames take the tracks' last outputs plus
  ``NUM_NEW_INS`` new-instance anchors). Targets follow identity: a track keeps the object it was
  matched to (no-object where that object is absent); anchors are Hungarian-matched to the objects
  of the frame that no track holds (the official new-instance matching). Every tracker layer is
  supervised.
* ``refiner``: clips; segmenter and tracker run frozen through the model's own inference path
  (sequence collection, top-k, naive-link padding), the refiner is trained with clip-level
  Hungarian matching on the (t, h, w) masks.
"""

from __future__ import annotations

import torch

from ..model.meta_arch import VideoInput
from ..model.tracker import foreground_score
from .data import Clip
from .losses import LossWeights, hungarian_match, set_losses
from .position import position_loss
from .segmenter_cache import SegmenterCache, segment_clip

Losses = dict[str, torch.Tensor]


def _accumulate(total: Losses, new: Losses, prefix: str = "") -> None:
    for k, v in new.items():
        key = prefix + k
        total[key] = total[key] + v if key in total else v


def _num_objects(count: int) -> float:
    return float(max(count, 1))


# ----------------------------------------------------------------------------- segmenter
def segmenter_losses(model, clips: list[Clip], w: LossWeights, position_head=None, cache=None) -> Losses:
    """Mask2Former losses on the first frame of every clip (a batch of single frames); with a
    ``position_head``, also ``loss_position`` of the last layer's matched queries. ``cache`` is
    accepted for a uniform signature: the segmenter being trained cannot be cached."""
    del cache
    frames = [c.frames[0] for c in clips]
    padded = (max(c.padded[0] for c in clips), max(c.padded[1] for c in clips))
    out = model.sem_seg_head(model.backbone(model.preprocess(frames, padded)), return_aux=True)

    def per_frame(o: dict) -> tuple[torch.Tensor, torch.Tensor]:  # -> (B, Q, K+1), (B, Q, h, w)
        logits = o["pred_logits"].flatten(0, 1)
        masks = o["pred_masks"].transpose(1, 2).flatten(0, 1)
        return logits, masks

    layers = [per_frame(a) for a in out["aux_outputs"]] + [per_frame(out)]
    frame_queries = out["pred_embds"].permute(0, 2, 3, 1).flatten(0, 1)  # (frames, Q, C), decoder-normed
    empty_weight = model.daq_criterion.empty_weight
    targets = []
    for c in clips:
        present = c.present()[:, 0]
        targets.append((c.labels[present], c.masks[present, 0]))
    n_obj = _num_objects(sum(int(t[0].numel()) for t in targets))
    losses: Losses = {}
    for depth, (logits, masks) in enumerate(layers):
        prefix = "" if depth == len(layers) - 1 else f"aux{depth}_"
        for b, (labels, tgt) in enumerate(targets):
            tgt = tgt.to(masks.device)
            rows, cols = hungarian_match(logits[b], masks[b], labels, tgt, w)
            terms = set_losses(logits[b], masks[b], rows, cols, labels, tgt, empty_weight, n_obj)
            terms["loss_ce"] = terms["loss_ce"] / len(targets)
            if position_head is not None and not prefix:
                terms["loss_position"] = position_loss(position_head, frame_queries[b], rows, tgt, cols, n_obj)
            _accumulate(losses, terms, prefix)
    return losses


# ----------------------------------------------------------------------------- tracker
def _tracker_layers(tracker, out, frame_embeds, frame_pos=None, query_pos=None) -> torch.Tensor:
    """Every tracker layer on queries ``out`` (n, 1, C); returns the outputs of each layer (L, n, C)."""
    outs = []
    for j in range(tracker.settings.num_layers):
        out = tracker.transformer_cross_attention_layers[j](out, frame_embeds, pos=frame_pos, query_pos=query_pos)
        out = tracker.transformer_self_attention_layers[j](out)
        out = tracker.transformer_ffn_layers[j](out)
        outs.append(out)
    return torch.stack(outs)[:, :, 0]


def tracker_losses(
    model, clips: list[Clip], w: LossWeights, position_head=None, cache: SegmenterCache | None = None
) -> Losses:
    """DAQ tracker losses over each clip, frame by frame (segmenter frozen, its outputs from ``cache``
    when given); with a ``position_head``, also ``loss_position`` of the last layer's matched
    outputs (what the refiner receives)."""
    tracker = model.tracker
    empty_weight = model.daq_criterion.empty_weight
    losses: Losses = {}
    n_obj = _num_objects(sum(int(c.present().sum()) for c in clips))
    for clip in clips:
        window = segment_clip(model, clip, cache)
        _accumulate(losses, _track_clip(tracker, window, clip, empty_weight, w, n_obj, position_head))
    return losses


def _object_present(track_gt: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """(tracks,) bool: the track holds an object (``track_gt >= 0``) and that object is ``present``."""
    out = torch.zeros(track_gt.shape, dtype=torch.bool)
    held = track_gt >= 0
    out[held] = present[track_gt[held]]
    return out


def _track_clip(tracker, window, clip: Clip, empty_weight, w: LossWeights, n_obj: float, position_head=None) -> Losses:
    s = tracker.settings
    proj = tracker.mask_feature_proj(window.mask_features)
    labels = clip.labels
    targets = clip.masks.to(proj.device)  # (N, t, h, w)
    present = clip.present()  # (N, t)
    losses: Losses = {}
    track_gt = torch.zeros(0, dtype=torch.int64)  # object held by each track (-1: none)
    track_q = track_pos = None
    for t in range(window.num_frames):
        frame_embeds = window.frame_embeds[t][:, None, :]
        raw = window.mask_features[t]
        if t == 0:
            outs = _tracker_layers(tracker, frame_embeds, frame_embeds)
            num_tracks = 0
        else:
            frame_pos, _ = tracker.get_mask_pos_embed(window.seg_masks[t], raw)
            frame_pos = frame_pos[:, None, :]
            anchors = tracker.new_ins_embeds.weight[:, None, :].expand(s.num_new_ins, 1, -1)
            query_pos = torch.cat([track_pos, frame_pos[: s.num_new_ins]])
            outs = _tracker_layers(tracker, torch.cat([track_q, anchors]), frame_embeds, frame_pos, query_pos)
            num_tracks = track_q.shape[0]
        logits, masks = tracker.prediction(outs, proj[t])  # (L, n, K+1), (L, n, h, w)
        here = torch.nonzero(present[:, t]).flatten()
        gt_here = _object_present(track_gt, present[:, t])  # per track: its object is visible here
        keep_rows = torch.nonzero(gt_here).flatten()  # rows that keep an object present here
        keep_cols = track_gt[keep_rows]
        free = here[~torch.isin(here, track_gt)]
        if t == 0:
            new_rows, new_cols = hungarian_match(logits[-1], masks[-1], labels[here], targets[here, 0], w)
            new_cols = here[new_cols]
        else:
            a_rows, a_cols = hungarian_match(
                logits[-1, num_tracks:], masks[-1, num_tracks:], labels[free], targets[free, t], w
            )
            new_rows, new_cols = a_rows + num_tracks, free[a_cols]
        rows = torch.cat([keep_rows, new_rows])
        cols = torch.cat([keep_cols, new_cols])
        for depth in range(logits.shape[0]):
            prefix = "" if depth == logits.shape[0] - 1 else f"aux{depth}_"
            terms = set_losses(logits[depth], masks[depth], rows, cols, labels, targets[:, t], empty_weight, n_obj)
            terms["loss_ce"] = terms["loss_ce"] / window.num_frames
            if position_head is not None and not prefix:
                terms["loss_position"] = position_loss(position_head, outs[-1], rows, targets[:, t], cols, n_obj)
            _accumulate(losses, terms, prefix)
        # the tracks of the next frame: as at inference, every frame-0 query the segmenter calls
        # foreground, then every track continues and matched anchors open new tracks
        last = outs[-1]
        positions, _ = tracker.get_mask_pos_embed(masks[-1].detach(), raw)
        row_gt = torch.full((last.shape[0],), -1, dtype=torch.int64)
        row_gt[new_rows] = new_cols
        row_gt[:num_tracks] = track_gt
        if t == 0:
            opened = foreground_score(window.seg_logits[0]).cpu() > s.aux_threshold
            opened[new_rows] = True
            keep = torch.nonzero(opened).flatten()
        else:
            keep = torch.cat([torch.arange(num_tracks), new_rows])
            # a track absent here keeps its last position; others move to the new one
            seen = gt_here | (track_gt < 0)
            moved = torch.where(seen[:, None].to(positions.device), positions[:num_tracks], track_pos[:, 0])
            positions = torch.cat([moved, positions[num_tracks:]])
        keep_dev = keep.to(last.device)
        track_q = last.index_select(0, keep_dev)[:, None, :]
        track_pos = positions.index_select(0, keep_dev)[:, None, :]
        track_gt = row_gt[keep]
    return losses


# ----------------------------------------------------------------------------- refiner
def refiner_losses(
    model, clips: list[Clip], w: LossWeights, position_head=None, cache: SegmenterCache | None = None
) -> Losses:
    """Refiner losses with clip-level Hungarian matching (segmenter and tracker frozen; the
    segmenter's outputs from ``cache`` when given).

    ``position_head`` is accepted for a uniform signature; the refiner stage has no position loss."""
    del position_head
    empty_weight = model.daq_criterion.empty_weight
    losses: Losses = {}
    n_obj = _num_objects(sum(int(c.labels.numel()) for c in clips))
    for clip in clips:
        video = VideoInput.from_batched_inputs([{"image": list(clip.frames)}], model.size_divisibility)
        segmented = None if cache is None or clip.source is None else cache.window(model, clip)
        with torch.no_grad():
            feats, instances = model.common_inference(video, segmented)
        if len(instances) <= 1:
            continue
        refined = model.refiner(
            instances.embeds.permute(2, 1, 0)[None].detach(),
            None,
            feats.frame_embeds.permute(2, 0, 1)[None].detach(),
            decode_masks=False,
        )
        masks = model.refiner.decode_masks(refined["mask_embeds"], feats.mask_features[None].detach())[0]
        logits = refined["pred_logits"][0, 0]
        targets = clip.masks.to(masks.device)
        rows, cols = hungarian_match(logits, masks, clip.labels, targets, w)
        terms = set_losses(logits, masks, rows, cols, clip.labels, targets, empty_weight, n_obj)
        terms["loss_ce"] = terms["loss_ce"] / len(clips)
        _accumulate(losses, terms)
    if not losses:  # no clip gave the refiner two instances: a zero loss that still touches its weights
        zero = sum(p.sum() for p in model.refiner.parameters()) * 0.0
        losses = {"loss_ce": zero, "loss_mask": zero, "loss_dice": zero}
    return losses


STAGE_LOSSES = {"segmenter": segmenter_losses, "tracker": tracker_losses, "refiner": refiner_losses}
