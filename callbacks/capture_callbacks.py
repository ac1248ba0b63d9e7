"""``build_capture_callbacks``: the callbacks of a ``--capture`` preset (capture, then rollout).

Kept apart from both callbacks so that imports run one way: the rollout depends on the capture,
and this module on both.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import Callback

from dvis_attn_pl.capture_presets import get_preset

from .attention_capture import AttentionCapture
from .temporal_rollout import TemporalRollout


def build_capture_callbacks(preset: str, run_dir: str | Path, **options) -> list[Callback]:
    """Callbacks for ``--capture PRESET``: [] for ``none``; otherwise an :class:`AttentionCapture`
    and, when the refiner time attention is captured, a :class:`~callbacks.temporal_rollout.TemporalRollout`.

    ``options`` go to :class:`AttentionCapture`, except ``rollout`` (False to skip the rollout, or a
    dict of :class:`TemporalRollout` options).
    """
    get_preset(preset)
    rollout = options.pop("rollout", True)
    if preset == "none" and not options.get("kinds") and not options.get("patterns"):
        return []
    capture = AttentionCapture(run_dir, preset=preset, **options)
    callbacks: list[Callback] = [capture]
    if rollout is not False and "refiner_time" in capture.kinds:
        callbacks.append(TemporalRollout(capture, **(rollout if isinstance(rollout, dict) else {})))
    return callbacks
