"""dvis_attn_pl: a Lightning evaluation harness for DVIS-DAQ that shows how the model decides.

Public API::

    from dvis_attn_pl import load_config, build_model, load_checkpoint, evaluate_ytvis
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["load_config", "build_model", "load_checkpoint", "evaluate_ytvis", "__version__"]


def __getattr__(name: str):
    # Lazy imports keep `python -m dvis_attn_pl --help` fast (no torch import for help text).
    if name == "load_config":
        from .config import load_config

        return load_config
    if name == "build_model":
        from .model.build import build_model

        return build_model
    if name == "load_checkpoint":
        from .model.checkpoint import load_checkpoint

        return load_checkpoint
    if name == "evaluate_ytvis":
        from .metrics import evaluate_ytvis

        return evaluate_ytvis
    raise AttributeError(f"module 'dvis_attn_pl' has no attribute {name!r}")
