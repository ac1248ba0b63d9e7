"""``build_capture_callbacks``: the callbacks of a ``--capture`` preset (the capture, with the
rollout as its processor).

Kept apart from both so that imports run one way: the rollout depends on the capture's data types,
and this module on both.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from dvis_attn_pl.capture_presets import get_preset, resolve_selection

from .attention_capture import AttentionCapture
from .temporal_rollout import TemporalRollout


def build_capture_callbacks(preset: str, run_dir: str | Path, **options) -> list[Callback]:
    """Callbacks for ``--capture PRESET``: [] for ``none``; otherwise one :class:`AttentionCapture`,
    with a :class:`~callbacks.temporal_rollout.TemporalRollout` processor when the refiner time
    attention is captured.

    ``options`` go to :class:`AttentionCapture`, except ``rollout`` (False to skip the rollout, or a
    dict of :class:`TemporalRollout` options).
    """
    get_preset(preset)
    rollout = options.pop("rollout", True)
    if preset == "none" and not options.get("kinds") and not options.get("patterns"):
        return []
    kinds, _ = resolve_selection(preset, options.get("kinds", ()), options.get("patterns", ()))
    processors = []
    if rollout is not False and "refiner_time" in kinds:
        processors.append(TemporalRollout(**(rollout if isinstance(rollout, dict) else {})))
    return [AttentionCapture(run_dir, preset=preset, processors=processors, **options)]
