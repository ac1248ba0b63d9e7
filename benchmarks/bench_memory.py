"""Benchmark: peak host memory of a ``predict`` run with ``--capture temporal``, few vs many videos.

Each setting runs the real command (``python -m dvis_attn_pl predict ...`` through
``dvis_attn_pl.cli.main``) in a fresh subprocess on the first N videos of one synthetic set of
tiny videos. A thread in the child samples its RSS with psutil while the command runs (the
interpreter's own shutdown is left out); the child also reports its kernel high-water mark (``VmHWM``) and, on CUDA, the peak device memory allocated by PyTorch. Capture
buffers are dropped after every video and the writer queue is bounded, so the peak must not grow
with the number of videos.

    python benchmarks/bench_memory.py [--counts 10,100] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import Row, resolve_device

__all__ = ["GROWTH_LIMIT", "bench_memory", "measure_predict"]

REPO = Path(__file__).resolve().parents[1]
#: Peak RSS of the larger run over the smaller one above which memory is said to grow.
GROWTH_LIMIT = 1.10
_RESULT_TAG = "BENCH_MEMORY_RESULT "


def _child(args: argparse.Namespace) -> int:
    """Run the predict command in this process, then print the memory it used (one JSON line)."""
    from dvis_attn_pl.cli import main as cli_main

    argv = [
        "predict",
        "--data",
        str(Path(args.data) / "valid.json"),
        "--frames",
        str(Path(args.data) / "JPEGImages"),
        "--out",
        args.out,
        "--capture",
        args.capture,
        "--max-videos",
        str(args.videos),
        "--accelerator",
        args.device,
        "--devices",
        "1",
        "INPUT.MIN_SIZE_TEST",
        str(args.short_edge),
    ]
    peak = [0]
    stop = threading.Event()
    me = psutil.Process()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], me.memory_info().rss)
            stop.wait(args.poll)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        rc = cli_main(argv)
    finally:
        stop.set()
        sampler.join()
    peak[0] = max(peak[0], me.memory_info().rss)
    hwm = None
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                hwm = int(line.split()[1]) / 1024
    device_peak = None
    import torch

    if args.device == "cuda" and torch.cuda.is_available():
        device_peak = torch.cuda.max_memory_allocated() / 2**20
    result = {"rc": rc, "psutil_peak_mib": peak[0] / 2**20, "vm_hwm_mib": hwm, "device_peak_mib": device_peak}
    print(_RESULT_TAG + json.dumps(result), flush=True)
    return int(rc or 0)


def measure_predict(
    data_root: Path,
    videos: int,
    *,
    capture: str = "temporal",
    short_edge: int = 64,
    device: str = "cpu",
    poll_s: float = 0.01,
    timeout_s: float = 1200.0,
) -> dict:
    """Run one predict in a fresh subprocess; returns its peak RSS (psutil samples every ``poll_s``
    taken inside the child while the command runs, and the kernel's VmHWM), and the seconds."""
    out = Path(tempfile.mkdtemp(prefix="dvis_bench_memory_"))
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        "--data",
        str(data_root),
        "--out",
        str(out / "run"),
        "--videos",
        str(videos),
        "--capture",
        capture,
        "--short-edge",
        str(short_edge),
        "--device",
        device,
        "--poll",
        str(poll_s),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DVIS_ATTN_PL_RUN_DIR", None)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"predict on {videos} videos ran past {timeout_s:.0f} s") from None
    finally:
        shutil.rmtree(out, ignore_errors=True)
    stdout, stderr = proc.stdout, proc.stderr
    seconds = time.perf_counter() - start
    lines = [ln for ln in stdout.splitlines() if ln.startswith(_RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"predict on {videos} videos failed (rc {proc.returncode}): {stderr[-1500:]}")
    result = json.loads(lines[-1][len(_RESULT_TAG) :])
    result.update(seconds=seconds, videos=videos)
    return result


def bench_memory(
    counts: tuple[int, int] = (10, 100),
    *,
    height: int = 64,
    width: int = 96,
    min_frames: int = 4,
    max_frames: int = 6,
    capture: str = "temporal",
    device: str = "cpu",
    data_root: str | Path | None = None,
) -> list[Row]:
    """Peak host RSS (and device memory on CUDA) of ``predict`` on ``counts[0]`` vs ``counts[1]`` videos."""
    from dvis_attn_pl.data.synthetic import ensure_synthetic_dataset

    small, large = counts
    if not 0 < small < large:
        raise ValueError(f"counts must be two increasing positive numbers, got {counts}")
    dev = resolve_device(device).type
    root = ensure_synthetic_dataset(
        data_root, num_videos=large, height=height, width=width, min_frames=min_frames, max_frames=max_frames
    )
    runs = {
        n: measure_predict(root, n, capture=capture, short_edge=min(height, width), device=dev)
        for n in counts
    }
    case = f"tiny_cpu predict, capture {capture}, {height}x{width} videos of {min_frames}-{max_frames} frames, {dev}"
    a, b = runs[small], runs[large]
    rows = [
        Row(
            benchmark="peak host memory",
            case=case,
            variant=f"{large} videos",
            baseline=f"{small} videos",
            value=b["psutil_peak_mib"],
            base_value=a["psutil_peak_mib"],
            unit="MiB RSS",
            ratio=b["psutil_peak_mib"] / a["psutil_peak_mib"],
            ratio_kind="growth",
            target=f"<= {GROWTH_LIMIT:.2f} (no growth)",
            met=b["psutil_peak_mib"] / a["psutil_peak_mib"] <= GROWTH_LIMIT,
            note=(
                f"psutil samples every 10 ms in a fresh subprocess; VmHWM {a['vm_hwm_mib']:.0f} -> "
                f"{b['vm_hwm_mib']:.0f} MiB; run {a['seconds']:.0f} s / {b['seconds']:.0f} s"
            ),
            extra={"runs": runs},
        )
    ]
    if a["device_peak_mib"] is None:
        rows.append(
            Row(
                "peak device memory",
                case,
                f"{large} videos",
                f"{small} videos",
                None,
                None,
                "MiB",
                ratio_kind="growth",
                note="n/a (no GPU)" if dev == "cpu" else "n/a",
            )
        )
    else:
        ratio = b["device_peak_mib"] / max(a["device_peak_mib"], 1e-9)
        rows.append(
            Row(
                "peak device memory",
                case,
                f"{large} videos",
                f"{small} videos",
                b["device_peak_mib"],
                a["device_peak_mib"],
                "MiB",
                ratio=ratio,
                ratio_kind="growth",
                target=f"<= {GROWTH_LIMIT:.2f} (no growth)",
                met=ratio <= GROWTH_LIMIT,
                note="torch.cuda.max_memory_allocated",
            )
        )
    return rows


def main(argv: list[str] | None = None) -> list[Row] | int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="10,100")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--videos", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--capture", default="temporal", help=argparse.SUPPRESS)
    parser.add_argument("--short-edge", type=int, default=64, help=argparse.SUPPRESS)
    parser.add_argument("--poll", type=float, default=0.01, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return _child(args)
    small, large = (int(x) for x in args.counts.split(","))
    rows = bench_memory((small, large), device=args.device)
    for row in rows:
        print(row)
    return rows


if __name__ == "__main__":
    result = main()
    if isinstance(result, int):
        sys.exit(result)
