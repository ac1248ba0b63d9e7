"""Where an intervention pass lives in the run directory, and what it records there.

``<run>/interventions/<label>/`` holds the pass's ``inference/`` files (the same files as the
unaltered pass: results, temporal records, metrics) and ``intervention.json``: what the pass
removed and kept, and per video the frame order it showed. ``intervention.json`` is written
last: a pass without it did not finish.
"""

from __future__ import annotations

from pathlib import Path

from ..metrics.ytvis_eval import STAT_NAMES
from ..utils.io_utils import atomic_write_json
from ..utils.run_layout import INTERVENTIONS_DIR, RunLayout, completed_passes, pass_dir
from .spec import Intervention

__all__ = ["INTERVENTIONS_DIR", "pass_dir", "write_pass_summary", "completed_passes"]


def write_pass_summary(out: Path, intervention: Intervention, orders: dict[str, list[int]], metric_results) -> None:
    """``inference/metrics.json`` (test only) and then ``intervention.json`` of a finished pass."""
    if metric_results is not None:
        per_category = metric_results.get("per_category", {})
        metrics = {
            "ytvis": {k: float(v) for k, v in metric_results.items() if k in STAT_NAMES},
            "per_category_AP": {str(k): float(v) for k, v in per_category.items()},
        }
        atomic_write_json(RunLayout(out).metrics, metrics, indent=1)
    atomic_write_json(RunLayout(out).pass_record, {**intervention.describe(), "frame_order": orders}, indent=1)
