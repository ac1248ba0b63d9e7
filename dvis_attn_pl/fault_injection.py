"""A test hook that makes one process fail at a chosen video, to check how runs survive faults.

Set ``DVIS_ATTN_PL_FAULT=<action>:<rank>:<step>``: when the process of global rank ``<rank>``
starts its ``<step>``-th video (0-based, counted per process), it

- ``raise``: raises :class:`InjectedFault` (an ordinary error inside the loop);
- ``exit``:  ends the process at once with status 3 (``os._exit``, no clean-up);
- ``kill``:  sends itself SIGKILL (as the out-of-memory killer or a scheduler would).

Unset (the normal case) it costs one dictionary lookup per video. With
``DVIS_ATTN_PL_FAULT_STAMP=<file>`` also set, the wall-clock time (``time.time()``) at which the
fault fires is written to that file first, so a test can measure how long the job takes to stop.
"""

from __future__ import annotations

import os
import signal
import time

from .errors import UserError

FAULT_ENV = "DVIS_ATTN_PL_FAULT"
STAMP_ENV = "DVIS_ATTN_PL_FAULT_STAMP"
ACTIONS = ("raise", "exit", "kill")


class InjectedFault(RuntimeError):
    """The error raised by ``DVIS_ATTN_PL_FAULT=raise:...``."""


def parse_fault(text: str) -> tuple[str, int, int]:
    """``"raise:1:2"`` -> ("raise", 1, 2); a one-line error for anything else."""
    parts = text.split(":")
    try:
        action, rank, step = parts[0], int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        action = ""
    if len(parts) != 3 or action not in ACTIONS:
        raise UserError(f"{FAULT_ENV}={text!r}: expected <{'|'.join(ACTIONS)}>:<rank>:<step>, e.g. raise:1:0")
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
