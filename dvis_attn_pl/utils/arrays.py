"""Generic NumPy helpers shared by the analyses (and anything else): arrays from tensors or lists,
plain-JSON values, a Monte-Carlo permutation p-value. No import of the package."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["as_array", "json_ready", "permutation_p_value"]


def as_array(x: Any, dtype: Any = np.float64, name: str = "input") -> np.ndarray:
    """A NumPy array from a NumPy array, a torch tensor (any device) or a nested list."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name}: cannot be read as a {np.dtype(dtype).name} array ({err})") from None


def json_ready(obj: Any) -> Any:
    """Plain JSON types: NumPy scalars/arrays become numbers/lists, NaN and +-inf become None."""
    if isinstance(obj, Mapping):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if hasattr(obj, "detach"):
        return json_ready(as_array(obj, dtype=None))
    return obj


def permutation_p_value(
    observed: float | np.ndarray, null: np.ndarray, alternative: str = "two-sided"
) -> np.ndarray:
    """Monte-Carlo permutation p-value ``(1 + #{null as extreme}) / (1 + P)``; null along the last axis.

    ``alternative``: ``"two-sided"`` (compare absolute values), ``"greater"`` or ``"less"``.
    A relative tolerance of 1e-9 counts numerically equal statistics as "as extreme".
    """
    null = np.asarray(null, dtype=np.float64)
    obs = np.asarray(observed, dtype=np.float64)[..., None]
    tol = 1e-9 * np.maximum(np.abs(obs), 1e-300)
    if alternative == "two-sided":
        hits = np.abs(null) >= np.abs(obs) - tol
    elif alternative == "greater":
        hits = null >= obs - tol
    elif alternative == "less":
        hits = null <= obs + tol
    else:
        raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    p = (1.0 + hits.sum(axis=-1)) / (1.0 + null.shape[-1])
    return np.where(np.isfinite(obs[..., 0]), p, np.nan)
