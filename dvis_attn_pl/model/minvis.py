"""MinVIS naive linking: chain the segmenter's per-frame queries into video instances.

The offline DVIS-DAQ model fills the refiner up to ``NUM_NEW_INS`` instances with these chains
when the tracker produced fewer sequences (``DVIS_DAQ_offline.minvis_post_processing``):

* chain k starts at segmenter query k of frame 0;
* at frame t, the queries of frame t are matched one-to-one (Hungarian, scipy) to the chains'
  embeddings at frame t-1 on the cost ``1 - cosine similarity``;
* a chain's logits are the mean over frames of its queries' raw logits, its embeddings the
  queries' ``pred_embds`` per frame (its masks the queries' masks, which inference never needs:
  the refiner decodes its own).

The chains are fed to the refiner with no padding; their ids are the official naive-link ids
``(10000 + video_start) * 10000 + j * 1000`` for the j-th (1-based) chain picked.

Here all consecutive-frame similarity matrices are computed in one batched op and copied to the
host once; the frame-to-frame assignment, which is sequential by nature, then runs on the host.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


@dataclass
class NaiveLinks:
    """Chains over a video: ``perm[t, k]`` is the segmenter query of frame t in chain k."""

    perm: torch.Tensor  # (T, Q) int64, on the device of the inputs; perm[0] = arange(Q)
    logits: torch.Tensor  # (Q, K+1) mean raw logits per chain
    embeds: torch.Tensor  # (Q, T, C) per-frame segmenter embeddings per chain

    def __len__(self) -> int:
        return int(self.perm.shape[1])

    def masks(self, seg_masks: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Per-chain segmenter masks (n, T, h, w) from ``seg_masks`` (Q, T, h, w), for ``rows``."""
        perm = self.perm if rows is None else self.perm[:, rows.to(self.perm.device)]
        perm = perm.to(seg_masks.device)
        frames = torch.arange(perm.shape[0], device=seg_masks.device)
        return seg_masks[perm.T, frames[None, :]]


def _unit(x: torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit L2 norm (no epsilon, as the official matcher)."""
    return x / x.norm(dim=-1, keepdim=True)


def consecutive_similarity(frame_embeds: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of every query of frame t-1 (rows) with every query of frame t (columns).

    ``frame_embeds`` (T, Q, C) -> (T-1, Q, Q).
    """
    unit = _unit(frame_embeds)
    return torch.bmm(unit[:-1], unit[1:].transpose(1, 2))


def link_queries(frame_embeds: torch.Tensor) -> torch.Tensor:
    """Frame-to-frame Hungarian linking; ``frame_embeds`` (T, Q, C) -> ``perm`` (T, Q) int64.

    ``perm[t, k]`` is the query of frame t assigned to chain k, whose query at frame t-1 is
    ``perm[t-1, k]``; the cost is ``1 - cos`` between them.
    """
    frames, queries, _ = frame_embeds.shape
    perm = np.empty((frames, queries), dtype=np.int64)
    perm[0] = np.arange(queries)
    if frames > 1:
        sim = consecutive_similarity(frame_embeds).float().cpu().numpy()  # one host copy
        for t in range(1, frames):
            cost = 1.0 - sim[t - 1][perm[t - 1]]  # rows: chains (their query at t-1), cols: queries at t
            rows, cols = linear_sum_assignment(cost)
            perm[t, rows] = cols
    return torch.from_numpy(perm).to(frame_embeds.device)


def naive_link(frame_embeds: torch.Tensor, frame_logits: torch.Tensor) -> NaiveLinks:
    """Link a video's segmenter queries into Q chains.

    Args:
        frame_embeds: (T, Q, C) decoder-normed segmenter query embeddings per frame.
        frame_logits: (T, Q, K+1) segmenter class logits per frame.
    """
    if frame_embeds.shape[:2] != frame_logits.shape[:2]:
        raise ValueError(
            f"naive_link: frame_embeds {tuple(frame_embeds.shape)} and frame_logits "
            f"{tuple(frame_logits.shape)} disagree in (T, Q)"
        )
    perm = link_queries(frame_embeds)
    frames = torch.arange(perm.shape[0], device=perm.device)[:, None]
    logits = frame_logits[frames, perm]  # (T, Q, K+1), chain order
    embeds = frame_embeds[frames, perm]  # (T, Q, C)
    return NaiveLinks(perm=perm, logits=logits.sum(dim=0) / perm.shape[0], embeds=embeds.transpose(0, 1))


def naive_link_ids(count: int, video_start: int = 0) -> list[int]:
    """Official ids of the first ``count`` naive-link instances added to the refiner input."""
    return [(10000 + video_start) * 10000 + j * 1000 for j in range(1, count + 1)]
