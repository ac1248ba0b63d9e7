"""Benchmark: attention capture overhead per preset through the real Lightning predict loop.

One model, one synthetic video set on disk; each round runs ``trainer.predict`` once per preset
(``none`` first in the rotation, then ``temporal``, ``decoder``, ``all``) with the callbacks the
``predict`` command uses (``PredictionWriter`` + ``build_capture_callbacks(preset)``), into a fresh
run directory. The timed span is the whole ``predict`` call, so frame decoding, the capture
reduction, the host copy and the background writer (flushed at the end of the loop) are all in it.
The attention bytes on disk per video-frame of each preset are read from the runs' manifests.

    python benchmarks/bench_capture.py [--videos 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import Row, interleaved, resolve_device, timed_ratio_row
from dvis_attn_pl import build_model, load_config
from dvis_attn_pl.capture_presets import preset_names

__all__ = ["CAPTURE_TARGETS", "attention_bytes_rows", "bench_capture", "run_predict"]

#: GPU targets: capture time / no-capture time per preset.
CAPTURE_TARGETS = {"temporal": 1.05, "decoder": 1.15}


def _trainer(device: torch.device, callbacks: list):
    import lightning as L

    from dvis_attn_pl.run.runner import quiet_lightning

    quiet_lightning()
    return L.Trainer(
        accelerator=device.type,
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        use_distributed_sampler=False,
        inference_mode=True,
        callbacks=callbacks,
    )


class HookTimer:
    """Adds up the wall time spent inside the hooks of the callbacks it wraps."""

    HOOKS = ("setup", "on_predict_start", "on_predict_batch_start", "on_predict_batch_end", "on_predict_end")

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, callback) -> None:
        """Time ``callback``'s loop hooks (instance attributes shadow the class methods)."""
        for name in self.HOOKS:
            setattr(callback, name, self._timed(getattr(callback, name)))

    def _timed(self, hook):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return hook(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed


def run_predict(
    module, dataset, preset: str, run_dir: Path, device: torch.device, timer: HookTimer | None = None
) -> None:
    """``trainer.predict`` over ``dataset`` with the predict command's callbacks for ``preset``;
    ``timer`` (optional) times the capture callbacks' hooks."""
    from callbacks import PredictionWriter, build_capture_callbacks
    from dvis_attn_pl.data.datamodule import YTVISDataModule

    capture = build_capture_callbacks(preset, run_dir)
    if timer is not None:
        for callback in capture:
            timer.wrap(callback)
    trainer = _trainer(device, [PredictionWriter(run_dir), *capture])
    trainer.predict(module, datamodule=YTVISDataModule(dataset=dataset), return_predictions=False)


def attention_bytes_rows(run_dirs: dict[str, Path], case: str) -> list[Row]:
    """Attention bytes on disk per video-frame (and files per video) of each preset's run."""
    rows = []
    for preset, run_dir in run_dirs.items():
        manifest_path = run_dir / "attention_maps" / "manifest.json"
        if not manifest_path.is_file():
            continue
        manifest = json.loads(manifest_path.read_text())
        videos = manifest["videos"].values()
        frames = sum(int(v["num_frames"]) for v in videos)
        n_videos = max(len(manifest["videos"]), 1)
        total = int(manifest["total_bytes"])
        files = int(manifest["num_artifacts"])
        by_kind: dict[str, int] = {}
        for v in videos:
            for art in v["artifacts"]:
                kind = Path(art["path"]).stem if not art["path"].startswith("rolled_out") else "rollout"
                by_kind[kind] = by_kind.get(kind, 0) + int(art["bytes"])
        kinds = ", ".join(f"{k} {b / max(frames, 1) / 1024:.1f}" for k, b in sorted(by_kind.items()))
        rows.append(
            Row(
                benchmark="attention bytes",
                case=case,
                variant=f"capture {preset}",
                baseline="",
                value=total / max(frames, 1),
                base_value=None,
                unit="B/video-frame",
                ratio_kind="size",
                note=f"{files / n_videos:.1f} files/video, {total / n_videos / 1024:.1f} KiB/video; KiB/frame by kind: {kinds}",
                extra={
                    "files_per_video": files / n_videos,
                    "bytes_per_video": total / n_videos,
                    "frames": frames,
                },
            )
        )
    return rows


def bench_capture(
    *,
    config: str = "tiny_cpu",
    videos: int = 4,
    min_frames: int = 12,
    max_frames: int = 16,
    height: int = 240,
    width: int = 320,
    short_edge: int | None = None,
    presets: tuple[str, ...] = ("temporal", "decoder", "all"),
    repeats: int = 3,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    data_root: str | Path | None = None,
) -> list[Row]:
    """Wall time per video of ``predict`` with each capture preset vs no capture, plus bytes rows."""
    from benchmarks.bench_inference import resolve_config_path
    from dvis_attn_pl.data.synthetic import ensure_synthetic_dataset
    from dvis_attn_pl.lightning_module import DVISDAQModule
    from dvis_attn_pl.run.runner import build_dataset

    unknown = [p for p in presets if p not in preset_names() or p == "none"]
    if unknown:
        raise ValueError(f"capture presets {unknown}: expected some of {preset_names()[1:]}")
    device = resolve_device(str(device))
    short_edge = short_edge or height
    cfg = load_config(
        resolve_config_path(config),
        overrides=["INPUT.MIN_SIZE_TEST", str(short_edge), "MODEL.DEVICE", device.type],
    )
    root = ensure_synthetic_dataset(
        data_root, num_videos=videos, height=height, width=width, min_frames=min_frames, max_frames=max_frames
    )
    dataset, data = build_dataset(root / "valid.json", root / "JPEGImages", cfg, None)
    frames_total = sum(dataset.video_lengths)
    torch.manual_seed(int(cfg.SEED) if int(cfg.SEED) >= 0 else 0)
    module = DVISDAQModule(build_model(cfg).eval(), data.contiguous_to_dataset_id)
    work = Path(tempfile.mkdtemp(prefix="dvis_bench_capture_"))
    last: dict[str, Path] = {}
    hook_seconds: dict[str, list[float]] = {}
    counter = [0]

    def variant(preset: str):
        def run() -> None:
            counter[0] += 1
            run_dir = work / f"{preset}_{counter[0]}"
            if preset in last:
                shutil.rmtree(last[preset], ignore_errors=True)
            last[preset] = run_dir
            timer = HookTimer()
            run_predict(module, dataset, preset, run_dir, device, timer)
            hook_seconds.setdefault(preset, []).append(timer.seconds)

        return run

    try:
        names = ("none", *presets)
        times = interleaved({p: variant(p) for p in names}, repeats, warmup=warmup, device=device)
        per_video = {p: [t / len(dataset) for t in ts] for p, ts in times.items()}
        h, w = dataset.resized_hw(0)
        case = f"{Path(config).stem}, {len(dataset)} videos x {frames_total / len(dataset):.1f} frames {h}x{w}, {device.type}"
        rows = [
            timed_ratio_row(
                "capture (predict loop)",
                case,
                f"capture {p}",
                "no capture",
                per_video[p],
                per_video["none"],
                unit="s/video",
                target=f"<= {CAPTURE_TARGETS[p]:.2f} (GPU)" if p in CAPTURE_TARGETS else "",
                limit=CAPTURE_TARGETS.get(p),
                note=(
                    "incl. frame decoding, results and attention writing; capture callbacks' own time "
                    f"{statistics.median(hook_seconds[p][-repeats:]) / len(dataset) * 1e3:.0f} ms/video "
                    f"({statistics.median(hook_seconds[p][-repeats:]) / statistics.median(times['none']):.1%} of no capture)"
                ),
            )
            for p in presets
        ]
        rows += attention_bytes_rows({p: last[p] for p in presets if p in last}, case)
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny_cpu", help="bundled config name or YAML path (random weights)")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, help="frames per video (default: 12 to 16)")
    parser.add_argument("--size", default="240x320", help="frame size HxW of the synthetic videos")
    parser.add_argument("--short-edge", type=int, help="test-time resize (default: the config's)")
    parser.add_argument("--presets", default="temporal,decoder,all", help="comma list, each against no capture")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    frames = {} if args.frames is None else {"min_frames": args.frames, "max_frames": args.frames}
    rows = bench_capture(
        config=args.config, videos=args.videos, height=height, width=width, short_edge=args.short_edge,
        presets=tuple(args.presets.split(",")), repeats=args.repeats, device=args.device, **frames,
    )
    for row in rows:
        print(row)
    return rows


if __name__ == "__main__":
    main()
