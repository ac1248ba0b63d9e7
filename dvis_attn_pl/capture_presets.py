"""Named attention-capture presets (``--capture PRESET``) and how a preset becomes a site selection.

A preset is a set of attention kinds (see :data:`dvis_attn_pl.model.capture.KINDS`) plus the
defaults that make it practical:

* ``none``: nothing is captured; the model runs its fused attention everywhere.
* ``temporal``: what the temporal analyses read: the refiner's time self-attention
  (``refiner_time``), its temporal pooling weights (``activation``, the frame importance) and the
  tracker's cross-attention to the segmenter queries (``tracker_cross``, one block of rows per frame).
* ``decoder``: ``temporal`` plus the segmenter decoder's masked cross-attention (``decoder_cross``),
  reduced to per-prediction spatial maps for the top predictions (``map_top_k``, default 5).
* ``all``: every kind the model has (large: meant for a few short videos). Of a ViT-Adapter
  backbone's self-attention (head-averaged like every kind unless ``per_head``) it keeps the last
  block of each of the four interaction stages, the blocks whose output the adapter's extractors
  read into its multi-scale features (``backbone_blocks="stage_ends"``; ``"all"`` keeps every block): on
  ViT-L at 480x640 (1,201 tokens) that is 4 of 24 blocks, 11 instead of 66 MiB per frame in
  float16.

Kinds can also be chosen directly, and sites by glob on their official module path
(:func:`resolve_selection`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .model.capture import KINDS

__all__ = ["PRESETS", "CapturePreset", "get_preset", "preset_names", "resolve_selection"]


@dataclass(frozen=True)
class CapturePreset:
    """One preset: the kinds it captures and default capture options."""

    name: str
    kinds: tuple[str, ...]
    description: str
    defaults: dict = field(default_factory=dict)


PRESETS: dict[str, CapturePreset] = {
    p.name: p
    for p in (
        CapturePreset("none", (), "no attention is captured"),
        CapturePreset(
            "temporal",
            ("refiner_time", "activation", "tracker_cross"),
            "refiner time self-attention, temporal pooling weights, tracker cross-attention",
        ),
        CapturePreset(
            "decoder",
            ("refiner_time", "activation", "tracker_cross", "decoder_cross"),
            "temporal + per-prediction decoder cross-attention maps of the top predictions",
            {"map_top_k": 5},
        ),
        CapturePreset(
            "all",
            KINDS,
            "every attention site of the model; of a ViT backbone, the last block of each stage",
            {"backbone_blocks": "stage_ends"},
        ),
    )
}


def preset_names() -> tuple[str, ...]:
    """The preset names, in increasing order of what they capture."""
    return tuple(PRESETS)


def get_preset(name: str) -> CapturePreset:
    """The preset called ``name``; a ValueError lists the known ones otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown capture preset {name!r}; known: {', '.join(PRESETS)}") from None


def resolve_selection(
    preset: str | None = None, kinds: Iterable[str] = (), patterns: Iterable[str] = ()
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Kinds and glob patterns to capture: the preset's kinds (if any) plus the extra ``kinds``.

    ``decoder_cross`` pulls in ``tracker_cross``: the per-prediction decoder maps are weighted by
    the tracker's attention rows. Unknown kinds raise ValueError.
    """
    chosen = list(get_preset(preset).kinds) if preset else []
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"unknown attention kind {kind!r}; known: {', '.join(KINDS)}")
        if kind not in chosen:
            chosen.append(kind)
    if "decoder_cross" in chosen and "tracker_cross" not in chosen:
        chosen.append("tracker_cross")
    ordered = tuple(k for k in KINDS if k in chosen)
    return ordered, tuple(patterns)
