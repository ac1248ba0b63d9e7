"""The per-prediction charts of ``analyze`` drawn straight into pixels (NumPy + PIL).

The matplotlib figures of :mod:`.plots` take 0.1-0.4 s each to lay out and render; ``analyze``
draws hundreds of them. The functions here draw the same content (heat maps with a shared colour
scale and colour bar, greyed/hatched padding frames, curves with peaks, shaded ground-truth spans,
legends, titles and axis labels) as an (H, W, 3) uint8 image in a few milliseconds; :func:`png`
encodes one. Layout is fixed (no layout solver): panels of a given size, margins for the labels.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .colors import MATRIX_CMAP

__all__ = ["draw_frame_importance", "draw_rollout", "draw_temporal_attention", "draw_tracker_attention", "png"]

WHITE, BLACK, GRID = (255, 255, 255), (0, 0, 0), (225, 225, 225)
PAD = (209, 209, 209)  # padding cells (matplotlib's "0.82")
HATCH = (115, 115, 115)
LEGEND_GT, LEGEND_PAD = (220, 240, 224), (237, 237, 237)  # the shades at their opacity on white
GT_SHADE = (154, 211, 165)  # "#9ad3a5"
CURVE_COLORS = ((0, 114, 178), (230, 159, 0), (204, 121, 167), (0, 158, 115))
PEAK = (213, 94, 0)


def png(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W, 3) uint8 image (fast zlib level: these are flat-colour charts)."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="png", compress_level=3)
    return buf.getvalue()


@lru_cache(maxsize=16)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    return ImageFont.truetype(str(matplotlib.get_data_path() + f"/fonts/ttf/{name}"), size)


@lru_cache(maxsize=8)
def _lut(cmap: str) -> np.ndarray:
    """(256, 3) uint8 colour table of a matplotlib colour map."""
    return (matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256))[:, :3] * 255 + 0.5).astype(np.uint8)


def _colorize(values: np.ndarray, vmin: float, vmax: float, cmap: str) -> np.ndarray:
    span = vmax - vmin if vmax > vmin else 1.0
    idx = np.clip((values - vmin) / span * 255 + 0.5, 0, 255).astype(np.uint8)
    return _lut(cmap)[idx]


def _fmt(v: float) -> str:
    return "0" if abs(v) < 1e-12 else f"{v:.3g}"


def _nice_ticks(lo: float, hi: float, count: int = 5) -> np.ndarray:
    """Round tick values covering [lo, hi] (1, 2, 5 x 10^k steps)."""
    if hi <= lo:
        return np.array([lo])
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = np.ceil(lo / step - 1e-9) * step
    return np.arange(first, hi + step * 1e-6, step)


def _frame_ticks(n: int) -> list[int]:
    """Frame indices to label on an axis of ``n`` frames."""
    return sorted({int(x) for x in _nice_ticks(0, n - 1, 6) if 0 <= x <= n - 1}) if n > 1 else [0]


@dataclass
class _Canvas:
    """An RGB image with text and drawing helpers."""

    image: Image.Image
    draw: ImageDraw.ImageDraw

    @classmethod
    def new(cls, width: int, height: int) -> _Canvas:
        image = Image.new("RGB", (int(width), int(height)), WHITE)
        return cls(image, ImageDraw.Draw(image))

    def text(self, xy, s: str, size: int = 11, anchor: str = "la", fill=BLACK, bold: bool = False) -> None:
        self.draw.text(xy, s, font=_font(size, bold), fill=fill, anchor=anchor)

    def vtext(self, xy, s: str, size: int = 11) -> None:
        """Text rotated by 90 degrees, centred on ``xy`` (y-axis labels)."""
        font = _font(size)
        w = int(font.getlength(s)) + 2
        label = Image.new("L", (w, size + 4), 0)
        ImageDraw.Draw(label).text((0, 0), s, font=font, fill=255)
        label = label.rotate(90, expand=True)
        x, y = int(xy[0] - label.width / 2), int(xy[1] - label.height / 2)
        self.image.paste(Image.new("RGB", label.size, BLACK), (x, y), label)

    def title(self, s: str, width: int) -> None:
        self.text((width // 2, 8), _clip(s, width - 20, 15), size=15, anchor="ma")

    def array(self) -> np.ndarray:
        return np.asarray(self.image)


def _clip(s: str, width: int, size: int) -> str:
    """``s`` shortened with an ellipsis to fit ``width`` pixels."""
    font = _font(size)
    if font.getlength(s) <= width:
        return s
    while s and font.getlength(s + "...") > width:
        s = s[:-1]
    return s + "..."


def _matrix_panel(
    c: _Canvas,
    x0: int,
    y0: int,
    values: np.ndarray,
    cell: tuple[int, int],
    vmin: float,
    vmax: float,
    cmap: str,
    padding: np.ndarray | None = None,
) -> tuple[int, int]:
    """A heat map at (x0, y0), ``cell`` = (height, width) pixels per entry; ``padding`` (rows and
    columns of frames that are padding) greyed and hatched. Returns its pixel size (w, h)."""
    ch, cw = cell
    rgb = _colorize(values, vmin, vmax, cmap)
    if padding is not None:
        bad = padding[:, None] | padding[None, :]
        rgb[bad] = PAD
    big = np.repeat(np.repeat(rgb, ch, axis=0), cw, axis=1)
    if padding is not None and padding.any():
        bad_px = np.repeat(np.repeat(padding[:, None] | padding[None, :], ch, 0), cw, 1)
        yy, xx = np.indices(big.shape[:2])
        big[bad_px & ((xx + yy) % 7 == 0)] = HATCH
    c.image.paste(Image.fromarray(np.ascontiguousarray(big)), (x0, y0))
    w, h = big.shape[1], big.shape[0]
    c.draw.rectangle((x0 - 1, y0 - 1, x0 + w, y0 + h), outline=BLACK)
    return w, h


def _matrix_ticks(c: _Canvas, x0: int, y0: int, n_rows: int, n_cols: int, cell: tuple[int, int]) -> None:
    """Frame index ticks under and left of a matrix panel."""
    ch, cw = cell
    for j in _frame_ticks(n_cols):
        x = x0 + j * cw + cw // 2
        c.draw.line((x, y0 + n_rows * ch, x, y0 + n_rows * ch + 3), fill=BLACK)
        c.text((x, y0 + n_rows * ch + 4), str(j), size=11, anchor="ma")
    for i in _frame_ticks(n_rows):
        y = y0 + i * ch + ch // 2
        c.draw.line((x0 - 4, y, x0 - 1, y), fill=BLACK)
        c.text((x0 - 6, y), str(i), size=11, anchor="rm")


def _colorbar(c: _Canvas, x0: int, y0: int, height: int, vmin: float, vmax: float, cmap: str, label: str) -> None:
    """A vertical colour bar (16 px wide) with tick labels and a rotated label."""
    ramp = _lut(cmap)[np.linspace(255, 0, max(height, 2)).astype(np.uint8)]
    c.image.paste(Image.fromarray(np.repeat(ramp[:, None], 16, axis=1)), (x0, y0))
    c.draw.rectangle((x0 - 1, y0 - 1, x0 + 16, y0 + height), outline=BLACK)
    span = vmax - vmin if vmax > vmin else 1.0
    for v in _nice_ticks(vmin, vmax, 5):
        y = y0 + int(round((1 - (v - vmin) / span) * (height - 1)))
        c.draw.line((x0 + 16, y, x0 + 19, y), fill=BLACK)
        c.text((x0 + 22, y), _fmt(float(v)), size=11, anchor="lm")
    c.vtext((x0 + 70, y0 + height // 2), label, size=12)


def _cell(n: int, budget: int) -> int:
    return max(2, min(24, budget // max(n, 1)))


def _padding(valid, t: int) -> np.ndarray | None:
    if valid is None:
        return None
    v = np.asarray(valid, dtype=bool)
    if v.shape != (t,):
        raise ValueError(f"valid mask has shape {v.shape}, expected ({t},)")
    return None if v.all() else ~v


def _scale_max(values: np.ndarray, padding: np.ndarray | None) -> float:
    keep = np.ones(values.shape[-2:], bool) if padding is None else ~(padding[:, None] | padding[None, :])
    top = float(values[..., keep].max()) if keep.any() else 1.0
    return top if top > 0 else 1.0


# ----------------------------------------------------------------------------- charts
def draw_temporal_attention(
    matrices, valid=None, *, title: str | None = None, ncols: int = 3, cmap: str = MATRIX_CMAP
) -> np.ndarray:
    """Refiner frame-to-frame attention (L, T, T), one panel per layer, one colour scale; padding
    frames (``valid`` False) greyed, hatched and left out of the scale."""
    mats = np.nan_to_num(np.asarray(matrices, dtype=np.float32))
    if mats.ndim != 3 or mats.shape[1] != mats.shape[2]:
        raise ValueError(f"temporal attention must be (L, T, T), got shape {mats.shape}")
    n_layers, t = mats.shape[:2]
    padding = _padding(valid, t)
    vmax = _scale_max(mats, padding)
    cell = _cell(t, 220)
    side = cell * t
    cols = max(1, min(ncols, n_layers))
    rows = -(-n_layers // cols)
    left, top, gap_x, gap_y = 56, 44, 64, 62
    width = max(left + cols * (side + gap_x) + 100, 1000)  # room for the title
    height = top + rows * (side + gap_y) + 10
    c = _Canvas.new(width, height)
    sub = "" if padding is None else f"  (hatched: {int(padding.sum())} padding frames)"
    c.title((title or "Refiner temporal self-attention") + sub, width)
    for k in range(n_layers):
        x0 = left + (k % cols) * (side + gap_x)
        y0 = top + (k // cols) * (side + gap_y) + 16
        _matrix_panel(c, x0, y0, mats[k], (cell, cell), 0.0, vmax, cmap, padding)
        _matrix_ticks(c, x0, y0, t, t, (cell, cell))
        c.text((x0 + side // 2, y0 - 4), f"layer {k}", size=12, anchor="md")
        c.text((x0 + side // 2, y0 + side + 18), "attended frame", size=11, anchor="ma")
        c.vtext((x0 - 40, y0 + side // 2), "querying frame", size=11)
    _colorbar(c, width - 120, top + 16, rows * (side + gap_y) - gap_y, 0.0, vmax, cmap, "attention weight")
    return c.array()


@dataclass
class _Axes:
    """A curve plot area: frame x in [-0.5, t - 0.5], y in [0, ymax]."""

    x0: int
    y0: int
    w: int
    h: int
    t: int
    ymax: float

    def px(self, x) -> np.ndarray:
        return self.x0 + (np.asarray(x, dtype=np.float64) + 0.5) / self.t * self.w

    def py(self, y) -> np.ndarray:
        return self.y0 + self.h - np.asarray(y, dtype=np.float64) / self.ymax * self.h


def _curve_axes(c: _Canvas, ax: _Axes, xlabel: str, ylabel: str) -> None:
    """Frame, grid, ticks and labels of a curve plot."""
    for v in _nice_ticks(0.0, ax.ymax, 5):
        y = int(round(float(ax.py(v))))
        c.draw.line((ax.x0, y, ax.x0 + ax.w, y), fill=GRID)
        c.text((ax.x0 - 5, y), _fmt(float(v)), size=11, anchor="rm")
    for j in _frame_ticks(ax.t):
        x = int(round(float(ax.px(j))))
        c.draw.line((x, ax.y0, x, ax.y0 + ax.h), fill=GRID)
        c.text((x, ax.y0 + ax.h + 4), str(j), size=11, anchor="ma")
    c.text((ax.x0 + ax.w // 2, ax.y0 + ax.h + 20), xlabel, size=12, anchor="ma")
    c.vtext((ax.x0 - 48, ax.y0 + ax.h // 2), ylabel, size=12)


SHADE_ALPHA = 0.35  # span shading opacity, as the matplotlib figure's axvspan


def _spans(c: _Canvas, ax: _Axes, mask: np.ndarray, color, hatch: bool = False) -> None:
    """Shade the runs of True frames over the plot's height, blended so spans drawn earlier show
    through; ``hatch`` adds diagonal lines (padding frames)."""
    from .plots import true_spans

    for s, e in true_spans(mask):
        x_a, x_b = int(round(float(ax.px(s - 0.5)))), int(round(float(ax.px(e - 0.5))))
        box = (x_a, ax.y0, x_b + 1, ax.y0 + ax.h + 1)
        region = np.asarray(c.image.crop(box), dtype=np.float32)
        region = region * (1 - SHADE_ALPHA) + np.asarray(color, np.float32) * SHADE_ALPHA
        if hatch:
            yy, xx = np.indices(region.shape[:2])
            lines = (xx + yy) % 9 == 0
            region[lines] = region[lines] * 0.6 + np.asarray(HATCH, np.float32) * 0.4
        c.image.paste(Image.fromarray((region + 0.5).astype(np.uint8)), box[:2])


def _star(c: _Canvas, x: float, y: float, r: float, color) -> None:
    angles = np.pi / 2 + np.arange(10) * np.pi / 5
    radii = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
    pts = list(zip((x + radii * np.cos(angles)).tolist(), (y - radii * np.sin(angles)).tolist()))
    c.draw.polygon(pts, fill=color, outline=BLACK)


def _curve(c: _Canvas, ax: _Axes, y: np.ndarray, color, markers: bool) -> None:
    xs, ys = ax.px(np.arange(len(y))), ax.py(np.clip(y, 0, ax.ymax))
    pts = list(zip(xs.tolist(), ys.tolist()))
    if len(pts) > 1:
        c.draw.line(pts, fill=color, width=2, joint="curve")
    if markers:
        for px, py in pts:
            c.draw.ellipse((px - 2.5, py - 2.5, px + 2.5, py + 2.5), fill=color)


def _legend(c: _Canvas, x0: int, y0: int, entries: Sequence[tuple[str, tuple, str]], width: int) -> None:
    """Legend entries (label, colour, kind: "line", "box" or "star") stacked from (x0, y0)."""
    for n, (label, color, kind) in enumerate(entries):
        y = y0 + n * 18 + 8
        if kind == "line":
            c.draw.line((x0, y, x0 + 22, y), fill=color, width=2)
        elif kind == "star":
            _star(c, x0 + 11, y, 7, color)
        else:
            c.draw.rectangle((x0, y - 6, x0 + 22, y + 6), fill=color)
        c.text((x0 + 28, y), _clip(label, width - 30, 11), size=11, anchor="lm")


def _peak(y: np.ndarray, valid: np.ndarray) -> int:
    return int(np.argmax(np.where(valid, y, -np.inf))) if valid.any() else int(np.argmax(y))


def draw_frame_importance(
    importance, *, gt_present=None, valid=None, title: str | None = None,
    ylabel: str = "frame importance (pooling weight)",
) -> np.ndarray:
    """Frame-importance curve(s) ``{label: (T,)}``, ground-truth frames shaded, padding hatched,
    the peak of each curve (over valid frames) starred and labelled."""
    curves = dict(importance) if isinstance(importance, Mapping) else {"importance": importance}
    curves = {k: np.nan_to_num(np.asarray(v, dtype=np.float32)) for k, v in curves.items()}
    lengths = {v.shape for v in curves.values()}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1:
        raise ValueError(f"frame importance curves must be 1-D of one length, got {sorted(lengths)}")
    t = next(iter(lengths))[0]
    padding = _padding(valid, t)
    ok = np.ones(t, bool) if padding is None else ~padding
    width, height = 1050, 380
    c = _Canvas.new(width, height)
    c.title(title or "Frame importance", width)
    ymax = max(float(max(v.max() for v in curves.values())) * 1.08, 1e-6)
    ax = _Axes(76, 40, 700, 280, t, ymax)
    entries = []
    if gt_present is not None:
        gt = np.asarray(gt_present, dtype=bool)
        if gt.shape != (t,):
            raise ValueError(f"gt_present has shape {gt.shape}, expected ({t},)")
        _spans(c, ax, gt, GT_SHADE)
        entries.append(("ground truth present", LEGEND_GT, "box"))
    if padding is not None:
        _spans(c, ax, padding, PAD, hatch=True)
        entries.append(("padding frames", LEGEND_PAD, "box"))
    _curve_axes(c, ax, "frame", ylabel)
    for n, (name, y) in enumerate(curves.items()):
        color = CURVE_COLORS[n % len(CURVE_COLORS)]
        _curve(c, ax, y, color, markers=t <= 60)
        peak = _peak(y, ok)
        px, py = float(ax.px(peak)), float(ax.py(y[peak]))
        _star(c, px, py, 8, color)
        right = px + 7 + _font(11).getlength(f"peak {peak}") < ax.x0 + ax.w
        c.text((px + 7, py - 7) if right else (px - 7, py - 7), f"peak {peak}", size=11,
               anchor="ld" if right else "rd")
        entries.insert(n, (name, color, "line"))
    c.draw.rectangle((ax.x0, ax.y0, ax.x0 + ax.w, ax.y0 + ax.h), outline=BLACK)
    _legend(c, ax.x0 + ax.w + 14, ax.y0, entries, width - ax.x0 - ax.w - 20)
    return c.array()


def draw_rollout(
    rollout, readout, *, valid=None, readout_label: str = "column mean", title: str | None = None,
    cmap: str = MATRIX_CMAP,
) -> np.ndarray:
    """Rollout matrix R (T, T) with a colour bar beside its per-frame readout curve (T,), the
    readout's peak over valid frames starred."""
    r = np.nan_to_num(np.asarray(rollout, dtype=np.float32))
    y = np.nan_to_num(np.asarray(readout, dtype=np.float32))
    t = r.shape[0] if r.ndim == 2 else -1
    if r.shape != (t, t) or y.shape != (t,):
        raise ValueError(f"rollout {r.shape} and readout {y.shape} do not describe the same frames")
    padding = _padding(valid, t)
    ok = np.ones(t, bool) if padding is None else ~padding
    vmax = _scale_max(r, padding)
    cell = _cell(t, 300)
    side = cell * t
    width, height = 1100, max(side + 120, 420)
    c = _Canvas.new(width, height)
    c.title(title or "Temporal attention rollout", width)
    x0, y0 = 66, 60
    _matrix_panel(c, x0, y0, r, (cell, cell), 0.0, vmax, cmap, padding)
    _matrix_ticks(c, x0, y0, t, t, (cell, cell))
    c.text((x0 + side // 2, y0 - 4), "rollout R" + ("" if padding is None else " (hatched: padding frames)"),
           size=12, anchor="md")
    c.text((x0 + side // 2, y0 + side + 18), "source frame", size=11, anchor="ma")
    c.vtext((x0 - 44, y0 + side // 2), "output frame", size=11)
    _colorbar(c, x0 + side + 14, y0, side, 0.0, vmax, cmap, "rolled-out attention")
    ax = _Axes(x0 + side + 170, y0, width - (x0 + side + 170) - 170, 280, t, max(float(y.max()) * 1.08, 1e-6))
    c.text((ax.x0 + ax.w // 2, y0 - 4), "rollout readout", size=12, anchor="md")
    entries = [(readout_label, CURVE_COLORS[0], "line")]
    if padding is not None:
        _spans(c, ax, padding, PAD, hatch=True)
        entries.append(("padding frames", LEGEND_PAD, "box"))
    _curve_axes(c, ax, "frame", f"importance ({readout_label})")
    _curve(c, ax, y, CURVE_COLORS[0], markers=t <= 60)
    peak = _peak(y, ok)
    _star(c, float(ax.px(peak)), float(ax.py(y[peak])), 8, PEAK)
    entries.append((f"peak: frame {peak}", PEAK, "star"))
    c.draw.rectangle((ax.x0, ax.y0, ax.x0 + ax.w, ax.y0 + ax.h), outline=BLACK)
    _legend(c, ax.x0 + ax.w + 12, ax.y0, entries, width - ax.x0 - ax.w - 16)
    return c.array()


def draw_tracker_attention(
    attention, *, top_k: int = 5, row_labels: Sequence[str] | None = None, title: str | None = None,
    ylabel: str = "tracked sequence", cmap: str = MATRIX_CMAP, max_row_labels: int = 40,
) -> np.ndarray:
    """Tracker cross-attention: rows (e.g. tracker frames) x segmenter queries, the ``top_k``
    queries of every row outlined in white, a colour bar; at most ``max_row_labels`` row labels."""
    a = np.nan_to_num(np.asarray(attention, dtype=np.float32))
    if a.ndim != 2 or 0 in a.shape:
        raise ValueError(f"tracker attention must be a non-empty (rows, queries) array, got {a.shape}")
    n_rows, n_q = a.shape
    labels = list(row_labels) if row_labels is not None else [f"seq {i}" for i in range(n_rows)]
    cw = max(2, min(80, 820 // n_q))
    ch = max(2, min(44, 700 // n_rows), -(-140 // n_rows))  # at least 140 px high
    left = 20 + max(int(_font(11).getlength(s)) for s in labels) + 40
    width = max(left + cw * n_q + 130, 1000)
    height = 40 + ch * n_rows + 60
    c = _Canvas.new(width, height)
    c.title(title or "Tracker cross-attention", width)
    x0, y0 = left, 44
    lo, hi = float(a.min()), float(a.max())
    _matrix_panel(c, x0, y0, a, (ch, cw), lo, hi, cmap)
    k = max(0, min(int(top_k), n_q))
    if k and ch >= 4 and cw >= 4:
        top = np.argsort(-a, axis=1, kind="stable")[:, :k]
        for i, js in enumerate(top.tolist()):
            for j in js:
                c.draw.rectangle((x0 + j * cw + 1, y0 + i * ch + 1, x0 + (j + 1) * cw - 2, y0 + (i + 1) * ch - 2),
                                 outline=WHITE)
    shown = np.unique(np.linspace(0, n_rows - 1, min(n_rows, max_row_labels)).round().astype(int))
    for i in shown.tolist():
        c.text((x0 - 6, y0 + i * ch + ch // 2), labels[i], size=11, anchor="rm")
    for j in _frame_ticks(n_q):
        c.text((x0 + j * cw + cw // 2, y0 + n_rows * ch + 4), str(j), size=11, anchor="ma")
    c.text((x0 + cw * n_q // 2, y0 + n_rows * ch + 20), "segmenter query"
           + (f"   (white: top {k} per row)" if k else ""), size=12, anchor="ma")
    c.vtext((14, y0 + n_rows * ch // 2), ylabel, size=12)
    _colorbar(c, x0 + cw * n_q + 14, y0, n_rows * ch, lo, hi, cmap, "attention weight")
    return c.array()
