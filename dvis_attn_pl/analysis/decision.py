"""Decision timing: the class posterior as frames accumulate, and when the decision settles.

The prefix logits themselves are computed by the model (``dvis_attn_pl.model.prefix_logits``):
offline DVIS-DAQ classifies an instance from ``z = sum_t softmax_t(a)_t * x_t`` (the refiner's
temporal pooling). Restricting that pooling to the first ``k`` frames gives the posterior the
classifier would hold after seeing ``k`` frames of the refined embeddings. (The refined embeddings
themselves attended to the whole video, so this times the pooling's decision, not a causal re-run.)
Online DVIS-DAQ scores a sequence by the mean of its per-frame tracker logits; the prefix mean over
the frames stored so far is the same quantity after ``k`` frames, exactly.
"""

from __future__ import annotations

import torch

from ..utils.temporal_record import DECISION_SETTLE_FRAME, LABEL_BY_FRAME, SCORE_AFTER_K_FRAMES


def foreground_probs(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over K+1 classes with the background (last) column dropped: (..., K)."""
    return logits.softmax(dim=-1)[..., :-1]


def settle_frame(labels: torch.Tensor) -> torch.Tensor:
    """First frame from which the label sequence (N, T) no longer changes, per row (N,)."""
    final = labels[:, -1:]
    differs = labels != final
    t = labels.shape[1]
    # index of the last differing frame, or -1 when none
    idx = torch.arange(t, device=labels.device).expand_as(labels)
    last_diff = torch.where(differs, idx, torch.full_like(idx, -1)).amax(dim=1)
    return last_diff + 1


def prefix_lengths(num_frames: int, fractions: tuple[float, ...]) -> list[int]:
    """Frame counts ``ceil(f * T)`` (at least 1) for the given fractions of a video."""
    return [max(1, min(num_frames, -(-int(round(f * 1000)) * num_frames // 1000))) for f in fractions]


PREFIX_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def truncate_ground_truth(gt: dict, fractions_to_k: dict[int, int]) -> dict:
    """The GT json restricted to each video's first k frames (``fractions_to_k``: video id -> k)."""
    videos = []
    for v in gt["videos"]:
        k = fractions_to_k[v["id"]]
        videos.append({**v, "length": k, "file_names": list(v.get("file_names", []))[:k]})
    anns = []
    for a in gt.get("annotations", []):
        k = fractions_to_k[a["video_id"]]
        trimmed = {**a, "segmentations": a["segmentations"][:k]}
        for key in ("areas", "bboxes"):
            if key in a and a[key] is not None:
                trimmed[key] = a[key][:k]
        anns.append(trimmed)
    return {**gt, "videos": videos, "annotations": anns}


def prefix_predictions(temporal: list[dict], video_k: dict[int, int]) -> list[dict]:
    """Each prediction restricted to the first k frames, scored by its class posterior after k frames."""
    out = []
    for rec in temporal:
        k = video_k[rec["video_id"]]
        score = (rec.get(SCORE_AFTER_K_FRAMES) or {}).get(str(k))
        if score is None:
            continue
        out.append(
            {
                "video_id": rec["video_id"],
                "category_id": rec["category_id"],
                "score": score,
                "segmentations": rec["segmentations"][:k],
            }
        )
    return out


def decision_timing(gt: dict | None, temporal: list[dict], fractions=PREFIX_FRACTIONS) -> dict:
    """When decisions settle, and the AP when only the first fraction of each video is seen."""
    lengths = {v["id"]: _video_length(v) for v in gt["videos"]} if gt else {}
    settle = [
        rec[DECISION_SETTLE_FRAME] / max(1, len(rec[LABEL_BY_FRAME]))
        for rec in temporal
        if DECISION_SETTLE_FRAME in rec
    ]
    summary: dict = {
        "predictions": len(temporal),
        "median_settle_fraction": _median(settle),
        "settled_at_first_frame": sum(1 for s in settle if s == 0),
        "note": "class posterior of the temporal pooling restricted to the first k frames; for offline "
        "models the refined embeddings still saw the whole video",
    }
    if gt and gt.get("annotations") is not None:
        from ..metrics.ytvis_eval import evaluate_ytvis

        ap = {}
        for f in fractions:
            video_k = {vid: prefix_lengths(t, (f,))[0] for vid, t in lengths.items()}
            preds = prefix_predictions(temporal, video_k)
            stats = evaluate_ytvis(truncate_ground_truth(gt, video_k), preds) if preds else None
            ap[f"{int(round(f * 100))}%"] = None if stats is None else stats["AP"]
        summary["AP_after_fraction_of_frames"] = ap
    return summary


def _video_length(video: dict) -> int:
    """A json video's frame count: ``length``, or the number of its frame files (``length`` is optional)."""
    return int(video["length"]) if video.get("length") is not None else len(video.get("file_names") or [])


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
