"""Test-only fault injection: make one process of a run fail at a chosen video, to check how runs
survive faults. Nothing in the package knows about it.

Run the command line through this module instead of ``dvis_attn_pl``::

    python -m tests.fault_injection test --data ... --devices 2

(Lightning's launcher re-runs ``python -m tests.fault_injection ...`` for ranks 1..N-1, so every
rank gets the hook.) With ``DVIS_ATTN_PL_FAULT=<action>:<rank>:<step>`` set, when the process of
global rank ``<rank>`` starts its ``<step>``-th video (0-based, counted per process: the module's
``videos_run``), it

- ``raise``: raises :class:`InjectedFault` (an error inside the loop);
- ``exit``:  ends the process at once with status 3 (``os._exit``, no clean-up);
- ``kill``:  sends itself SIGKILL (as the out-of-memory killer or a scheduler would).

With ``DVIS_ATTN_PL_FAULT_STAMP=<file>`` also set, the wall-clock time (``time.time()``) at which the
fault fires is written to that file first, so a test can measure how long the job takes to stop.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time

FAULT_ENV = "DVIS_ATTN_PL_FAULT"
STAMP_ENV = "DVIS_ATTN_PL_FAULT_STAMP"
ACTIONS = ("raise", "exit", "kill")


class InjectedFault(MemoryError):
    """The error raised by ``DVIS_ATTN_PL_FAULT=raise:...``. A ``MemoryError``: like running out of
    memory inside the loop, an environment failure that the command line reports as one line
    (``InjectedFault: ...``) without a traceback."""


def parse_fault(text: str) -> tuple[str, int, int]:
    """``"raise:1:2"`` -> ("raise", 1, 2); ValueError for anything else."""
    parts = text.split(":")
    try:
        action, rank, step = parts[0], int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        action = ""
    if len(parts) != 3 or action not in ACTIONS:
        raise ValueError(f"{FAULT_ENV}={text!r}: expected <{'|'.join(ACTIONS)}>:<rank>:<step>, e.g. raise:1:0")
    return action, rank, step


def maybe_fault(rank: int, step: int) -> None:
    """Fail here if ``DVIS_ATTN_PL_FAULT`` asks for it at this rank and step."""
    text = os.environ.get(FAULT_ENV)
    if not text:
        return
    action, want_rank, want_step = parse_fault(text)
    if (rank, step) != (want_rank, want_step):
        return
    stamp = os.environ.get(STAMP_ENV)
    if stamp:
        with open(stamp, "w") as f:
            f.write(f"{time.time():.3f}\n")
    if action == "raise":
        raise InjectedFault(f"injected fault on rank {rank} at video {step} ({FAULT_ENV}={text})")
    if action == "exit":
        os._exit(3)
    os.kill(os.getpid(), signal.SIGKILL)


def install() -> None:
    """Call :func:`maybe_fault` at the start of every video the Lightning module runs."""
    from dvis_attn_pl.lightning_module import DVISDAQModule

    if getattr(DVISDAQModule.infer, "_fault_hook", False):
        return
    infer = DVISDAQModule.infer

    @functools.wraps(infer)
    def infer_with_fault(self, video):
        maybe_fault(self.global_rank, self.videos_run)
        return infer(self, video)

    infer_with_fault._fault_hook = True
    DVISDAQModule.infer = infer_with_fault


def command(*args: str) -> list[str]:
    """The command line to run ``dvis_attn_pl <args>`` with the fault hook."""
    return [sys.executable, "-m", "tests.fault_injection", *args]


if __name__ == "__main__":
    install()
    from dvis_attn_pl.cli import main

    sys.exit(main())
