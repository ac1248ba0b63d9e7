"""Every workaround that leans on another library's private internals, in one place.

Each workaround is one small function with a version check: the versions it was tested against
are in :data:`TESTED` (and the upper bounds in ``pyproject.toml`` match them). Outside that range
the function warns once (:class:`UntestedVersionWarning`) and then either still applies the
workaround when the internal it needs is found (feature detection), or falls back to the library's
own behaviour when it is not. Nothing here imports torch, Lightning or torchmetrics at import time
(the command line imports this module before it knows whether it needs them).

Workarounds:

- :func:`disable_lightning_signal_handlers`: ``trainer._signal_connector`` (Lightning only notes a
  SIGTERM; our DDP guard stops the run instead);
- :func:`adopt_lightning_child_processes`: the ``_child_processes`` list of Lightning's
  ``child-process-observer`` thread (the DDP guard watches the child ranks itself);
- :func:`keep_metric_dtype`: torchmetrics' private ``Metric._dtype`` (reset to float32 on every move);
- :func:`file_being_written`: traceback frame locals (the file a background writer was writing);
- :func:`install_thread_excepthook`: the process-wide ``threading.excepthook`` (TensorBoard's
  writer thread errors are reported once, by the thread that writes next).
"""

from __future__ import annotations

import os
import re
import sys
import threading
import warnings
from functools import cache
from importlib import metadata

__all__ = [
    "TESTED",
    "UntestedVersionWarning",
    "adopt_lightning_child_processes",
    "disable_lightning_signal_handlers",
    "file_being_written",
    "install_thread_excepthook",
    "installed_version",
    "is_tested",
    "keep_metric_dtype",
]

# distribution -> [lowest, first untested) (major, minor): the versions these workarounds were run
# against (this machine and the GPU machine: torch 2.11 and 2.14, Lightning 2.6, torchmetrics 1.9).
TESTED: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "lightning": ((2, 6), (2, 7)),
    "torchmetrics": ((1, 9), (1, 10)),
    "torch": ((2, 11), (2, 15)),
    "tensorboard": ((2, 21), (2, 22)),  # no upper bound in pyproject: outside, the default hook prints
}

OBSERVER_THREAD = "child-process-observer"  # Lightning's _ChildProcessObserver thread name
WRITER_FILE_ATTRS = ("filename", "_file_name")  # e.g. tensorboard's EventFileWriter._file_name
TENSORBOARD_WRITER_MODULE = "tensorboard.summary.writer"


class UntestedVersionWarning(UserWarning):
    """A library version outside the range a workaround of its internals was tested against."""


_warned: set[str] = set()


@cache
def installed_version(dist: str) -> tuple[int, int] | None:
    """(major, minor) of an installed distribution, None when it is missing or unreadable."""
    try:
        text = metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
    match = re.match(r"(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def is_tested(dist: str, what: str) -> bool:
    """Whether the installed ``dist`` is in its :data:`TESTED` range; warns once per distribution
    when it is not (``what`` names the workaround in the warning)."""
    low, high = TESTED[dist]
    version = installed_version(dist)
    if version is not None and low <= version < high:
        return True
    if dist not in _warned:
        _warned.add(dist)
        found = "not installed" if version is None else f"{version[0]}.{version[1]}"
        warnings.warn(
            f"{dist} {found} is outside the versions {what} was tested with "
            f"(>={low[0]}.{low[1]}, <{high[0]}.{high[1]}); it is applied only where the internal it "
            "needs is found",
            UntestedVersionWarning,
            stacklevel=3,
        )
    return False


# ------------------------------------------------------------------ Lightning
def disable_lightning_signal_handlers(trainer) -> bool:
    """Keep Lightning from installing its SIGTERM handler (it only notes the signal, and runs a
    collective inside the handler, which can hang a DDP job). True when it was disabled; with a
    Lightning that has no ``_signal_connector`` nothing is done (its own handlers stay)."""
    is_tested("lightning", "disabling Lightning's signal handlers")
    connector = getattr(trainer, "_signal_connector", None)
    if connector is None or not hasattr(connector, "register_signal_handlers"):
        return False
    connector.register_signal_handlers = lambda: None
    return True


def adopt_lightning_child_processes() -> list | None:
    """Take the child ranks (``subprocess.Popen``) over from Lightning's observer thread, which then
    ends quietly at its next round (``all([])`` is True); None while no such thread watches any
    child (not started yet, or a Lightning without it: the caller keeps polling or stands back)."""
    is_tested("lightning", "taking over Lightning's child-process observer")
    for thread in threading.enumerate():
        procs = getattr(thread, "_child_processes", None)
        if thread.name == OBSERVER_THREAD and isinstance(procs, list) and procs:
            thread._child_processes = []
            return list(procs)
    return None


# ------------------------------------------------------------------ torchmetrics
def keep_metric_dtype(metric, dtype) -> bool:
    """Set a torchmetrics ``Metric``'s private ``_dtype`` (torchmetrics resets it to float32 on every
    ``.to(device)``; ``set_dtype`` would also cast the states). True when it was set; False with a
    torchmetrics that has no ``_dtype`` (then its own dtype handling stays)."""
    is_tested("torchmetrics", "keeping a metric's dtype across moves")
    if not hasattr(metric, "_dtype"):
        return False
    metric._dtype = dtype
    return True


# ------------------------------------------------------------------ tracebacks and threads
def file_being_written(exc: BaseException) -> str | None:
    """The file a writer object (a frame's ``self`` with ``filename`` or ``_file_name``) in ``exc``'s
    traceback was writing, innermost first; None when there is none or frames have no locals
    (an interpreter other than CPython)."""
    if sys.implementation.name != "cpython":
        return None
    found = None
    tb = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        for attr in WRITER_FILE_ATTRS:
            value = getattr(owner, attr, None) if owner is not None else None
            if isinstance(value, (str, bytes)) and value:
                found = os.fsdecode(value)
                break
        tb = tb.tb_next
    return found


def _is_tensorboard_writer(thread: threading.Thread | None) -> bool:
    return type(thread).__module__.startswith(TENSORBOARD_WRITER_MODULE)


def _thread_hook(args) -> None:
    """TensorBoard's writer thread re-raises its error in the thread that writes next, which reports
    it as one line: do not print the thread's own traceback as well."""
    if (
        _is_tensorboard_writer(args.thread)
        and isinstance(args.exc_value, OSError)
        and is_tested("tensorboard", "quieting TensorBoard's writer thread errors")
    ):
        return
    _previous_thread_hook(args)


_previous_thread_hook = threading.excepthook


def install_thread_excepthook() -> None:
    """Install :func:`_thread_hook` as the process-wide ``threading.excepthook`` (once; every other
    thread error goes to the hook that was there before)."""
    if threading.excepthook is not _thread_hook:
        threading.excepthook = _thread_hook
