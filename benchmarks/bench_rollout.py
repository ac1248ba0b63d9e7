"""Benchmark: temporal rollout, batched on the device vs a plain NumPy loop per instance and layer.

Input: head-averaged refiner time attention of N instances, L layers, T frames (random row-stochastic
matrices). ``temporal_rollout`` (rownorm(A + I), last layer leftmost) runs every instance at once
with batched matrix products; the reference loops over instances and layers in Python with NumPy
matrix products, as a straightforward implementation would. Both give the same R (checked).

    python benchmarks/bench_rollout.py [--device cpu] [--cases 40x36,200x300]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import Row, interleaved, resolve_device, synchronize, timed_ratio_row
from dvis_attn_pl.analysis.rollout import temporal_rollout

__all__ = ["ROLLOUT_TARGET_MS", "bench_rollout", "numpy_rollout", "random_attention"]

#: GPU target: 200 instances x 300 frames x 6 layers in under this many milliseconds.
ROLLOUT_TARGET_MS = 10.0
DEFAULT_CASES = ((40, 36), (200, 36), (40, 300), (200, 300))


def random_attention(instances: int, layers: int, frames: int, seed: int = 0) -> torch.Tensor:
    """(N, L, T, T) float32 rows summing to one (softmax of scaled Gaussian scores)."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(instances, layers, frames, frames, generator=gen) * 3.0
    return scores.softmax(dim=-1)


def numpy_rollout(attn: np.ndarray) -> np.ndarray:
    """Reference: for each instance, for each layer, R = rownorm(A_k + I) @ R (float32)."""
    n, layers, t, _ = attn.shape
    eye = np.eye(t, dtype=attn.dtype)
    out = np.empty((n, t, t), dtype=attn.dtype)
    for i in range(n):
        result = None
        for k in range(layers):
            step = attn[i, k] + eye
            step = step / step.sum(axis=1, keepdims=True)
            result = step if result is None else step @ result
        out[i] = result
    return out


def bench_rollout(
    cases: tuple[tuple[int, int], ...] = DEFAULT_CASES,
    *,
    layers: int = 6,
    repeats: int = 5,
    numpy_repeats: int | None = None,
    warmup: int = 1,
    device: str | torch.device = "cpu",
) -> list[Row]:
    """One row per (instances, frames) case: device rollout time vs the NumPy loop (speed-up).

    The device input is already on the device (captured attention stays there until rollout);
    the NumPy input is a host array. ``numpy_repeats`` (default ``repeats``) limits the rounds
    of the slow reference: the first ``numpy_repeats`` rounds run both, later rounds only ours.
    """
    device = resolve_device(str(device))
    numpy_repeats = repeats if numpy_repeats is None else max(1, min(numpy_repeats, repeats))
    return [
        _rollout_case(instances, frames, layers, repeats, numpy_repeats, warmup, device)
        for instances, frames in cases
    ]


def _rollout_case(
    instances: int,
    frames: int,
    layers: int,
    repeats: int,
    numpy_repeats: int,
    warmup: int,
    device: torch.device,
) -> Row:
    attn = random_attention(instances, layers, frames)
    host = attn.numpy()
    on_device = attn.to(device)
    synchronize(device)
    results: dict[str, object] = {}

    def ours() -> None:
        results["ours"] = temporal_rollout(on_device)

    def reference() -> None:
        results["ref"] = numpy_rollout(host)

    times = interleaved({"ours": ours, "numpy": reference}, numpy_repeats, warmup=warmup, device=device)
    if repeats > numpy_repeats:
        times["ours"] += interleaved({"ours": ours}, repeats - numpy_repeats, warmup=0, device=device)["ours"]
    diff = float((results["ours"].cpu() - torch.from_numpy(results["ref"])).abs().max())
    ours_ms = float(np.median(times["ours"])) * 1e3
    is_target = (instances, frames, layers) == (200, 300, 6)
    row = timed_ratio_row(
        "temporal rollout",
        f"{instances} instances x {frames} frames x {layers} layers, {device.type}",
        "temporal_rollout (batched)",
        "NumPy loop per instance/layer",
        times["ours"][: len(times["numpy"])],
        times["numpy"],
        unit="ms",
        scale=1e3,
        ratio_kind="speedup",
        target=f"< {ROLLOUT_TARGET_MS:.0f} ms (GPU)" if is_target else "",
        note=f"max /R - R_ref/ {diff:.1e}",
    )
    row.value = ours_ms  # the median over all rounds of ours
    row.ratio = row.base_value / row.value
    row.repeats = len(times["ours"])
    if is_target:
        row.met = ours_ms < ROLLOUT_TARGET_MS
    return row


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", default=",".join(f"{n}x{t}" for n, t in DEFAULT_CASES), help="NxT list")
    args = parser.parse_args(argv)
    cases = tuple(tuple(int(x) for x in c.split("x")) for c in args.cases.split(","))
    rows = bench_rollout(cases, repeats=args.repeats, device=args.device)
    for row in rows:
        print(row)
    return rows


if __name__ == "__main__":
    main()
