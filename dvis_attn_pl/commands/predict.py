"""``python -m dvis_attn_pl predict``: inference and attention capture on unlabelled videos."""

from __future__ import annotations

import argparse


def run_predict(args: argparse.Namespace) -> int:
    """Run the ``predict`` command with the parsed arguments; returns the exit status."""
    from ..cli import run_options
    from ..run.runner import execute

    return execute(run_options(args))
