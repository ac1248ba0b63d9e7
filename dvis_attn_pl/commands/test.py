"""``python -m dvis_attn_pl test``: inference, YTVIS metric and attention capture on a labelled set."""

from __future__ import annotations

import argparse


def run_test(args: argparse.Namespace) -> int:
    """Run the ``test`` command with the parsed arguments; returns the exit status."""
    from ..cli import run_options
    from ..run.runner import execute

    return execute(run_options(args))
