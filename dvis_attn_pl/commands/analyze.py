"""``python -m dvis_attn_pl analyze``: placeholder until the command is implemented."""

from __future__ import annotations

import argparse


def run_analyze(args: argparse.Namespace) -> int | None:
    """Run the ``analyze`` command with the parsed arguments; returns the exit status (None = 0)."""
    raise NotImplementedError
