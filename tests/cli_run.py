"""Running the real command line in a subprocess, as a user would (shared by the CLI tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SMALL = ["INPUT.MIN_SIZE_TEST", "64"]  # KEY VALUE overrides go last on the command line


def cli_env(threads: int = 1) -> dict[str, str]:
    """The environment of a CLI subprocess: few threads, unbuffered, no run directory inherited."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
    env.pop("DVIS_ATTN_PL_RUN_DIR", None)
    return env


def run_cli(args: list[str], threads: int = 1, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m dvis_attn_pl ARGS`` from the repository root; stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "dvis_attn_pl", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(threads),
        cwd=REPO,
    )


def data_args(root: Path) -> list[str]:
    """``--data``/``--frames`` of a data set written by ``write_synthetic_dataset``."""
    return ["--data", str(root / "valid.json"), "--frames", str(root / "JPEGImages")]
