"""``python -m dvis_attn_pl evaluate``: placeholder until the command is implemented."""

from __future__ import annotations

import argparse


def run_evaluate(args: argparse.Namespace) -> int | None:
    """Run the ``evaluate`` command with the parsed arguments; returns the exit status (None = 0)."""
    raise NotImplementedError
