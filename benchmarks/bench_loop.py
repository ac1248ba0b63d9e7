"""Benchmark: the loop around the model (issue 16).

* ``predict`` loop time per video against the model's forward time per video, measured in the same
  run (forward hooks on the model; the loop from ``on_predict_start`` to ``on_predict_end``), with
  frames decoded in the main process (``--num-workers 0``) and in worker processes;
* host reads of tensor values in one forward (:class:`~dvis_attn_pl.model.host_reads.HostReads`),
  for a short and a long video in one window and for one long video in one or three windows;
* ``analyze`` of a ``test`` run against that run's inference (two subprocesses, wall time).

    python benchmarks/bench_loop.py [--videos 6] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import Row  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ loop vs forward
class _LoopClock:
    """Times the model's forwards and the predict loop of one in-process ``predict`` run."""

    def __init__(self) -> None:
        self.forward = 0.0
        self.loop_start = self.loop_end = 0.0
        self.videos = 0
        self._t0 = 0.0

    def attach(self, model: torch.nn.Module) -> torch.nn.Module:
        """Time every call of the model's inference entry (``run_with_trace``, which the loop calls)."""
        inner = model.run_with_trace

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.forward += time.perf_counter() - t0
                self.videos += 1

        model.run_with_trace = timed
        return model


def predict_loop_times(
    data: Path, frames: Path, workers: int, device: str = "cpu", config: str | None = None
) -> tuple[float, float, int]:
    """``(loop seconds, forward seconds, videos)`` of one in-process ``predict`` run (the shipped
    model, or ``config`` with random weights)."""
    from dvis_attn_pl.cli import main
    from dvis_attn_pl.lightning_module import DVISDAQModule
    from dvis_attn_pl.run import runner

    clock = _LoopClock()
    build, start, end = runner.build_weighted_model, DVISDAQModule.on_predict_start, DVISDAQModule.on_predict_end

    def on_start(module):
        clock.loop_start = time.perf_counter()
        start(module)

    def on_end(module):
        clock.loop_end = time.perf_counter()
        end(module)

    runner.build_weighted_model = lambda *a, **k: clock.attach(build(*a, **k))
    DVISDAQModule.on_predict_start, DVISDAQModule.on_predict_end = on_start, on_end
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model = [] if config is None else [  # the synthetic set has 5 classes
                "--model-config", config, "--random-weights", "MODEL.SEM_SEG_HEAD.NUM_CLASSES", "5"]
            code = main(["predict", "--data", str(data), "--frames", str(frames), "--out", str(Path(tmp) / "run"),
                         "--capture", "none", "--num-workers", str(workers), "--accelerator", device, *model])
    finally:
        runner.build_weighted_model = build
        DVISDAQModule.on_predict_start, DVISDAQModule.on_predict_end = start, end
    if code != 0:
        raise RuntimeError(f"predict exited with {code}")
    return clock.loop_end - clock.loop_start, clock.forward, clock.videos


def bench_loop(
    videos: int = 6, height: int = 240, width: int = 320, min_frames: int = 12, max_frames: int = 16,
    workers: tuple[int, ...] | None = None, repeats: int = 1, device: str = "cpu", config: str | None = None,
) -> list[Row]:
    """Loop time / forward time per video for each ``workers`` setting (default: 0 and the default),
    with the shipped model or ``config`` (a YAML path, random weights)."""
    from dvis_attn_pl.data.datamodule import default_num_workers
    from dvis_attn_pl.data.synthetic import write_synthetic_dataset

    settings = workers or tuple(dict.fromkeys((0, default_num_workers())))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_synthetic_dataset(Path(tmp) / "data", num_videos=videos, height=height, width=width,
                                       min_frames=min_frames, max_frames=max_frames)
        got: dict[int, list[tuple[float, float, int]]] = {w: [] for w in settings}
        for _ in range(repeats):
            for w in settings:  # interleaved rounds
                got[w].append(predict_loop_times(data / "valid.json", data / "JPEGImages", w, device, config))
    model = "tiny_fish (shipped)" if config is None else f"{Path(config).stem} (random weights)"
    case = f"{model}, {videos} synthetic videos of {min_frames}-{max_frames} frames {height}x{width}, {device}"
    for w, runs in got.items():
        loops = sorted(loop / n for loop, _, n in runs)
        forwards = sorted(fwd / n for _, fwd, n in runs)
        ratios = [loop / fwd for loop, fwd, _ in runs]
        loop_med, fwd_med = loops[len(loops) // 2], forwards[len(forwards) // 2]
        rows.append(Row(
            benchmark="predict loop", case=case, variant=f"loop time per video, --num-workers {w}",
            baseline="model forward per video (same run)", value=loop_med, base_value=fwd_med, unit="s/video",
            ratio=loop_med / fwd_med, spread=(min(ratios), max(ratios)), repeats=len(runs),
            target="<= 1.15 (GPU goal)", note="loop: on_predict_start to on_predict_end",
        ))
    return rows


# ------------------------------------------------------------------ host reads
def _reads(model, frames: int) -> int:
    from dvis_attn_pl.model.host_reads import HostReads

    gen = torch.Generator().manual_seed(frames)
    video = [torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8, generator=gen) for _ in range(frames)]
    with torch.no_grad(), HostReads() as reads:
        model([{"image": video, "height": 64, "width": 96, "video_id": 1}])
    return reads.total


def bench_host_reads(short: int = 4, long: int = 12, window: int = 4) -> list[Row]:
    """Host reads in one forward of the offline tiny model: short vs long video in one window, and
    the long video in one window vs ``long / window`` windows."""
    from dvis_attn_pl import build_model, load_config
    from dvis_attn_pl.config import config_path

    torch.manual_seed(0)
    model = build_model(load_config(config_path("tiny_cpu"))).eval()
    model.window_size = long
    n_short, n_long = _reads(model, short), _reads(model, long)
    sequences = model.tracker.memory.num_sequences
    model.window_size = window
    n_windows = _reads(model, long)
    case = f"tiny_cpu offline, random weights, 64x96 ({sequences} sequences in the {long}-frame video)"
    return [
        Row("host reads per video", case, f"{long} frames, one window", f"{short} frames, one window",
            n_long, n_short, "reads", ratio=n_long / n_short, ratio_kind="growth", target="no growth with frames x instances",
            note=f"{(n_long - n_short) / (long - short):.2f} more reads per extra frame (the live-count read)"),
        Row("host reads per video", case, f"{long} frames, {-(-long // window)} windows", f"{long} frames, one window",
            n_windows, n_long, "reads", ratio=n_windows / n_long, ratio_kind="growth", target="grows with windows only",
            note="every .cpu/.item/.tolist/.numpy/int/float/bool call counted (CPU: upper bound of GPU syncs)"),
    ]


# ------------------------------------------------------------------ analyze vs inference
def _timed_cli(*argv: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dvis_attn_pl", *argv], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_analyze(repeats: int = 1) -> list[Row]:
    """``analyze`` (defaults: plots, videos, TensorBoard) of the default ``test`` run (12 synthetic
    videos, tiny_cpu) against that ``test`` run itself; both wall time of a fresh process."""
    tests, analyses = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(repeats):
            run = Path(tmp) / f"run{r}"
            tests.append(_timed_cli("test", "--out", str(run)))
            analyses.append(_timed_cli("analyze", str(run)))
    tests.sort()
    analyses.sort()
    ratios = [a / t for a, t in zip(analyses, tests)]
    med_a, med_t = analyses[len(analyses) // 2], tests[len(tests) // 2]
    return [Row("analyze", "default test run: 12 synthetic videos 240x320 of 12-40 frames, tiny_cpu, cpu",
                "analyze RUN_DIR (plots, MP4s, TensorBoard)", "the test run that wrote RUN_DIR",
                med_a, med_t, "s", ratio=med_a / med_t, spread=(min(ratios), max(ratios)), repeats=repeats,
                target="<= 1.0", met=med_a <= med_t, note="fresh processes, start-up included")]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--config", help="model config YAML with random weights (default: the shipped model)")
    parser.add_argument("--frames", type=int, help="frames per video (default: 12 to 16)")
    parser.add_argument("--size", default="240x320", help="frame size HxW of the synthetic videos")
    parser.add_argument("--device", default="cpu", help="the predict run's --accelerator")
    parser.add_argument("--loop-only", action="store_true", help="only the loop rows (no host reads, no analyze)")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    frames = {} if args.frames is None else {"min_frames": args.frames, "max_frames": args.frames}
    rows = bench_loop(videos=args.videos, height=height, width=width, repeats=args.repeats, device=args.device,
                      config=args.config, **frames)
    if not args.loop_only:
        rows += bench_host_reads() + bench_analyze(args.repeats)
    for row in rows:
        print(row)
    return rows


if __name__ == "__main__":
    main()
