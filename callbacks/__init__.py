"""Lightning callbacks of the harness: writers, attention capture, rollout, TensorBoard logging."""

from .deletion_curves import DeletionCurves
from .prediction_writer import PredictionWriter

__all__ = ["DeletionCurves", "PredictionWriter"]

# Attention capture, its background writer and the temporal rollout (a processor of the capture).
from .attention_capture import AttentionCapture, VideoCapture, VideoProcessor  # noqa: E402
from .attention_store import AttentionStore, AttentionStoreError, merge_manifest  # noqa: E402
from .capture_callbacks import build_capture_callbacks  # noqa: E402
from .temporal_rollout import TemporalRollout  # noqa: E402

__all__ += [
    "AttentionCapture",
    "AttentionStore",
    "AttentionStoreError",
    "TemporalRollout",
    "VideoCapture",
    "VideoProcessor",
    "build_capture_callbacks",
    "merge_manifest",
]
