"""Colours: a fixed colour-blind-friendly palette keyed by category id, colour maps, blending.

Species colours come from the Okabe–Ito palette (distinguishable under the common forms of colour
blindness). Black is left out because outlines must show on dark underwater frames; white marks
an unknown category. Category ids are the dataset's (YTVIS ids start at 1): id ``c`` gets
``PALETTE[(c - 1) % len(PALETTE)]``, so the same species has the same colour in every plot and
video of every run.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np

__all__ = [
    "ATTENTION_CMAP",
    "MATRIX_CMAP",
    "PALETTE",
    "UNKNOWN_COLOR",
    "apply_colormap",
    "blend_heatmap",
    "category_color",
    "category_colors",
    "hex_color",
]

# Okabe & Ito (2008), "Color Universal Design", without black; RGB 0-255.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 159, 0),  # orange
    (86, 180, 233),  # sky blue
    (0, 158, 115),  # bluish green
    (240, 228, 66),  # yellow
    (0, 114, 178),  # blue
    (213, 94, 0),  # vermillion
    (204, 121, 167),  # reddish purple
)
UNKNOWN_COLOR: tuple[int, int, int] = (255, 255, 255)

ATTENTION_CMAP = "inferno"  # heatmaps over frames (perceptually uniform, colour-blind safe)
MATRIX_CMAP = "viridis"  # frame x frame matrices, rollout, tracker rows


def category_color(category_id: int | None) -> tuple[int, int, int]:
    """RGB (0-255) colour of a dataset category id; ``None`` or ids < 1 give white."""
    if category_id is None or int(category_id) < 1:
        return UNKNOWN_COLOR
    return PALETTE[(int(category_id) - 1) % len(PALETTE)]


def category_colors(category_ids: Sequence[int | None]) -> np.ndarray:
    """(N, 3) uint8 colours for a list of category ids."""
    return np.array([category_color(c) for c in category_ids], dtype=np.uint8).reshape(-1, 3)


def hex_color(category_id: int | None) -> str:
    """The category colour as ``#rrggbb`` (for matplotlib)."""
    r, g, b = category_color(category_id)
    return f"#{r:02x}{g:02x}{b:02x}"


def apply_colormap(values: np.ndarray, cmap: str = ATTENTION_CMAP) -> np.ndarray:
    """Map values in [0, 1] (any shape) to uint8 RGB (shape + (3,)) through a 256-entry table."""
    lut = (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)
    idx = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float32)), 0.0, 1.0)
    return lut[np.rint(idx * 255.0).astype(np.intp)]


def blend_heatmap(
    frames: np.ndarray, values: np.ndarray, *, cmap: str = ATTENTION_CMAP, alpha: float = 0.7
) -> np.ndarray:
    """Overlay heat values in [0, 1] on uint8 RGB frames, opacity proportional to the value.

    ``frames`` (..., H, W, 3) uint8, ``values`` (..., H, W). A pixel with value ``v`` gets
    ``(1 - alpha v) frame + alpha v colour``: zero attention leaves the frame untouched, so a frame
    whose scaled attention is zero everywhere renders exactly as the plain frame.
    """
    if frames.shape[:-1] != values.shape:
        raise ValueError(f"heatmap of shape {values.shape} does not match frames {frames.shape}")
    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0.0, 1.0)
    a = (alpha * v)[..., None]
    out = frames.astype(np.float32) * (1.0 - a) + apply_colormap(v, cmap).astype(np.float32) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
