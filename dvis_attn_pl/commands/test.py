"""``python -m dvis_attn_pl test``: placeholder until the command is implemented."""

from __future__ import annotations

import argparse


def run_test(args: argparse.Namespace) -> int | None:
    """Run the ``test`` command with the parsed arguments; returns the exit status (None = 0)."""
    raise NotImplementedError
