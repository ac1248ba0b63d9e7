"""``python -m dvis_attn_pl predict``: placeholder until the command is implemented."""

from __future__ import annotations

import argparse


def run_predict(args: argparse.Namespace) -> int | None:
    """Run the ``predict`` command with the parsed arguments; returns the exit status (None = 0)."""
    raise NotImplementedError
