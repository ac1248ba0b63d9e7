"""Causal cue tests: interventions on the input or inside the model, run as extra passes of a run.

See ``docs/interventions.md``: :mod:`.spec` (what each intervention removes and keeps),
:mod:`.frames` (altered frames and ground truth), :mod:`.knockouts` (forward hooks),
:mod:`.passes` (the run-directory layout of a pass).
"""

from .frames import AlteredVideos, UnalteredRun, frame_order
from .knockouts import knockout
from .passes import INTERVENTIONS_DIR, completed_passes, pass_dir, write_pass_summary
from .spec import FREEZE_FRAMES, INTERVENTIONS, Intervention, parse_interventions

__all__ = [
    "AlteredVideos",
    "FREEZE_FRAMES",
    "INTERVENTIONS",
    "INTERVENTIONS_DIR",
    "Intervention",
    "UnalteredRun",
    "completed_passes",
    "frame_order",
    "knockout",
    "parse_interventions",
    "pass_dir",
    "write_pass_summary",
]
