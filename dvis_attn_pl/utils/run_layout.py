"""Where a run's intervention passes live (the run-directory schema that writers and readers share).

``<run>/interventions/<label>/`` holds one pass: its ``inference/`` files and ``intervention.json``,
written last (a pass without it did not finish).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["INTERVENTIONS_DIR", "PASS_RECORD", "completed_passes", "pass_dir"]

INTERVENTIONS_DIR = "interventions"
PASS_RECORD = "intervention.json"


def pass_dir(run_dir: Path, label: str) -> Path:
    """The folder of the pass ``label``."""
    return Path(run_dir) / INTERVENTIONS_DIR / label


def completed_passes(run_dir: Path) -> dict[str, dict]:
    """``label -> intervention.json`` of every finished pass in ``run_dir``, in label order."""
    root = Path(run_dir) / INTERVENTIONS_DIR
    found = {}
    for path in sorted(root.glob(f"*/{PASS_RECORD}")) if root.is_dir() else []:
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # an unreadable record: treated as an unfinished pass
    return found
