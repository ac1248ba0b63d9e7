"""The weights shipped with the package: the tiny CPU config trained on the synthetic fish train split.

``tiny_fish_synthetic.safetensors`` holds the official key layout of ``configs/tiny_fish.yaml``;
``tiny_fish_synthetic.json`` beside it says how it was made (config hash, generator version and
seeds, steps per stage, val AP). ``python -m dvis_attn_pl test`` uses them when no ``--ckpt`` is
given with the embedded config.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..utils.errors import UserError

SHIPPED_CONFIG = "tiny_fish"
SHIPPED_WEIGHTS = Path(__file__).with_name("tiny_fish_synthetic.safetensors")
SHIPPED_INFO = SHIPPED_WEIGHTS.with_suffix(".json")
# the control experiment's model: the refiner trained on frame-shuffled clips (``python -m dvis_attn_pl control``)
CONTROL_WEIGHTS = SHIPPED_WEIGHTS.with_name("tiny_fish_shuffled_control.safetensors")

__all__ = ["CONTROL_WEIGHTS", "SHIPPED_CONFIG", "SHIPPED_INFO", "SHIPPED_WEIGHTS", "shipped_info", "shipped_weights"]


def shipped_weights() -> Path:
    """The shipped weights file; a one-line error when the installation lacks it."""
    if not SHIPPED_WEIGHTS.is_file():
        raise UserError(f"{SHIPPED_WEIGHTS}: the shipped weights are missing from this installation")
    return SHIPPED_WEIGHTS


def shipped_info() -> dict:
    """The sidecar json of the shipped weights ({} when absent)."""
    try:
        return json.loads(SHIPPED_INFO.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
