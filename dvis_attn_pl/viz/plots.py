"""Matplotlib figures of the captured attention and its analyses (Agg only, no pyplot state).

Every ``plot_*`` function takes arrays and returns a :class:`matplotlib.figure.Figure` built
directly (never through ``pyplot``, so nothing accumulates in a global figure registry); the
caller saves it with :func:`save_figure` (atomic PNG) or hands it to ``RunBoard.add_figure``.

Decoder cross-attention is drawn over frames after a *scaling* (see :func:`scale_attention`):

* ``per_frame``: each frame's map min-max scaled to [0, 1] (where the frame looks, not how much);
* ``across_frames``: one min-max over all frames (compares frames; colour bar in raw weights);
* ``per_frame_weighted``: ``per_frame`` times the frame's importance / the largest importance,
  so frames the classifier ignores fade out (a zero-importance frame renders as the plain frame);
* ``across_frames_weighted``: raw weight times importance, then one min-max over all frames.

Heat opacity is proportional to the scaled value: zero leaves the frame untouched.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..utils.io_utils import atomic_write_bytes
from .colors import ATTENTION_CMAP, MATRIX_CMAP, blend_heatmap

__all__ = [
    "SCALINGS",
    "STYLES",
    "TABLE_COLUMNS",
    "ScaledAttention",
    "attention_overlay",
    "figure_to_array",
    "figure_to_png",
    "plot_class_table",
    "plot_decoder_attention",
    "plot_frame_importance",
    "plot_rollout",
    "plot_temporal_attention",
    "plot_tracker_attention",
    "resample_maps",
    "save_figure",
    "scale_attention",
    "true_spans",
]

SCALINGS = ("per_frame", "across_frames", "per_frame_weighted", "across_frames_weighted")
STYLES = ("smooth", "grid")
TABLE_COLUMNS = (
    ("class", "class"),
    ("reading", "reading"),
    ("effect_size", "effect size"),
    ("p_value", "p-value"),
    ("n", "n"),
)
_PAD_COLOR = "0.82"


# ----------------------------------------------------------------------------- saving


def figure_to_png(fig: Figure, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes with the Agg canvas."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write a figure as a PNG atomically (temporary file + rename); returns the path."""
    path = Path(path)
    atomic_write_bytes(path, figure_to_png(fig, dpi=dpi))
    return path


def figure_to_array(fig: Figure, dpi: int = 100) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 RGB array (for TensorBoard)."""
    fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    fig.set_facecolor("white")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


# ----------------------------------------------------------------------------- arrays


@dataclass(frozen=True)
class ScaledAttention:
    """Attention scaled to [0, 1] for display, with what 0 and 1 mean for the colour bar."""

    values: np.ndarray  # (T, h, w) float32 in [0, 1]
    vmin: float  # the quantity shown at colour 0
    vmax: float  # the quantity shown at colour 1
    label: str  # colour bar label


def _as_float(name: str, array, ndim: int) -> np.ndarray:
    out = np.asarray(array, dtype=np.float32)
    if out.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {out.shape}")
    return np.nan_to_num(out)


def _minmax(x: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lo = x.min(axis=axes, keepdims=True)
    hi = x.max(axis=axes, keepdims=True)
    span = hi - lo
    scaled = np.where(span > 0, (x - lo) / np.where(span > 0, span, 1.0), 0.0)
    return scaled.astype(np.float32), lo, hi


def scale_attention(maps, scaling: str = "per_frame", importance=None) -> ScaledAttention:
    """Scale attention maps (T, h, w) for display; ``importance`` (T,) >= 0 for the weighted modes.

    A frame whose map is constant scales to zero under ``per_frame``.
    """
    if scaling not in SCALINGS:
        raise ValueError(f"attention scaling {scaling!r} is not one of {SCALINGS}")
    maps = _as_float("attention maps", maps, 3)
    weighted = scaling.endswith("_weighted")
    w = None
    if weighted:
        if importance is None:
            raise ValueError(f"attention scaling {scaling!r} needs the frame importance (T,)")
        w = _as_float("frame importance", importance, 1)
        if w.shape[0] != maps.shape[0]:
            raise ValueError(f"frame importance has {w.shape[0]} frames, attention maps {maps.shape[0]}")
        if (w < 0).any():
            raise ValueError("frame importance must be non-negative")
    if scaling.startswith("per_frame"):
        values, _, _ = _minmax(maps, (1, 2))
        if not weighted:
            return ScaledAttention(values, 0.0, 1.0, "attention, min-max per frame")
        top = float(w.max())
        values = values * (w / top if top > 0 else w)[:, None, None]
        return ScaledAttention(values.astype(np.float32), 0.0, 1.0, "per-frame min-max x importance / max")
    raw = maps * w[:, None, None] if weighted else maps
    values, lo, hi = _minmax(raw, (0, 1, 2))
    label = "attention x frame importance" if weighted else "attention weight"
    return ScaledAttention(values, float(lo.item()), float(hi.item()), label)


def resample_maps(
    maps,
    out_hw: tuple[int, int],
    *,
    mode: str = "bilinear",
    input_hw: tuple[int, int] | None = None,
    padded_hw: tuple[int, int] | None = None,
) -> np.ndarray:
    """Resample feature-resolution maps (T, h, w) to frame size ``out_hw`` = (H, W).

    The map covers the padded network input ``padded_hw``, of which the top-left ``input_hw``
    holds the (resized) image (padding is bottom/right); without both, the map covers exactly
    the frame. Sampling is at
    output pixel centres (half-pixel convention), clamped at the borders; ``mode`` is
    ``"bilinear"`` (smooth) or ``"nearest"`` (patch grid). One ``grid_sample`` call for all frames.
    """
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"resample mode {mode!r} is not 'bilinear' or 'nearest'")
    x = torch.from_numpy(_as_float("attention maps", maps, 3))[:, None]
    t = x.shape[0]
    oh, ow = int(out_hw[0]), int(out_hw[1])
    fy, fx = _content_fraction(input_hw, padded_hw)
    # output pixel centre -> fraction of the padded input -> grid_sample's [-1, 1] (align_corners=False)
    ys = ((torch.arange(oh, dtype=torch.float32) + 0.5) / oh * fy) * 2 - 1
    xs = ((torch.arange(ow, dtype=torch.float32) + 0.5) / ow * fx) * 2 - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (oh, ow, 2) as (x, y)
    out = F.grid_sample(
        x, grid[None].expand(t, -1, -1, -1), mode=mode, padding_mode="border", align_corners=False
    )
    return out[:, 0].numpy()


def _content_fraction(
    input_hw: tuple[int, int] | None, padded_hw: tuple[int, int] | None
) -> tuple[float, float]:
    """Fraction (y, x) of the padded network input that holds the image (1, 1 when either is unknown
    alone: the map then covers exactly the frame)."""
    if input_hw is None or padded_hw is None:
        return 1.0, 1.0
    (ih, iw), (ph, pw) = input_hw, padded_hw
    if not (0 < ih <= ph and 0 < iw <= pw):
        raise ValueError(f"image size {tuple(input_hw)} exceeds the padded size {tuple(padded_hw)} (or is empty)")
    return ih / ph, iw / pw


def _cell_edges(n_cells: int, out_len: int, fraction: float) -> np.ndarray:
    """Positions (output pixels) of the feature-cell boundaries that fall inside the frame."""
    edges = np.arange(n_cells + 1) * out_len / (n_cells * fraction) - 0.5
    return edges[(edges > -0.5) & (edges < out_len - 0.5)]


def attention_overlay(
    frames,
    maps,
    *,
    scaling: str = "per_frame",
    importance=None,
    style: str = "smooth",
    input_hw: tuple[int, int] | None = None,
    padded_hw: tuple[int, int] | None = None,
    cmap: str = ATTENTION_CMAP,
    alpha: float = 0.7,
) -> tuple[np.ndarray, ScaledAttention]:
    """Frames (T, H, W, 3) uint8 with the scaled attention blended on; also returns the scaling.

    ``style``: ``"smooth"`` (bilinear) or ``"grid"`` (one flat colour per feature cell).
    """
    if style not in STYLES:
        raise ValueError(f"attention style {style!r} is not one of {STYLES}")
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
    scaled = scale_attention(maps, scaling, importance)
    if scaled.values.shape[0] != frames.shape[0]:
        raise ValueError(f"{scaled.values.shape[0]} attention maps for {frames.shape[0]} frames")
    heat = resample_maps(
        scaled.values,
        frames.shape[1:3],
        mode="bilinear" if style == "smooth" else "nearest",
        input_hw=input_hw,
        padded_hw=padded_hw,
    )
    return blend_heatmap(frames, heat, cmap=cmap, alpha=alpha), scaled


def true_spans(mask) -> list[tuple[int, int]]:
    """Half-open ``(start, end)`` runs of True in a 1-D boolean array."""
    m = np.asarray(mask, dtype=bool).astype(np.int8)
    d = np.diff(np.concatenate([[0], m, [0]]))
    return list(zip(np.flatnonzero(d == 1).tolist(), np.flatnonzero(d == -1).tolist()))


def _valid_mask(valid, t: int) -> np.ndarray:
    out = np.ones(t, bool) if valid is None else np.asarray(valid, dtype=bool)
    if out.shape != (t,):
        raise ValueError(f"valid mask has shape {out.shape}, expected ({t},)")
    return out


def _peak(y: np.ndarray, valid: np.ndarray) -> int:
    """Arg-max over valid frames (first on ties); over all frames when none is valid."""
    return int(np.argmax(np.where(valid, y, -np.inf))) if valid.any() else int(np.argmax(y))


def _grid_shape(n: int, ncols: int) -> tuple[int, int]:
    cols = max(1, min(ncols, n))
    return (n + cols - 1) // cols, cols


def _panel_axes(fig: Figure, n: int, ncols: int) -> list:
    rows, cols = _grid_shape(n, ncols)
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        fig.delaxes(ax)
    return axes[:n]


# ----------------------------------------------------------------------------- figures


def plot_decoder_attention(
    frames,
    maps,
    *,
    scaling: str = "per_frame",
    importance=None,
    style: str = "smooth",
    frame_indices: Sequence[int] | None = None,
    input_hw: tuple[int, int] | None = None,
    padded_hw: tuple[int, int] | None = None,
    max_panels: int = 8,
    ncols: int = 4,
    title: str | None = None,
    cmap: str = ATTENTION_CMAP,
    alpha: float = 0.7,
    panel_inches: float = 3.0,
) -> Figure:
    """Montage of chosen frames with one prediction's decoder cross-attention and a colour bar.

    ``frames`` (T, H, W, 3) uint8; ``maps`` (T, h, w) at feature resolution; the scaling uses all
    T frames. ``frame_indices`` default: up to ``max_panels`` evenly spaced frames. The ``grid``
    style also draws the feature-cell boundaries.
    """
    overlay, scaled = attention_overlay(
        frames, maps, scaling=scaling, importance=importance, style=style,
        input_hw=input_hw, padded_hw=padded_hw, cmap=cmap, alpha=alpha,
    )
    t, fh, fw = overlay.shape[:3]
    if frame_indices is None:
        frame_indices = np.unique(np.linspace(0, t - 1, min(t, max_panels)).round().astype(int)).tolist()
    frame_indices = [int(i) for i in frame_indices]
    bad = [i for i in frame_indices if not 0 <= i < t]
    if bad or not frame_indices:
        raise ValueError(f"frame indices {bad or frame_indices} are not within the video's {t} frames")
    rows, cols = _grid_shape(len(frame_indices), ncols)
    fig = Figure(figsize=(panel_inches * cols + 1.0, panel_inches * rows * fh / fw + 0.8), layout="constrained")
    axes = _panel_axes(fig, len(frame_indices), ncols)
    h, w = scaled.values.shape[1:]
    fy, fx = _content_fraction(input_hw, padded_hw)
    for ax, i in zip(axes, frame_indices):
        ax.imshow(overlay[i], interpolation="antialiased")
        label = f"frame {i}"
        if importance is not None:
            label += f"  (importance {float(np.asarray(importance)[i]):.3g})"
        ax.set_title(label, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        if style == "grid":
            ax.hlines(_cell_edges(h, fh, fy), -0.5, fw - 0.5, colors="white", linewidths=0.3, alpha=0.5)
            ax.vlines(_cell_edges(w, fw, fx), -0.5, fh - 0.5, colors="white", linewidths=0.3, alpha=0.5)
    bar = fig.colorbar(ScalarMappable(Normalize(scaled.vmin, scaled.vmax), cmap), ax=axes, shrink=0.9)
    bar.set_label(scaled.label)
    fig.suptitle(title or f"Decoder cross-attention ({scaling.replace('_', ' ')}, {style})", fontsize=12)
    return fig


def _hatch_padding(ax, valid: np.ndarray, size: int) -> None:
    for s, e in true_spans(~valid):
        for xy, wd, ht in (((s - 0.5, -0.5), e - s, size), ((-0.5, s - 0.5), size, e - s)):
            ax.add_patch(Rectangle(xy, wd, ht, fill=False, hatch="///", edgecolor="0.45", linewidth=0))


def plot_temporal_attention(
    matrices,
    valid=None,
    *,
    layer_labels: Sequence[str] | None = None,
    ncols: int = 3,
    title: str | None = None,
    cmap: str = MATRIX_CMAP,
    panel_inches: float = 3.2,
) -> Figure:
    """The refiner's frame-to-frame attention, one panel per layer, shared colour scale.

    ``matrices`` (L, T, T): rows = querying frame, columns = attended frame. ``valid`` (T,) bool:
    rows and columns of padding frames (False) are greyed and hatched, and excluded from the
    colour range.
    """
    mats = _as_float("temporal attention", matrices, 3)
    n_layers, t, t2 = mats.shape
    if t != t2:
        raise ValueError(f"temporal attention must be square per layer, got shape {mats.shape}")
    valid = _valid_mask(valid, t)
    keep = valid[:, None] & valid[None, :]
    masked = np.ma.masked_array(mats, mask=np.broadcast_to(~keep, mats.shape))
    vmax = float(masked.max()) if keep.any() else 1.0
    norm = Normalize(0.0, vmax if vmax > 0 else 1.0)
    cm = matplotlib.colormaps[cmap].with_extremes(bad=_PAD_COLOR)
    labels = list(layer_labels) if layer_labels is not None else [f"layer {k}" for k in range(n_layers)]
    rows, cols = _grid_shape(n_layers, ncols)
    fig = Figure(figsize=(panel_inches * cols + 1.2, panel_inches * rows + 0.9), layout="constrained")
    axes = _panel_axes(fig, n_layers, ncols)
    for k, ax in enumerate(axes):
        ax.imshow(masked[k], cmap=cm, norm=norm, interpolation="nearest")
        _hatch_padding(ax, valid, t)
        ax.set_title(labels[k], fontsize=10)
        ax.set_xlabel("attended frame")
        ax.set_ylabel("querying frame")
    bar = fig.colorbar(ScalarMappable(norm, cm), ax=axes, shrink=0.9)
    bar.set_label("attention weight")
    sub = "" if valid.all() else f"  (hatched: {int((~valid).sum())} padding frames)"
    fig.suptitle((title or "Refiner temporal self-attention") + sub, fontsize=12)
    return fig


def _shade(ax, mask, color: str, label: str | None, hatch: str | None = None) -> None:
    for n, (s, e) in enumerate(true_spans(mask)):
        ax.axvspan(s - 0.5, e - 0.5, color=color, alpha=0.35, hatch=hatch, linewidth=0,
                   label=label if n == 0 else None)


def plot_rollout(
    rollout,
    readout,
    *,
    valid=None,
    readout_label: str = "column mean",
    title: str | None = None,
    cmap: str = MATRIX_CMAP,
) -> Figure:
    """Rollout matrix R (T, T) beside its per-frame readout curve (T,)."""
    r = _as_float("rollout", rollout, 2)
    y = _as_float("rollout readout", readout, 1)
    t = r.shape[0]
    if r.shape != (t, t) or y.shape != (t,):
        raise ValueError(f"rollout {r.shape} and readout {y.shape} do not describe the same {t} frames")
    valid = _valid_mask(valid, t)
    fig = Figure(figsize=(11.0, 4.4), layout="constrained")
    ax_m, ax_c = fig.subplots(1, 2, width_ratios=[1.0, 1.4])
    keep = valid[:, None] & valid[None, :]
    masked = np.ma.masked_array(r, mask=~keep)
    vmax = float(masked.max()) if keep.any() else 1.0
    cm = matplotlib.colormaps[cmap].with_extremes(bad=_PAD_COLOR)
    im = ax_m.imshow(masked, cmap=cm, norm=Normalize(0.0, vmax if vmax > 0 else 1.0), interpolation="nearest")
    _hatch_padding(ax_m, valid, t)
    ax_m.set_xlabel("source frame")
    ax_m.set_ylabel("output frame")
    ax_m.set_title("rollout R" + ("" if valid.all() else " (hatched: padding frames)"), fontsize=10)
    fig.colorbar(im, ax=ax_m, shrink=0.85).set_label("rolled-out attention")
    frames = np.arange(t)
    _shade(ax_c, ~valid, _PAD_COLOR, "padding frames", hatch="///")
    ax_c.plot(frames, y, color="#0072b2", marker="o" if t <= 60 else None, markersize=3, label=readout_label)
    peak = _peak(y, valid)
    ax_c.plot([peak], [y[peak]], marker="*", markersize=14, color="#d55e00", linestyle="none",
              label=f"peak: frame {peak}")
    ax_c.set_xlabel("frame")
    ax_c.set_ylabel(f"importance ({readout_label})")
    ax_c.set_xlim(-0.5, t - 0.5)
    ax_c.set_title("rollout readout", fontsize=10)
    ax_c.grid(alpha=0.3)
    ax_c.legend(fontsize=9, loc="best")
    fig.suptitle(title or "Temporal attention rollout", fontsize=12)
    return fig


def plot_frame_importance(
    importance,
    *,
    gt_present=None,
    valid=None,
    title: str | None = None,
    ylabel: str = "frame importance (pooling weight)",
) -> Figure:
    """Frame-importance curve(s) over the video, GT-present frames shaded, peaks marked.

    ``importance``: (T,) or a mapping ``{label: (T,)}`` to overlay several curves (e.g. pooling
    weights and a rollout readout). ``gt_present`` (T,) bool: frames where the ground-truth
    object is annotated. ``valid`` (T,) bool: padding frames (False) are hatched.
    """
    curves = dict(importance) if isinstance(importance, Mapping) else {"importance": importance}
    curves = {k: _as_float(f"frame importance {k!r}", v, 1) for k, v in curves.items()}
    lengths = {v.shape[0] for v in curves.values()}
    if len(lengths) != 1:
        raise ValueError(f"frame importance curves have different lengths {sorted(lengths)}")
    t = lengths.pop()
    fig = Figure(figsize=(10.5, 3.8), layout="constrained")
    ax = fig.add_subplot()
    if gt_present is not None:
        gt = np.asarray(gt_present, dtype=bool)
        if gt.shape != (t,):
            raise ValueError(f"gt_present has shape {gt.shape}, expected ({t},)")
        _shade(ax, gt, "#9ad3a5", "ground truth present")
    if valid is not None:
        _shade(ax, ~_valid_mask(valid, t), _PAD_COLOR, "padding frames", hatch="///")
    valid = _valid_mask(valid, t)
    colors = ("#0072b2", "#e69f00", "#cc79a7", "#009e73")
    frames = np.arange(t)
    for n, (name, y) in enumerate(curves.items()):
        c = colors[n % len(colors)]
        ax.plot(frames, y, color=c, marker="o" if t <= 60 else None, markersize=3, label=name)
        peak = _peak(y, valid)
        ax.plot([peak], [y[peak]], marker="*", markersize=14, color=c, markeredgecolor="black",
                linestyle="none")
        ax.annotate(f"peak {peak}", (peak, y[peak]), textcoords="offset points", xytext=(6, 6),
                    fontsize=9, color="black")
    ax.set_xlim(-0.5, t - 0.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("frame")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    ax.set_title(title or "Frame importance", fontsize=12)
    return fig


def plot_tracker_attention(
    attention,
    *,
    top_k: int = 5,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    cmap: str = MATRIX_CMAP,
) -> Figure:
    """Tracker cross-attention of one frame: rows = sequences, columns = segmenter queries.

    The ``top_k`` queries of every row are outlined in white.
    """
    a = _as_float("tracker attention", attention, 2)
    n_rows, n_q = a.shape
    if n_rows == 0 or n_q == 0:
        raise ValueError(f"tracker attention is empty: shape {a.shape}")
    k = max(0, min(int(top_k), n_q))
    fig = Figure(figsize=(10.0, min(1.6 + 0.32 * n_rows, 12.0)), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(a, cmap=cmap, aspect="auto", interpolation="nearest")
    if k:
        top = np.argsort(-a, axis=1, kind="stable")[:, :k]
        ax.scatter(top.ravel(), np.repeat(np.arange(n_rows), k), marker="s", s=40, facecolors="none",
                   edgecolors="white", linewidths=1.2, label=f"top {k} per row")
        ax.legend(fontsize=9, loc="upper right", facecolor="0.3", labelcolor="white", framealpha=0.8)
    ax.set_yticks(np.arange(n_rows))
    ax.set_yticklabels(list(row_labels) if row_labels is not None else [f"seq {i}" for i in range(n_rows)],
                       fontsize=8 if n_rows > 20 else 10)
    ax.set_xlabel("segmenter query")
    ax.set_ylabel("tracked sequence")
    fig.colorbar(im, ax=ax, shrink=0.9).set_label("attention weight")
    ax.set_title(title or "Tracker cross-attention", fontsize=12)
    return fig


def _norm_key(key: str) -> str:
    return key.strip().lower().replace("-", "_").replace(" ", "_")


def _fmt(value, column: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    if column == "p_value":
        v = float(value)
        return "<0.001" if v < 1e-3 else f"{v:.3f}"
    if column == "effect_size":
        return f"{float(value):+.3f}"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def plot_class_table(
    rows: Sequence[Mapping],
    *,
    columns: Sequence[tuple[str, str]] = TABLE_COLUMNS,
    title: str | None = None,
    alpha_level: float = 0.05,
) -> Figure:
    """A per-class table (e.g. appearance vs motion readings) rendered as a figure.

    ``rows``: dicts with the keys of ``columns`` (``(key, header)`` pairs; keys match ignoring
    case, spaces and dashes, so ``"p-value"`` finds ``p_value``). Rows with p < ``alpha_level``
    are set in bold.
    """
    keys = [k for k, _ in columns]
    cells, bold = [], []
    for i, row in enumerate(rows):
        norm = {_norm_key(str(k)): v for k, v in row.items()}
        missing = [k for k in keys if _norm_key(k) not in norm]
        if missing:
            raise ValueError(f"table row {i} lacks {missing}; it has {sorted(row)}")
        cells.append([_fmt(norm[_norm_key(k)], _norm_key(k)) for k in keys])
        p = norm.get("p_value")
        bold.append(p is not None and np.isfinite(float(p)) and float(p) < alpha_level)
    fig = Figure(figsize=(1.6 * len(keys) + 1.0, 0.75 + 0.3 * (len(cells) + 1)), layout="constrained")
    ax = fig.add_subplot()
    ax.axis("off")
    ax.set_title(f"{title or 'Per-class readings'}  (bold: p < {alpha_level:g})", fontsize=12)
    if not cells:
        ax.text(0.5, 0.5, "(no rows)", ha="center", va="center", fontsize=11)
        return fig
    table = ax.table(cellText=cells, colLabels=[h for _, h in columns], bbox=(0.0, 0.0, 1.0, 1.0), cellLoc="center")
    table.auto_set_font_size(False)
    table.set_fontsize(10)
    for (r, _c), cell in table.get_celld().items():
        if r == 0:
            cell.set_facecolor("0.88")
            cell.set_text_props(weight="bold")
        elif bold[r - 1]:
            cell.set_text_props(weight="bold")
        elif r % 2 == 0:
            cell.set_facecolor("0.97")
    return fig
