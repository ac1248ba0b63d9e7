"""``RunBoard``: the run's TensorBoard events, with the project's tag scheme.

Tags are ``<kind>/video_<id>[/instance_<k>][/<extra>]`` (e.g. ``decoder_attention/video_12/instance_0``),
so TensorBoard groups cards by kind and the tag filter finds a video. Per-frame images and
per-frame curves use the frame index as the step: the image card's slider walks through the video.
Metrics are scalars under ``metrics/`` (``metrics/AP``), the run's config is logged as hparams
(flattened to ``A.B.C`` keys, scalar values only), summaries as markdown text tables, and clips as
animated GIF image summaries (they play in the Images tab).

TensorBoard shows only 10 images per tag by default (a random sample of the steps); browse with
``tensorboard --logdir RUN --samples_per_plugin images=10000`` to step through every frame
(:data:`TENSORBOARD_ARGS`). Not ``images=0``: the images plugin then serves no image at all.

Why GIFs are encoded here rather than by ``SummaryWriter.add_video``: ``add_video`` goes through
moviepy and, with moviepy 2.x, silently writes nothing; with moviepy 1.0.3 it does work (checked:
its summary decodes to a GIF with every frame), but encoding with PIL needs neither moviepy nor a
temporary file and gives the same kind of summary.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from tensorboard.compat.proto.summary_pb2 import Summary
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams as hparams_summaries
from torch.utils.tensorboard.summary import text as text_summary

from .plots import figure_to_png
from .video import fit_video

__all__ = [
    "KINDS",
    "TENSORBOARD_ARGS",
    "RunBoard",
    "encode_gif",
    "flatten_config",
    "make_tag",
    "markdown_table",
    "metrics_layout",
]

KINDS = (
    "decoder_attention",
    "temporal_attention",
    "rollout",
    "frame_importance",
    "tracker_attention",
    "predictions",
    "summary",
)
TENSORBOARD_ARGS = ("--samples_per_plugin", "images=10000")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")


def _part(value: object) -> str:
    text = _UNSAFE.sub("_", str(value)).strip("_")
    if not text:
        raise ValueError(f"tag component {value!r} is empty after removing unsafe characters")
    return text


def make_tag(kind: str, video_id: object = None, instance: object = None, *extra: object) -> str:
    """``kind/video_<id>/instance_<k>/<extra...>`` (components after ``kind`` optional)."""
    parts = [_part(kind)]
    if video_id is not None:
        parts.append(f"video_{_part(video_id)}")
    if instance is not None:
        parts.append(f"instance_{_part(instance)}")
    parts.extend(_part(e) for e in extra)
    return "/".join(parts)


def flatten_config(config: Mapping, prefix: str = "") -> dict[str, bool | int | float | str]:
    """Nested mapping (e.g. a CfgNode) -> ``{"A.B.C": value}`` keeping bool/int/float/str values."""
    out: dict[str, bool | int | float | str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_config(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
        elif isinstance(value, np.generic) and np.ndim(value) == 0:
            out[name] = value.item()
    return out


def _md_cell(value: object) -> str:
    if isinstance(value, float):
        value = "n/a" if not math.isfinite(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Sequence[Mapping], columns: Sequence[str] | None = None) -> str:
    """A GitHub-style markdown table (TensorBoard's text tab renders it); columns default to the
    keys of the rows in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    if not columns:
        return "(empty table)"
    lines = ["| " + " | ".join(_md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def metrics_layout(tags: Sequence[str], category: str = "metrics") -> dict:
    """A custom-scalars layout: AP-family tags on one chart, AR-family on another, the rest alone."""
    groups: dict[str, list[str]] = {}
    for tag in tags:
        leaf = tag.rsplit("/", 1)[-1]
        family = "AP" if leaf.startswith("AP") else "AR" if leaf.startswith("AR") else leaf
        groups.setdefault(family, []).append(tag)
    return {category: {fam: ["Multiline", [f"^{re.escape(t)}$" for t in ts]] for fam, ts in groups.items()}}


GIF_PALETTE_FRAMES = 8  # frames sampled (evenly) to build the clip's one palette


def encode_gif(video, fps: float = 8.0) -> bytes:
    """Animated GIF bytes (looping) of a (T, H, W, 3) uint8 clip.

    One 256-colour palette for the whole clip, built from a few evenly spaced frames (fast
    octree), and each frame mapped to it without dithering: ~40x faster than PIL's per-frame
    adaptive quantisation, and the colours do not flicker between frames.
    """
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3 or video.shape[0] == 0:
        raise ValueError(f"video must be non-empty uint8 (T, H, W, 3), got {video.dtype} {video.shape}")
    picks = np.unique(np.linspace(0, len(video) - 1, min(len(video), GIF_PALETTE_FRAMES)).round().astype(int))
    sample = Image.fromarray(np.ascontiguousarray(np.concatenate(video[picks], axis=0)))
    palette = sample.quantize(colors=256, method=Image.Quantize.FASTOCTREE)
    images = [Image.fromarray(f).quantize(palette=palette, dither=Image.Dither.NONE) for f in video]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(20, round(1000 / fps)), loop=0)
    return buf.getvalue()


def remove_empty_event_files(folder: Path) -> None:
    """Delete the empty (0-byte) ``events.out.tfevents.*`` files under ``folder``: a writer that failed
    before its header leaves one, which no reader can open."""
    for path in Path(folder).rglob("events.out.tfevents.*"):
        try:
            if path.stat().st_size == 0:
                path.unlink()
        except OSError:
            pass


class RunBoard:
    """A run's TensorBoard writer with the project's tags (usable as a context manager)."""

    def __init__(self, log_dir: str | Path, *, max_image_side: int = 800, flush_secs: int = 30):
        self.log_dir = Path(log_dir)
        self.max_image_side = max_image_side
        self._before = set(self._event_files())
        self.writer = SummaryWriter(log_dir=str(self.log_dir), flush_secs=flush_secs)

    tag = staticmethod(make_tag)

    # -- scalars and run-level records
    def add_metrics(self, metrics: Mapping[str, float], step: int = 0, prefix: str = "metrics") -> dict[str, float]:
        """Log numeric metrics as ``<prefix>/<name>`` scalars; returns ``{tag: value}`` of those logged."""
        logged = {}
        for name, value in metrics.items():
            if isinstance(value, (bool, int, float, np.number)):
                tag = f"{prefix}/{_part(name)}"
                self.writer.add_scalar(tag, float(value), step)
                logged[tag] = float(value)
        return logged

    def add_curve(self, kind: str, values, *, video_id: object, instance: object = None) -> str:
        """A per-frame curve (T,) as scalars, step = frame index (e.g. frame importance)."""
        tag = make_tag(kind, video_id, instance)
        for t, v in enumerate(np.asarray(values, dtype=np.float64).reshape(-1).tolist()):
            self.writer.add_scalar(tag, v, t)
        return tag

    def add_hparams(self, config: Mapping, metric_tags: Sequence[str] | Mapping[str, float] = ()) -> dict:
        """Log the run's config (flattened, scalar values) as hparams, linked to scalar metric tags
        already logged in this run (e.g. the keys :meth:`add_metrics` returned)."""
        flat = flatten_config(config)
        exp, ssi, sei = hparams_summaries(flat, {t: 0.0 for t in metric_tags})
        fw = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            fw.add_summary(summary)
        return flat

    def add_layout(self, layout: Mapping) -> None:
        """Custom-scalars layout ``{category: {chart: ["Multiline"|"Margin", [tag regexes]]}}``."""
        self.writer.add_custom_scalars(dict(layout))

    def add_text_table(self, tag: str, rows: Sequence[Mapping], columns: Sequence[str] | None = None,
                       step: int = 0, preamble: str = "") -> str:
        """A markdown table in the Text tab; returns the markdown."""
        text = (preamble + "\n\n" if preamble else "") + markdown_table(rows, columns)
        self.add_markdown(tag, text, step)
        return text

    def add_markdown(self, tag: str, text: str, step: int = 0) -> None:
        """Markdown in the Text tab under exactly ``tag`` (``SummaryWriter.add_text`` would append
        ``/text_summary`` to it)."""
        summary = text_summary(tag, text)
        summary.value[0].tag = tag
        self.writer._get_file_writer().add_summary(summary, step)

    # -- images
    def add_image(self, tag: str, image, step: int = 0) -> None:
        """One (H, W, 3) uint8 image (downscaled to ``max_image_side``)."""
        img = fit_video(np.asarray(image)[None], self.max_image_side)[0]
        self.writer.add_image(tag, img, step, dataformats="HWC")

    def add_figure(self, tag: str, fig: Figure, step: int = 0, dpi: int = 100) -> bytes:
        """A matplotlib figure rendered with Agg; returns the PNG (to save it too without a re-render)."""
        png = figure_to_png(fig, dpi=dpi)
        self.add_png(tag, png, step)
        return png

    def add_png(self, tag: str, png: bytes, step: int = 0) -> None:
        """An already encoded PNG (e.g. from :func:`plots.figure_to_png`) as an image summary."""
        with Image.open(io.BytesIO(png)) as im:
            if im.format != "PNG":
                raise ValueError(f"image for tag {tag!r} is {im.format}, not PNG")
            width, height = im.size
        self._add_encoded(tag, png, width, height, step)

    def _add_encoded(self, tag: str, data: bytes, width: int, height: int, step: int) -> None:
        image = Summary.Image(height=height, width=width, colorspace=3, encoded_image_string=data)
        self.writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]), step)

    def add_frame_images(self, kind: str, frames, *, video_id: object, instance: object = None,
                         frame_indices: Sequence[int] | None = None) -> str:
        """Per-frame images (T, H, W, 3) uint8 under one tag, step = frame index."""
        frames = fit_video(frames, self.max_image_side)
        steps = range(len(frames)) if frame_indices is None else [int(i) for i in frame_indices]
        if len(steps) != len(frames):
            raise ValueError(f"{len(frames)} frames but {len(steps)} frame indices")
        tag = make_tag(kind, video_id, instance)
        for step, frame in zip(steps, frames):  # one encoded image per frame
            self.writer.add_image(tag, frame, step, dataformats="HWC")
        return tag

    def add_animation(self, tag: str, video, step: int = 0, fps: float = 8.0, max_side: int = 480) -> None:
        """An animated GIF image summary (plays in the Images tab) of a (T, H, W, 3) uint8 clip."""
        clip = fit_video(video, max_side)
        self._add_encoded(tag, encode_gif(clip, fps), clip.shape[2], clip.shape[1], step)

    # -- lifecycle
    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file. If that fails (e.g. the disk is full) the event file this
        board wrote is incomplete: it is removed (a rerun logs everything again) and the error raised."""
        try:
            self.writer.close()
        except OSError:
            self.remove_own_event_files()
            raise

    def remove_own_event_files(self) -> None:
        """Delete the ``events.out.tfevents.*`` file(s) created since this board was opened (found
        when removing: the writer may create its file after the constructor returns), and any empty
        one in the folder (an event file without even its header is never readable)."""
        for path in self._event_files():
            try:
                if path not in self._before or path.stat().st_size == 0:
                    path.unlink(missing_ok=True)
            except OSError:
                pass

    def _event_files(self) -> list[Path]:
        return list(self.log_dir.glob("events.out.tfevents.*"))

    def __enter__(self) -> RunBoard:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.close()
        finally:
            if isinstance(exc, OSError):
                self.remove_own_event_files()
