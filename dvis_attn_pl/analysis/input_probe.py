"""What the refiner can see: is each track's position decodable from the refiner's per-frame inputs?

DVIS-DAQ's class decision is made by the offline refiner, whose only per-frame input for a track is
the tracker's instance query (no position encoding, no mask). A model can read a fish's *trajectory*
only if those queries carry where the fish is. This probe measures it on annotated videos:

1. run the model's own inference path (segmenter, tracker, top-k, refiner) on every video;
2. match each annotated object to the refined track whose video mask overlaps it most (mask IoU
   >= ``min_iou`` over the whole video), and keep that track's refiner inputs (T, C) and the
   object's mask centroid per frame;
3. fit a ridge regression from the inputs to the centroid (x, y), and from frame-to-frame input
   differences to the centroid's displacement, with video-level cross-validation, and report the
   held-out R^2 (1 = exact, 0 = no better than the mean, < 0 = worse).

A held-out velocity R^2 near 0 means the refiner cannot compute motion from what it is given,
whatever its attention looks like: a verdict of "appearance" is then a property of the architecture's
inputs, not a choice the model made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..training.position import mask_centroids

__all__ = ["TrackInputs", "collect_track_inputs", "decodability"]


@dataclass(frozen=True)
class TrackInputs:
    """One annotated object's matched track: the refiner's inputs and where the object is."""

    video_id: int
    label: int  # contiguous class id
    embeds: np.ndarray  # (T, C) the refiner's per-frame input (tracker instance query)
    centre: np.ndarray  # (T, 2) mask centroid (x, y) as a fraction of the mask grid
    present: np.ndarray  # (T,) bool: the object is visible in the frame


def _video_iou(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Video mask IoU (n, m) of binary ``pred`` (n, T, h, w) and ``target`` (m, T, h, w)."""
    p = pred.flatten(1).float()
    g = target.flatten(1).float()
    inter = p @ g.T
    return inter / (p.sum(1)[:, None] + g.sum(1)[None] - inter).clamp(min=1.0)


@torch.no_grad()
def collect_track_inputs(model, videos, min_iou: float = 0.5) -> list[TrackInputs]:
    """Per annotated object of ``videos`` (``training.data.TrainVideo``), its matched track's inputs."""
    from ..model.meta_arch import VideoInput

    tracks: list[TrackInputs] = []
    for video in videos:
        batch = VideoInput.from_batched_inputs([{"image": list(video.frames)}], model.size_divisibility)
        feats, instances = model.common_inference(batch)
        if len(instances) == 0:
            continue
        refined = model.refiner(
            instances.embeds.permute(2, 1, 0)[None], None, feats.frame_embeds.permute(2, 0, 1)[None],
            decode_masks=False,
        )
        masks = model.refiner.decode_masks(refined["mask_embeds"], feats.mask_features[None])[0] > 0
        target = video.masks.float()
        h, w = min(masks.shape[-2], target.shape[-2]), min(masks.shape[-1], target.shape[-1])
        iou = _video_iou(masks[..., :h, :w].cpu(), target[..., :h, :w] > 0.5)
        best, rows = iou.max(dim=0)
        embeds = instances.embeds.float().cpu()
        for obj in torch.nonzero(best >= min_iou).flatten().tolist():
            m = target[obj]  # (T, h, w)
            tracks.append(
                TrackInputs(
                    video_id=int(video.video_id),
                    label=int(video.labels[obj]),
                    embeds=embeds[int(rows[obj])].numpy(),
                    centre=mask_centroids(m).numpy(),
                    present=(m.flatten(1).amax(1) > 0).numpy(),
                )
            )
    return tracks


def _ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> np.ndarray:
    """Weights (C+1, k) of ridge regression of ``y`` (n, k) on ``x`` (n, C) with an intercept."""
    xb = np.concatenate([x, np.ones((len(x), 1))], axis=1)
    reg = alpha * np.eye(xb.shape[1])
    reg[-1, -1] = 0.0
    return np.linalg.solve(xb.T @ xb + reg, xb.T @ y)


def _predict(w: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.concatenate([x, np.ones((len(x), 1))], axis=1) @ w


def _rows(tracks: list[TrackInputs], motion: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, video id) rows: positions of visible frames, or displacements between
    consecutive visible frames (``motion``)."""
    xs, ys, vids = [], [], []
    for t in tracks:
        if motion:
            ok = t.present[1:] & t.present[:-1]
            x, y = (t.embeds[1:] - t.embeds[:-1])[ok], (t.centre[1:] - t.centre[:-1])[ok]
        else:
            x, y = t.embeds[t.present], t.centre[t.present]
        xs.append(x)
        ys.append(y)
        vids.append(np.full(len(x), t.video_id))
    if not xs:
        return np.zeros((0, 1)), np.zeros((0, 2)), np.zeros(0, dtype=int)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(vids)


def _heldout_r2(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, alpha: float) -> list[float] | None:
    """Out-of-fold R^2 per target column; folds split whole videos. None with fewer than 2 videos."""
    videos = np.unique(groups)
    if len(videos) < 2:
        return None
    fold_of = {v: i % min(folds, len(videos)) for i, v in enumerate(videos)}
    fold = np.array([fold_of[g] for g in groups])
    pred = np.zeros_like(y)
    for k in np.unique(fold):
        test = fold == k
        mu, sd = x[~test].mean(0), x[~test].std(0) + 1e-6
        w = _ridge((x[~test] - mu) / sd, y[~test], alpha)
        pred[test] = _predict(w, (x[test] - mu) / sd)
    resid = ((pred - y) ** 2).sum(0)
    total = ((y - y.mean(0)) ** 2).sum(0)
    return [float(1 - r / t) if t > 0 else float("nan") for r, t in zip(resid, total)]


def decodability(tracks: list[TrackInputs], folds: int = 5, alpha: float = 10.0) -> dict:
    """Held-out R^2 of position (x, y) and of frame-to-frame displacement (dx, dy) decoded linearly
    from the refiner's inputs (ridge ``alpha`` on standardised inputs; ``folds`` video folds)."""
    pos = _rows(tracks, motion=False)
    vel = _rows(tracks, motion=True)
    return {
        "tracks": len(tracks),
        "videos": len({t.video_id for t in tracks}),
        "position_r2": _heldout_r2(*pos, folds, alpha),
        "displacement_r2": _heldout_r2(*vel, folds, alpha),
        "frames": int(len(pos[0])),
        "folds": folds,
        "ridge_alpha": alpha,
    }


def probe_weights(weights: Path, json_path: Path, config: str = "tiny_fish", max_videos: int | None = None) -> dict:
    """:func:`decodability` of the model ``config`` with ``weights`` on the annotated videos of
    ``json_path`` (frames in ``JPEGImages/`` beside it; the first ``max_videos`` when given)."""
    from ..config import config_path, load_config
    from ..data.ytvis_json import load_ytvis_json
    from ..model.build import build_model
    from ..model.checkpoint import load_state_strict, read_checkpoint
    from ..training.data import load_training_videos

    cfg = load_config(config_path(config))
    model = build_model(cfg).eval()
    load_state_strict(model, *read_checkpoint(weights), weights)
    videos = load_training_videos(load_ytvis_json(json_path), json_path.parent / "JPEGImages", cfg)
    return decodability(collect_track_inputs(model, videos[:max_videos]))
