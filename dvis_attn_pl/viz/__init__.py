"""Rendering of captured attention and predictions: figures, videos and TensorBoard events.

``plots`` (matplotlib figures over arrays), ``video`` (prediction clips, MP4), ``colors`` (the
species palette and colour maps), ``tensorboard`` (``RunBoard``). Everything takes arrays; reading
the run directory is the ``analyze`` command's job.
"""

from .colors import category_color, category_colors
from .plots import (
    SCALINGS,
    STYLES,
    attention_overlay,
    figure_to_array,
    plot_class_table,
    plot_decoder_attention,
    plot_frame_importance,
    plot_rollout,
    plot_temporal_attention,
    plot_tracker_attention,
    save_figure,
    scale_attention,
)
from .tensorboard import RunBoard, make_tag
from .video import PredictionTrack, fit_video, iter_prediction_video, render_prediction_video, write_mp4

__all__ = [
    "SCALINGS",
    "STYLES",
    "PredictionTrack",
    "RunBoard",
    "attention_overlay",
    "category_color",
    "category_colors",
    "figure_to_array",
    "fit_video",
    "iter_prediction_video",
    "make_tag",
    "plot_class_table",
    "plot_decoder_attention",
    "plot_frame_importance",
    "plot_rollout",
    "plot_temporal_attention",
    "plot_tracker_attention",
    "render_prediction_video",
    "save_figure",
    "scale_attention",
    "write_mp4",
]
