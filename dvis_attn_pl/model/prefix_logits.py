"""Class logits after the first ``k`` frames, for every ``k`` (the model's ``prefix_logits``, read by
the decision-timing analysis in ``dvis_attn_pl.analysis.decision``).

Offline DVIS-DAQ classifies an instance from ``z = sum_t softmax_t(a)_t * x_t`` (the refiner's
temporal pooling); restricting that pooling to the first ``k`` frames gives the posterior after ``k``
frames of the refined embeddings. Online DVIS-DAQ scores a sequence by the mean of its per-frame
tracker logits; the prefix mean over the frames stored so far is the same quantity after ``k`` frames.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["mean_prefix_logits", "pooled_prefix_logits"]


def pooled_prefix_logits(
    activation_logits: torch.Tensor, embeds: torch.Tensor, class_head: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Class logits (N, T, K+1) from pooling over frames ``0..k`` for every ``k``.

    ``activation_logits`` (N, T): the pre-softmax pooling scores; ``embeds`` (N, T, C): the
    decoder-normed refiner outputs; ``class_head``: the refiner's ``class_embed``.
    """
    a = activation_logits.float()
    e = (a - a.amax(dim=1, keepdim=True)).exp()
    pooled = (e[..., None] * embeds.float()).cumsum(dim=1) / e.cumsum(dim=1)[..., None]
    return class_head(pooled.to(embeds.dtype)).float()


def mean_prefix_logits(frame_logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Running mean (N, T, K+1) of per-frame logits over the frames where each row is ``present``.

    Frames before a row's first stored frame are NaN.
    """
    w = present.to(frame_logits.dtype)[..., None]
    total = (frame_logits * w).cumsum(dim=1)
    count = w.cumsum(dim=1)
    return torch.where(count > 0, total / count.clamp_min(1), torch.full_like(total, float("nan")))
