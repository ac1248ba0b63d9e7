"""The YouTube-VIS video mask AP: ``evaluate_ytvis`` for files, ``YTVISMetric`` inside Lightning loops."""

from .evaluate import evaluate_ytvis
from .video_ap import STAT_NAMES
from .ytvis_inputs import YTVISInputError

__all__ = ["STAT_NAMES", "YTVISInputError", "evaluate_ytvis", "YTVISMetric"]


def __getattr__(name: str):
    if name == "YTVISMetric":  # torchmetrics is imported only when the metric class is used
        from .metric import YTVISMetric

        return YTVISMetric
    raise AttributeError(name)
