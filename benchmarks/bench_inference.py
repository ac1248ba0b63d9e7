"""Benchmark: plain inference, our fused attention vs every attention weight materialised.

The official DVIS-DAQ calls ``nn.MultiheadAttention`` with ``need_weights=True`` everywhere, so it
always pays for the weight matrices. Here the same model (same weights, same input) runs twice per
round: once on its fused path (no capture) and once with capture enabled on ALL sites and a sink
that discards what it gets. Outputs are checked to be identical.

    python benchmarks/bench_inference.py [--config tiny_cpu] [--frames 10] [--size 360x640] [--short-edge 360]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import Row, interleaved, resolve_device, timed_ratio_row
from dvis_attn_pl import build_model, load_config
from dvis_attn_pl.config import config_path
from dvis_attn_pl.data.dataset import YTVISVideoDataset
from dvis_attn_pl.data.synthetic import SyntheticParams, render_video
from dvis_attn_pl.model.capture import capture_sites, disable_capture, enable_capture

__all__ = ["bench_inference", "synthetic_input", "resolve_config_path"]


def resolve_config_path(config: str) -> Path:
    """A bundled config name (``tiny_cpu``) or a path to a YAML file."""
    path = Path(config)
    return path if path.suffix in (".yaml", ".yml") and path.is_file() else config_path(config)


def synthetic_input(cfg, frames: int, height: int, width: int, seed: int = 0) -> dict:
    """One synthetic fish video as the model's input dict (frames decoded and test-time resized)."""
    params = SyntheticParams(
        num_videos=1, seed=seed, height=height, width=width, min_frames=frames, max_frames=frames
    )
    video = render_video(params, 0)
    dataset = YTVISVideoDataset.from_arrays([{"video_id": 1, "frames": video.frames}], cfg, eager=True)
    return dataset[0]


def _discard(site, tensors) -> None:
    """A capture sink that keeps nothing."""


def _same_outputs(a: dict, b: dict) -> bool:
    return (
        torch.equal(torch.as_tensor(a["pred_scores"]), torch.as_tensor(b["pred_scores"]))
        and list(a["pred_labels"]) == list(b["pred_labels"])
        and all(
            torch.equal(torch.as_tensor(x), torch.as_tensor(y))
            for x, y in zip(a["pred_masks"], b["pred_masks"])
        )
    )


def bench_inference(
    config: str = "tiny_cpu",
    *,
    frames: int = 10,
    height: int = 360,
    width: int = 640,
    short_edge: int | None = None,
    repeats: int = 5,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    overrides: tuple[str, ...] = (),
    label: str | None = None,
) -> list[Row]:
    """Time one video through ``config`` (random weights) fused vs all attention materialised.

    ``short_edge`` sets ``INPUT.MIN_SIZE_TEST`` (default: the frame height, i.e. no resize).
    Returns one row: the materialised variant's time per video against the fused one.
    """
    device = resolve_device(str(device))
    short_edge = short_edge or height
    opts = ["INPUT.MIN_SIZE_TEST", str(short_edge), "MODEL.DEVICE", device.type, *overrides]
    cfg = load_config(resolve_config_path(config), overrides=opts)
    torch.manual_seed(int(cfg.SEED) if int(cfg.SEED) >= 0 else 0)
    model = build_model(cfg).eval().to(device)
    video = synthetic_input(cfg, frames, height, width)
    sites = list(capture_sites(model))
    outputs: dict[str, dict] = {}

    def fused() -> None:
        disable_capture(model)
        with torch.inference_mode():
            outputs["fused"] = model([video])

    def materialised() -> None:
        enable_capture(sites, _discard)
        try:
            with torch.inference_mode():
                outputs["all"] = model([video])
        finally:
            disable_capture(model)

    times = interleaved({"fused": fused, "all": materialised}, repeats, warmup=warmup, device=device)
    identical = _same_outputs(outputs["fused"], outputs["all"])
    h, w = video["image"][0].shape[-2:]
    name = label or Path(str(config)).stem
    return [
        timed_ratio_row(
            "inference",
            f"{name}, {frames} frames {h}x{w}, {device.type}",
            f"all {len(sites)} sites materialised (no-op sink)",
            "fused (no capture)",
            times["all"],
            times["fused"],
            unit="s/video",
            target="(context: official always materialises)",
            note=f"outputs identical: {identical}; {len(outputs['fused']['pred_scores'])} predictions",
        )
    ]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="tiny_cpu")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--size", default="360x640", help="frame size HxW of the synthetic video")
    parser.add_argument("--short-edge", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    h, w = (int(x) for x in args.size.lower().split("x"))
    rows = bench_inference(
        args.config,
        frames=args.frames,
        height=h,
        width=w,
        short_edge=args.short_edge,
        repeats=args.repeats,
        device=args.device,
    )
    for row in rows:
        print(row)
    return rows


if __name__ == "__main__":
    main()
