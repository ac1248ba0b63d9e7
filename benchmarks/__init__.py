"""Benchmarks of dvis_attn_pl: what capture costs, how fast rollout and the metric are, how memory grows.

Run them all with ``python benchmarks/run_all.py [--quick] [--device cpu|cuda]`` (see
``docs/benchmarks.md``). Every benchmark function returns a list of :class:`Row`; this module holds
what they share: the row, the interleaved timer and the device synchronisation.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["Row", "interleaved", "paired_ratios", "resolve_device", "synchronize", "timed_ratio_row"]

RATIO_KINDS = ("slowdown", "speedup", "growth", "size")


@dataclass
class Row:
    """One line of the results table.

    ``value``/``base_value`` are medians in ``unit`` of the variant and of what it is compared with;
    ``ratio`` is ``value / base_value`` for ``slowdown`` and ``growth`` rows and ``base_value /
    value`` for ``speedup`` rows (``size`` rows have no ratio); ``spread`` is the (min, max) of the
    per-repeat paired ratios. ``met`` is None where the target does not apply to this machine.
    """

    benchmark: str
    case: str
    variant: str
    baseline: str
    value: float | None
    base_value: float | None
    unit: str
    ratio: float | None = None
    ratio_kind: str = "slowdown"
    spread: tuple[float, float] | None = None
    repeats: int = 1
    target: str = ""
    met: bool | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ratio_kind not in RATIO_KINDS:
            raise ValueError(f"ratio_kind {self.ratio_kind!r} is not one of {RATIO_KINDS}")

    def as_dict(self) -> dict:
        """JSON-able form (for ``--json``)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def resolve_device(name: str | None) -> torch.device:
    """``cpu``/``cuda``/None (cuda when available); a clear error when cuda is asked for but absent."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available on this machine")
    return device


def synchronize(device: torch.device | str) -> None:
    """Wait for queued device work (a no-op on the CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(
    variants: dict[str, Callable[[], object]],
    repeats: int,
    *,
    warmup: int = 1,
    device: torch.device | str = "cpu",
) -> dict[str, list[float]]:
    """Wall seconds of each variant over ``repeats`` rounds, all variants in every round.

    The order rotates from round to round, so slow drifts of the machine (other processes, clock
    changes) fall on every variant alike. ``warmup`` untimed rounds come first.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            variants[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            synchronize(device)
            start = time.perf_counter()
            variants[name]()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratios(variant: list[float], base: list[float]) -> list[float]:
    """Per-round ratios ``variant[i] / base[i]``."""
    return [v / b for v, b in zip(variant, base) if b > 0]


def timed_ratio_row(
    benchmark: str,
    case: str,
    variant: str,
    baseline: str,
    times: list[float],
    base_times: list[float],
    *,
    unit: str = "s",
    scale: float = 1.0,
    ratio_kind: str = "slowdown",
    target: str = "",
    limit: float | None = None,
    note: str = "",
) -> Row:
    """A row from two lists of interleaved timings (seconds; shown times ``scale`` in ``unit``).

    The ratio is that of the medians; the spread is the range of the per-round paired ratios.
    ``limit`` (a slowdown ratio not to exceed, or a speed-up to reach) fills ``met``.
    """
    med, base_med = statistics.median(times), statistics.median(base_times)
    pairs = paired_ratios(times, base_times)
    if ratio_kind == "speedup":
        ratio = base_med / med
        pairs = [1.0 / p for p in pairs]
        met = None if limit is None else ratio >= limit
    else:
        ratio = med / base_med
        met = None if limit is None else ratio <= limit
    return Row(
        benchmark=benchmark,
        case=case,
        variant=variant,
        baseline=baseline,
        value=med * scale,
        base_value=base_med * scale,
        unit=unit,
        ratio=ratio,
        ratio_kind=ratio_kind,
        spread=(min(pairs), max(pairs)) if pairs else None,
        repeats=len(times),
        target=target,
        met=met,
        note=note,
    )
