"""Prediction videos: outlined masks in species colours, labels, attention, a frame-importance strip.

:func:`render_prediction_video` returns the rendered clip as a (T, H', W, 3) uint8 array (for
TensorBoard or :func:`write_mp4`). Masks, outlines, overlays and the importance strip are
array operations over all frames at once; only text is drawn per frame (PIL).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from ..utils.io_utils import TMP_SUFFIX
from .colors import ATTENTION_CMAP, blend_heatmap, category_color
from .plots import STYLES, resample_maps, scale_attention

__all__ = [
    "PredictionTrack",
    "fit_video",
    "importance_strip",
    "iter_prediction_video",
    "mask_outlines",
    "render_prediction_video",
    "write_mp4",
]

X264_PRESET = "veryfast"  # ~3x faster encoding than x264's default "medium" at the same quality setting
_STRIP_BG = np.array((28, 28, 28), np.uint8)
_STRIP_GT = np.array((52, 78, 58), np.uint8)
_STRIP_BAR = np.array((150, 150, 150), np.uint8)
_STRIP_NOW = np.array((255, 255, 255), np.uint8)


@dataclass(frozen=True)
class PredictionTrack:
    """One predicted instance of a video: per-frame masks at frame resolution, class and score."""

    masks: np.ndarray  # (T, H, W) bool
    category_id: int
    score: float
    true_category_id: int | None = None  # the matched ground truth's class, when known
    name: str | None = None  # short tag drawn beside the mask (default "#<index+1>")


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size)


def _erode_axis(x: np.ndarray, r: int, axis: int) -> np.ndarray:
    """Erosion of a bool array along ``axis`` by a segment of ``2 * r + 1`` (outside = False)."""
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    padded = np.pad(x, pad)
    out = padded.take(np.arange(n), axis=axis)
    for k in range(1, 2 * r + 1):
        out &= np.take(padded, np.arange(k, k + n), axis=axis)
    return out


def mask_outlines(masks, thickness: int = 2) -> np.ndarray:
    """Inner outlines of boolean masks (..., H, W): mask minus its erosion by a square of side
    ``2 * thickness + 1`` (separable: a row pass then a column pass of boolean ANDs; outside the
    image counts as background)."""
    m = np.asarray(masks, dtype=bool)
    if m.ndim < 2:
        raise ValueError(f"masks must be (..., H, W), got shape {m.shape}")
    r = int(thickness)
    if r < 1:
        raise ValueError(f"outline thickness must be >= 1, got {thickness}")
    eroded = _erode_axis(_erode_axis(m, r, m.ndim - 1), r, m.ndim - 2)
    return m & ~eroded


def importance_strip(
    importance, width: int, height: int, *, gt_present=None, current: Sequence[int] | None = None
) -> np.ndarray:
    """Strips (N, height, width, 3) uint8 drawing the importance curve as bars over the video's
    frames (left to right), GT-present frames on a green-grey background, and the frame
    ``current[i]`` of strip ``i`` marked in white (default: one strip per frame, in order)."""
    imp = np.nan_to_num(np.asarray(importance, dtype=np.float32))
    if imp.ndim != 1 or imp.size == 0:
        raise ValueError(f"frame importance must be a non-empty (T,) array, got shape {imp.shape}")
    t = imp.shape[0]
    current = np.arange(t) if current is None else np.asarray(current, dtype=np.int64)
    col_frame = np.minimum((np.arange(width) * t) // width, t - 1)  # frame shown in each column
    top = float(imp.max())
    bar_px = np.rint(np.clip(imp / top if top > 0 else imp, 0, 1) * (height - 3)).astype(np.int64)
    rows = np.arange(height)[:, None]
    filled = rows > height - 1 - bar_px[col_frame][None, :]  # (height, width); top 3 rows stay free
    bg = np.broadcast_to(_STRIP_BG, (width, 3)).copy()
    if gt_present is not None:
        gt = np.asarray(gt_present, dtype=bool)
        if gt.shape != (t,):
            raise ValueError(f"gt_present has shape {gt.shape}, expected ({t},)")
        bg[gt[col_frame]] = _STRIP_GT
    base = np.where(filled[..., None], _STRIP_BAR, bg[None])  # (height, width, 3)
    # the current frame: its own columns, and at least a 2-px line at its centre
    centre = np.minimum(((current + 0.5) * width / t).astype(np.int64), width - 1)
    cols = np.arange(width)[None, :]
    now = (col_frame[None, :] == current[:, None]) | (np.abs(cols - centre[:, None]) <= 1)  # (N, width)
    mark = now[:, None, :] & (filled[None] | (rows[None] < 3))  # bar plus a tick at the top
    out = np.broadcast_to(base, (len(current), height, width, 3)).copy()
    out[mark] = _STRIP_NOW
    return out


def _label_text(i: int, p: PredictionTrack, names: Mapping[int, str]) -> str:
    def name(c):
        return names.get(int(c), f"class {int(c)}")

    text = f"{p.name or f'#{i + 1}'}  {name(p.category_id)}  {p.score:.2f}"
    if p.true_category_id is not None:
        text += f"   (true: {name(p.true_category_id)})"
    return text


def _fitting_font(size: int, texts: Sequence[str], width: int) -> ImageFont.FreeTypeFont:
    """The largest font up to ``size`` (at least 7 px) whose widest line fits in ``width``."""
    font = _font(size)
    widest = max(font.getlength(t) for t in texts)
    budget = width - 3 * 4 - size  # padding and the colour swatch
    if widest > budget > 0:
        font = _font(max(7, int(size * budget / widest)))
    return font


def _legend_patch(lines: Sequence[tuple[str, tuple[int, int, int]]], font, width: int) -> np.ndarray:
    """An RGBA legend (swatch + text per line) on a translucent dark box."""
    pad, gap = 4, 2
    lh = font.size + gap
    w = min(width, pad * 3 + lh + max(int(font.getlength(t)) for t, _ in lines))
    img = Image.new("RGBA", (w, pad * 2 + lh * len(lines)), (0, 0, 0, 150))
    draw = ImageDraw.Draw(img)
    for k, (text, color) in enumerate(lines):
        y = pad + k * lh
        draw.rectangle((pad, y + 2, pad + lh - 4, y + lh - 2), fill=(*color, 255))
        draw.text((pad * 2 + lh - 2, y), text, font=font, fill=(255, 255, 255, 255))
    return np.asarray(img)


def iter_prediction_video(
    frames,
    predictions: Sequence[PredictionTrack] = (),
    *,
    category_names: Mapping[int, str] | None = None,
    attention=None,
    attention_scaling: str = "per_frame",
    attention_style: str = "smooth",
    input_hw: tuple[int, int] | None = None,
    padded_hw: tuple[int, int] | None = None,
    importance=None,
    gt_present=None,
    order_by_importance: bool = False,
    outline_px: int = 2,
    strip_height: int = 36,
    cmap: str = ATTENTION_CMAP,
    chunk_frames: int = 32,
) -> Iterator[np.ndarray]:
    """Render a video's predictions in chunks of at most ``chunk_frames`` displayed frames, each
    (n, H + strip, W, 3) uint8 (the strip only with importance); memory stays bounded for long videos.

    ``frames`` (T, H, W, 3) uint8 (or any array-like indexable by frame, e.g. a memory map). Each
    prediction's masks (T, H, W) are outlined in its species colour
    (:func:`colors.category_color`) and tagged ``#k`` where present; a legend lists tag, predicted
    species, score and the true species when given. ``attention`` (T, h, w) at feature resolution
    is blended on first (scaled over the whole video, see :func:`plots.scale_attention`;
    ``input_hw``/``padded_hw`` place it on the frame). ``importance`` (T,) adds the strip under the
    frames and feeds the weighted attention scalings. ``order_by_importance`` shows frames in
    decreasing importance (ties: earlier first); the strip then marks where each shown frame lies.
    """
    if not (hasattr(frames, "shape") and hasattr(frames, "dtype")):
        frames = np.asarray(frames)
    if frames.dtype != np.uint8 or len(frames.shape) != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"frames must be non-empty uint8 (T, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    if attention_style not in STYLES:
        raise ValueError(f"attention style {attention_style!r} is not one of {STYLES}")
    t, h, w = frames.shape[:3]
    names = dict(category_names or {})
    if importance is not None:
        importance = np.nan_to_num(np.asarray(importance, dtype=np.float32))
        if importance.shape != (t,):
            raise ValueError(f"frame importance has shape {importance.shape}, expected ({t},)")
    if order_by_importance and importance is None:
        raise ValueError("order_by_importance needs the frame importance (T,)")
    for p in predictions:
        if tuple(np.shape(p.masks)) != (t, h, w):
            raise ValueError(f"prediction masks have shape {tuple(np.shape(p.masks))}, frames need {(t, h, w)}")
    scaled = None
    if attention is not None:
        scaled = scale_attention(attention, attention_scaling, importance)
        if scaled.values.shape[0] != t:
            raise ValueError(f"{scaled.values.shape[0]} attention maps for {t} frames")

    font = _font(max(10, min(h, w) // 22))
    legend = None
    if predictions:
        lines = [(_label_text(i, p, names), category_color(p.category_id)) for i, p in enumerate(predictions)]
        legend = _legend_patch(lines, _fitting_font(font.size, [text for text, _ in lines], w), w)[:h]
    colors = [np.array(category_color(p.category_id), np.uint8) for p in predictions]
    order = np.argsort(-importance, kind="stable") if order_by_importance else np.arange(t)

    for start in range(0, t, max(1, int(chunk_frames))):
        idx = order[start : start + chunk_frames]
        canvas = np.asarray(frames[np.sort(idx)] if order_by_importance else frames[idx[0] : idx[-1] + 1])
        if order_by_importance:  # fancy indexing wants sorted indices for memory maps; restore the order
            canvas = canvas[np.argsort(np.argsort(idx))]
        canvas = canvas.copy()
        if scaled is not None:
            heat = resample_maps(scaled.values[idx], (h, w), mode="bilinear" if attention_style == "smooth"
                                 else "nearest", input_hw=input_hw, padded_hw=padded_hw)
            canvas = blend_heatmap(canvas, heat, cmap=cmap)
        tags = []  # (prediction, left, top) per displayed frame, for the text pass
        if predictions:
            masks = np.stack([np.asarray(p.masks[idx], dtype=bool) for p in predictions])  # (N, n, H, W)
            edges = mask_outlines(masks, outline_px)
            for n, color in enumerate(colors):  # a handful of instances; each paints the whole chunk
                canvas[edges[n]] = color
            present = masks.any(axis=(2, 3))
            top = masks.any(axis=3).argmax(axis=2)  # first row with mask pixels
            left = masks.any(axis=2).argmax(axis=2)  # first column with mask pixels
            tags = [[(n, int(left[n, k]), int(top[n, k])) for n in range(len(predictions)) if present[n, k]]
                    for k in range(len(idx))]
        if legend is not None:
            lh_, lw_ = legend.shape[:2]
            a = legend[..., 3:4].astype(np.float32) / 255.0
            region = canvas[:, :lh_, :lw_].astype(np.float32)
            canvas[:, :lh_, :lw_] = (region * (1 - a) + legend[None, ..., :3] * a + 0.5).astype(np.uint8)

        out = np.empty((len(idx), h + (strip_height if importance is not None else 0), w, 3), np.uint8)
        out[:, :h] = canvas
        if importance is not None:
            out[:, h:] = importance_strip(importance, w, strip_height, gt_present=gt_present, current=idx)
        for k, f in enumerate(idx.tolist()):  # text only: one PIL pass per frame
            img = Image.fromarray(out[k, :h])
            draw = ImageDraw.Draw(img)
            for n, x, y in tags[k] if tags else ():
                p = predictions[n]
                draw.text((x, max(0, y - font.size - 2)), p.name or f"#{n + 1}", font=font,
                          fill=tuple(int(c) for c in colors[n]), stroke_width=2, stroke_fill=(0, 0, 0))
            foot = f"frame {f + 1}/{t}"
            if importance is not None:
                foot += f"  importance {importance[f]:.3f}"
            if order_by_importance:
                foot += f"  (rank {start + k + 1})"
            draw.text((4, h - font.size - 6), foot, font=font, fill=(255, 255, 255),
                      stroke_width=2, stroke_fill=(0, 0, 0))
            out[k, :h] = np.asarray(img)
        yield out


def render_prediction_video(frames, predictions: Sequence[PredictionTrack] = (), **options) -> np.ndarray:
    """The whole rendered clip (T, H + strip, W, 3) uint8; options as :func:`iter_prediction_video`
    (use that, or :func:`write_mp4` with it, for long videos)."""
    return np.concatenate(list(iter_prediction_video(frames, predictions, **options)), axis=0)


def fit_video(video, max_side: int = 480) -> np.ndarray:
    """Downscale a (T, H, W, 3) uint8 clip (antialiased) so its longer side is at most ``max_side``."""
    video = np.asarray(video)
    h, w = video.shape[1:3]
    s = max_side / max(h, w)
    if s >= 1:
        return video
    size = (max(1, round(h * s)), max(1, round(w * s)))
    x = torch.from_numpy(video).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def _even(chunk: np.ndarray) -> np.ndarray:
    h, w = chunk.shape[1:3]
    return np.pad(chunk, ((0, 0), (0, h % 2), (0, w % 2), (0, 0))) if h % 2 or w % 2 else chunk


def write_mp4(
    video: np.ndarray | Iterable[np.ndarray], path: str | Path, fps: float = 10.0, quality: float = 7.0
) -> Path:
    """Encode a clip as H.264 MP4 (imageio-ffmpeg), atomically; returns the path.

    ``video``: a (T, H, W, 3) uint8 array, or an iterable of such chunks (e.g.
    :func:`iter_prediction_video`) so long videos never sit in memory whole. Odd sizes get one
    black row/column (yuv420p needs even sizes). The file appears only when complete (a temporary
    name in the same folder, then a rename); on any error nothing is left behind.
    """
    import imageio_ffmpeg

    chunks = [video] if isinstance(video, np.ndarray) else video
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh name ffmpeg creates itself (so the file gets the umask's permissions, unlike mkstemp's 0600)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}.mp4")
    writer, size, count = None, None, 0
    try:
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if chunk.dtype != np.uint8 or chunk.ndim != 4 or chunk.shape[-1] != 3:
                raise ValueError(f"video frames must be uint8 (T, H, W, 3), got {chunk.dtype} {chunk.shape}")
            if size is None:
                size = chunk.shape[1:3]
            elif chunk.shape[1:3] != size:
                raise ValueError(f"video frame size changed from {size} to {chunk.shape[1:3]}")
            if not len(chunk):
                continue
            chunk = _even(chunk)
            if writer is None:
                writer = imageio_ffmpeg.write_frames(
                    str(tmp), (chunk.shape[2], chunk.shape[1]), fps=fps, quality=quality, codec="libx264",
                    pix_fmt_out="yuv420p", macro_block_size=2, ffmpeg_log_level="error",
                    output_params=["-preset", X264_PRESET],
                )
                writer.send(None)
            for frame in chunk:  # the encoder takes one frame per send
                writer.send(np.ascontiguousarray(frame))
            count += len(chunk)
        if writer is None:
            raise ValueError(f"video for {path.name} has no frames")
        writer.close()
        writer = None
        os.replace(tmp, path)
    except BaseException:
        if writer is not None:
            writer.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
