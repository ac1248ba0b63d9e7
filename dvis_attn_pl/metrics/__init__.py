"""The YouTube-VIS video mask AP: ``evaluate_ytvis`` for files, ``YTVISMetric`` inside Lightning loops.

``ytvis_io`` reads and checks the json inputs, ``ytvis_overlap`` computes video IoUs (RLE or mask
tensors), ``ytvis_eval`` matches, accumulates and summarises as the official ``YTVOSeval``,
``ytvis_metric`` wraps it all as a ``torchmetrics.Metric``.
"""

from .ytvis_eval import STAT_NAMES, evaluate_ytvis
from .ytvis_io import YTVISInputError

__all__ = ["STAT_NAMES", "YTVISInputError", "YTVISMetric", "evaluate_ytvis"]


def __getattr__(name: str):
    if name == "YTVISMetric":  # torchmetrics is imported only when the metric class is used
        from .ytvis_metric import YTVISMetric

        return YTVISMetric
    raise AttributeError(name)
