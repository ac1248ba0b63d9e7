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
