"""Model knockouts: one computation of DVIS-DAQ changed through forward hooks, removed afterwards.

* ``uniform_pooling``: the refiner's pooling scores (``refiner.activation_proj``) are replaced by
  zeros, so the softmax over time weighs every frame 1/T in the class;
* ``no_time_attention``: every refiner time self-attention gets a mask that blocks all but the
  diagonal, so each frame of an instance attends only to itself (identity attention);
* ``tracker_memory_cut``: before each frame's first tracker layer, every track query and its
  position are replaced by the segmenter query (and position) of the current frame that the
  track matches (the tracker's own Hungarian matching on cosine similarity): identities are kept,
  the history the query carried is not.

The hooks touch no state the unaltered model keeps: leaving the context restores it exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .spec import Intervention

__all__ = ["knockout"]


def _zero_scores(module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(output)


def _identity_time_attention(module: nn.Module, args: tuple, kwargs: dict):
    query = args[0] if args else kwargs["query"]
    frames = query.shape[0]  # (T, B*N, C): sequence first
    blocked = ~torch.eye(frames, dtype=torch.bool, device=query.device)
    return args, {**kwargs, "attn_mask": blocked}


def _cut_memory(tracker: nn.Module):
    num_new = int(tracker.num_new_ins)

    def hook(module: nn.Module, args: tuple, kwargs: dict):
        if kwargs.get("query_pos") is None:  # a first frame: no track queries
            return None
        queries, frame_embeds = args[0], args[1]
        pos, query_pos = kwargs["pos"], kwargs["query_pos"]
        tracks = queries.shape[0] - num_new
        if tracks <= 0:
            return None
        match = tracker.match_with_embeds(queries[:tracks, 0], frame_embeds[:, 0])
        queries = torch.cat([frame_embeds.index_select(0, match).to(queries.dtype), queries[tracks:]])
        query_pos = torch.cat([pos.index_select(0, match).to(query_pos.dtype), query_pos[tracks:]])
        return (queries, frame_embeds, *args[2:]), {**kwargs, "query_pos": query_pos}

    return hook


@contextmanager
def knockout(model: nn.Module, intervention: Intervention | None) -> Iterator[None]:
    """Apply ``intervention``'s hooks to ``model`` for the duration (nothing for input interventions)."""
    handles = []
    name = None if intervention is None or intervention.family != "model" else intervention.name
    try:
        if name == "uniform_pooling":
            handles.append(_refiner(model).activation_proj.register_forward_hook(_zero_scores))
        elif name == "no_time_attention":
            for layer in _refiner(model).transformer_time_self_attention_layers:
                handles.append(layer.self_attn.register_forward_pre_hook(_identity_time_attention, with_kwargs=True))
        elif name == "tracker_memory_cut":
            tracker = model.tracker
            first = tracker.transformer_cross_attention_layers[0]
            handles.append(first.register_forward_pre_hook(_cut_memory(tracker), with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _refiner(model: nn.Module) -> nn.Module:
    refiner = getattr(model, "refiner", None)
    if refiner is None:
        from ..utils.errors import UserError

        raise UserError("this knockout needs the offline model's refiner (an online config has none)")
    return refiner
