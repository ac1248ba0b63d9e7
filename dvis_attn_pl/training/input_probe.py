"""What the refiner can see: is each track's position decodable from the refiner's per-frame inputs?

DVIS-DAQ's class decision is made by the offline refiner. Per frame it sees two things, neither with
a position encoding or a mask: the track's **instance query** (the tracker's output) and, through
cross-attention, the segmenter's **frame queries** of that frame. A model can read a fish's
*trajectory* only if these carry where the fish is. This probe measures it on annotated videos:

1. run the model's own inference path up to the refiner (segmenter, tracker, top-k) on every video;
2. match each annotated object to the instance row whose video mask (decoded by the tracker's mask
   head from the row's queries) overlaps it most (mask IoU >= ``min_iou`` over the whole video), and
   in every frame to the segmenter query whose mask overlaps it most (IoU >= ``min_iou``);
3. fit a ridge regression from each kind of query to the object's mask centroid (x, y), and from
   the change of the query over ``lag`` frames to the centroid's displacement over those frames,
   cross-validated over videos, and report the held-out R^2 (1 = exact, 0 = no better than the
   mean, < 0 = worse).

A held-out R^2 near 0 for both kinds means the refiner cannot compute a trajectory from what it is
given, whatever its attention looks like: a verdict of "appearance" is then a property of the
model's inputs, not a choice its refiner made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..analysis.compare_runs import temporal_mask_iou
from .position import mask_centroids

__all__ = ["SOURCES", "TrackInputs", "collect_track_inputs", "decodability", "probe_weights",
           "trajectory_separability"]


@dataclass(frozen=True)
class TrackInputs:
    """One annotated object's matched track: the refiner's inputs and where the object is."""

    video_id: int
    label: int  # contiguous class id
    embeds: np.ndarray  # (T, C) the refiner's per-frame input (tracker instance query)
    centre: np.ndarray  # (T, 2) mask centroid (x, y) as a fraction of the mask grid
    present: np.ndarray  # (T,) bool: the object is visible in the frame
    frame_queries: np.ndarray  # (T, C) the segmenter query that segments the object in each frame
    frame_found: np.ndarray  # (T,) bool: that query's mask overlaps the object with IoU >= min_iou

    def inputs(self, source: str) -> tuple[np.ndarray, np.ndarray]:
        """(queries (T, C), usable (T,) bool) of ``source``: ``instance`` or ``frame``."""
        if source == "instance":
            return self.embeds, self.present
        return self.frame_queries, self.present & self.frame_found


def _frame_queries(model, feats, target: torch.Tensor, min_iou: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per object and frame, the segmenter query whose mask overlaps it most: (queries (m, T, C),
    found (m, T) bool with IoU >= ``min_iou``), for binary ``target`` (m, T, h, w)."""
    queries = feats.frame_embeds  # (T, Q, C) decoder-normed, as the refiner's cross-attention sees them
    mask_embeds = model.sem_seg_head.predictor.mask_embed(queries)
    masks = torch.einsum("tqc,tchw->tqhw", mask_embeds, feats.mask_features.to(queries.device)) > 0
    h, w = min(masks.shape[-2], target.shape[-2]), min(masks.shape[-1], target.shape[-1])
    p = masks[..., :h, :w].flatten(2).float().cpu()  # (T, Q, P)
    g = target[..., :h, :w].flatten(2).float().transpose(0, 1)  # (T, m, P)
    inter = p @ g.transpose(1, 2)  # (T, Q, m)
    iou = inter / (p.sum(2)[:, :, None] + g.sum(2)[:, None, :] - inter).clamp(min=1.0)
    best, rows = iou.max(dim=1)  # (T, m)
    picked = queries.float().cpu().gather(1, rows[:, :, None].expand(-1, -1, queries.shape[-1]))  # (T, m, C)
    return picked.transpose(0, 1), (best >= min_iou).T


def _tracker_masks(tracker, embeds: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
    """Binary masks (N, T, h, w) of the instance rows ``embeds`` (N, T, C) decoded by the tracker's own
    mask head on the video's ``mask_features`` (T, C, h, w): the tracks as the tracker made them."""
    proj = tracker.mask_feature_proj(mask_features.to(embeds.device))  # (T, C, h, w)
    mask_embeds = tracker.mask_embed(tracker.decoder_norm(embeds))  # (N, T, C)
    return torch.einsum("ntc,tchw->nthw", mask_embeds, proj) > 0


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
        masks = _tracker_masks(model.tracker, instances.embeds, feats.mask_features)
        target = video.masks.float()
        h, w = min(masks.shape[-2], target.shape[-2]), min(masks.shape[-1], target.shape[-1])
        iou = torch.from_numpy(temporal_mask_iou(masks[..., :h, :w].cpu().numpy(), (target[..., :h, :w] > 0.5).numpy()))
        best, rows = iou.max(dim=0)
        embeds = instances.embeds.float().cpu()
        frame_queries, found = _frame_queries(model, feats, target > 0.5, min_iou)
        for obj in torch.nonzero(best >= min_iou).flatten().tolist():
            m = target[obj]  # (T, h, w)
            tracks.append(
                TrackInputs(
                    video_id=int(video.video_id),
                    label=int(video.labels[obj]),
                    embeds=embeds[int(rows[obj])].numpy(),
                    centre=mask_centroids(m).numpy(),
                    present=(m.flatten(1).amax(1) > 0).numpy(),
                    frame_queries=frame_queries[obj].numpy(),
                    frame_found=found[obj].numpy(),
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


def _rows(tracks: list[TrackInputs], source: str, lag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, targets, video id) rows of ``source`` queries: positions of usable frames (``lag`` 0),
    or displacements between usable frames ``lag`` apart."""
    xs, ys, vids = [], [], []
    for t in tracks:
        q, ok = t.inputs(source)
        if lag:
            ok = ok[lag:] & ok[:-lag]
            x, y = (q[lag:] - q[:-lag])[ok], (t.centre[lag:] - t.centre[:-lag])[ok]
        else:
            x, y = q[ok], t.centre[ok]
        xs.append(x)
        ys.append(y)
        vids.append(np.full(len(x), t.video_id))
    if not xs:
        return np.zeros((0, 1)), np.zeros((0, 2)), np.zeros(0, dtype=int)
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(vids)


def _video_folds(videos, folds: int) -> dict:
    """Video id -> fold (round robin over the ids in the order given, at most ``folds`` folds)."""
    return {v: i % max(min(folds, len(videos)), 1) for i, v in enumerate(videos)}


def _heldout_r2(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, alpha: float) -> list[float] | None:
    """Out-of-fold R^2 per target column; folds split whole videos. None with fewer than 2 videos."""
    videos = np.unique(groups)
    if len(videos) < 2:
        return None
    fold_of = _video_folds(videos, folds)
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


SOURCES = {"instance": "instance queries (tracker)", "frame": "frame queries (segmenter)"}


def decodability(tracks: list[TrackInputs], folds: int = 5, alpha: float = 10.0, lag: int = 4) -> dict:
    """Held-out R^2 of position (x, y) and of the displacement over ``lag`` frames (dx, dy), decoded
    linearly from each kind of refiner input (ridge ``alpha`` on standardised inputs; ``folds``
    video folds). Per source in ``SOURCES``: ``position_r2``, ``displacement_r2`` (None with fewer
    than two videos), ``frames`` (the position rows) and ``title``."""
    by_source = {}
    for source in SOURCES:
        pos = _rows(tracks, source, 0)
        by_source[source] = {
            "title": SOURCES[source],
            "position_r2": _heldout_r2(*pos, folds, alpha),
            "displacement_r2": _heldout_r2(*_rows(tracks, source, lag), folds, alpha),
            "frames": int(len(pos[0])),
        }
    return {
        "tracks": len(tracks),
        "videos": len({t.video_id for t in tracks}),
        "sources": by_source,
        "lag": lag,
        "folds": folds,
        "ridge_alpha": alpha,
    }


def _motion_features(centre: np.ndarray, ok: np.ndarray, min_frames: int) -> np.ndarray | None:
    """Order-aware summary of one trajectory (usable frames ``ok``): spread of x and y, and the median
    and 90th percentile of the step in x and in y between adjacent usable frames. None when shorter
    than ``min_frames``."""
    if ok.sum() < min_frames:
        return None
    step = np.abs(np.diff(centre, axis=0))[ok[1:] & ok[:-1]]
    if len(step) < 2:
        return None
    spread = centre[ok].std(0)
    return np.concatenate([spread, np.median(step, 0), np.quantile(step, 0.9, axis=0)])


def _trajectory_reader(kind: str, decoder_tracks: list[TrackInputs], alpha: float):
    """``track -> (trajectory (T, 2), usable (T,))``: the true centroid (``kind`` ``true``), or the
    position decoded from the ``kind`` queries by ridge regression fitted on ``decoder_tracks``.
    None when those have fewer than two usable rows."""
    if kind == "true":
        return lambda t: (t.centre, t.present)
    x, y, _ = _rows(decoder_tracks, kind, 0)
    if len(x) < 2:
        return None
    mu, sd = x.mean(0), x.std(0) + 1e-6
    w = _ridge((x - mu) / sd, y, alpha)

    def read(t: TrackInputs) -> tuple[np.ndarray, np.ndarray]:
        q, ok = t.inputs(kind)
        return _predict(w, (q - mu) / sd), ok

    return read


def _nearest_mean_hits(fit: list[tuple[np.ndarray, int]], test: list[tuple[np.ndarray, int]]) -> int:
    """How many ``(features, label)`` of ``test`` the nearest class mean of ``fit`` (standardised) names right."""
    feats, labels = np.stack([f for f, _ in fit]), np.array([c for _, c in fit])
    mu, sd = feats.mean(0), feats.std(0) + 1e-9
    means = {c: ((feats[labels == c] - mu) / sd).mean(0) for c in np.unique(labels)}
    hits = 0
    for f, label in test:
        z = (f - mu) / sd
        hits += int(min(means, key=lambda c: float(((z - means[c]) ** 2).sum())) == label)
    return hits


def trajectory_separability(
    tracks: list[TrackInputs], labels: set[int], folds: int = 5, alpha: float = 10.0, min_frames: int = 6
) -> dict:
    """Could the classes ``labels`` be told apart by how their objects move? Per track, six motion
    features (:func:`_motion_features`) of its trajectory, classified by the nearest class mean
    (features standardised) fitted on the other video folds. The trajectory is the true mask
    centroid (``true``: what a perfect position read-out would give) or the position decoded by
    ridge regression, fitted on every track of the other folds, from each kind of refiner input
    (``SOURCES``). Returns per trajectory kind the share of scored tracks named right, and ``chance``."""
    videos = sorted({t.video_id for t in tracks})
    fold_of = _video_folds(videos, folds)
    kinds = {"true": "true trajectory (mask centroid)", **{s: f"decoded from the {SOURCES[s]}" for s in SOURCES}}
    right = dict.fromkeys(kinds, 0)
    scored = dict.fromkeys(kinds, 0)
    for k in sorted(set(fold_of.values())) if len(videos) >= 2 else []:
        held_out = [fold_of[t.video_id] == k for t in tracks]
        decoder_tracks = [t for t, out in zip(tracks, held_out) if not out]
        for kind in kinds:
            read = _trajectory_reader(kind, decoder_tracks, alpha)
            if read is None:
                continue
            fit, test = [], []
            for t, out in zip(tracks, held_out):
                if t.label in labels and (f := _motion_features(*read(t), min_frames)) is not None:
                    (test if out else fit).append((f, t.label))
            if len({c for _, c in fit}) >= 2 and test:
                right[kind] += _nearest_mean_hits(fit, test)
                scored[kind] += len(test)
    rows = {kind: {"title": kinds[kind], "scored": scored[kind],
                   "accuracy": right[kind] / scored[kind] if scored[kind] else None} for kind in kinds}
    return {"labels": sorted(labels), "chance": 1.0 / max(len(labels), 1),
            "tracks": sum(t.label in labels for t in tracks), "kinds": rows, "min_frames": min_frames}


def probe_weights(
    weights: Path, json_path: Path, config: str = "tiny_fish", max_videos: int | None = None,
    look_alike_group: str | None = None,
) -> dict:
    """:func:`decodability` of the model ``config`` with ``weights`` on the annotated videos of
    ``json_path`` (frames in ``JPEGImages/`` beside it; the first ``max_videos`` when given), and with
    ``look_alike_group`` the :func:`trajectory_separability` of the categories whose ``group`` it is
    (the synthetic set's ``"motion"`` species) as ``separability``."""
    from ..config import config_path, load_config
    from ..data.ytvis_json import load_ytvis_json
    from ..model.build import build_model
    from ..model.checkpoint import load_state_strict, read_checkpoint
    from .data import load_training_videos

    cfg = load_config(config_path(config))
    model = build_model(cfg).eval()
    load_state_strict(model, *read_checkpoint(weights), weights)
    data = load_ytvis_json(json_path)
    videos = load_training_videos(data, json_path.parent / "JPEGImages", cfg)
    tracks = collect_track_inputs(model, videos[:max_videos])
    probe = decodability(tracks)
    # contiguous class ids follow the categories sorted by dataset id, as YTVISData keeps them
    look_alikes = {i for i, c in enumerate(data.categories) if c.extra.get("group") == look_alike_group}
    if look_alike_group and look_alikes:
        probe["separability"] = trajectory_separability(tracks, look_alikes)
    return probe
