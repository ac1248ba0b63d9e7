"""Resident-set-size measurements for memory tests (Linux ``/proc``; not a test module).

``reset_peak()`` writes 5 to ``/proc/self/clear_refs``, which resets the kernel's high-water mark
(``VmHWM``) to the current RSS (Linux >= 4.0), so the peak of one phase can be read in-process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mib(field: str) -> float | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return None


def rss_mib() -> float | None:
    """Current RSS in MiB (None where ``/proc`` is not available)."""
    return _status_mib("VmRSS")


def release_free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``), so that
    memory freed by earlier work does not hide the next phase's growth."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass


def reset_peak() -> bool:
    """Reset the high-water mark to the current RSS; False when the platform cannot."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_mib("VmHWM") is not None


def peak_mib() -> float:
    """Peak RSS in MiB since the last successful :func:`reset_peak` (or since the process started)."""
    hwm = _status_mib("VmHWM")
    if hwm is not None:
        return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
