"""Benchmark: one intervention pass against one plain pass (issue 15).

For each intervention, the whole set is read and run through the model as that pass does
(frames decoded lazily window by window; input interventions through ``AlteredVideos``, knockouts
under their hooks, ``deletion`` with its refiner re-runs), interleaved with the plain pass in the
same rounds. The target: at most 1.1x the plain pass.

    python benchmarks/bench_interventions.py [--videos 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import Row, interleaved, timed_ratio_row  # noqa: E402

TARGET = 1.1


def bench_interventions(videos: int = 4, repeats: int = 3, root: Path | None = None) -> list[Row]:
    """Rows: seconds per pass over ``videos`` synthetic val videos, each intervention vs plain."""
    from callbacks.deletion_curves import DeletionCurves
    from dvis_attn_pl.config import config_path, load_config
    from dvis_attn_pl.data.synthetic import ensure_synthetic_dataset
    from dvis_attn_pl.interventions import AlteredVideos, knockout, parse_interventions
    from dvis_attn_pl.lightning_module import DVISDAQModule
    from dvis_attn_pl.run.runner import build_dataset, build_weighted_model
    from dvis_attn_pl.weights import shipped_weights

    data_root = ensure_synthetic_dataset(root) if root is not None else ensure_synthetic_dataset()
    cfg = load_config(config_path("tiny_fish"))
    model = build_weighted_model(cfg, str(shipped_weights()), False).eval()
    dataset, data = build_dataset(data_root / "valid.json", data_root / "JPEGImages", cfg, videos)
    module = DVISDAQModule(model, data.contiguous_to_dataset_id)

    def run(ds, hooks=None, deletion: DeletionCurves | None = None):
        def go():
            with torch.inference_mode(), knockout(model, hooks):
                for i in range(len(ds)):
                    result = module.infer(ds[i])
                    result.records  # noqa: B018 - wait for the encoder thread, as the writer does
                    if deletion is not None:
                        deletion._add(module, result)
        return go

    deletion = DeletionCurves()
    variants = {"plain": run(dataset)}
    for iv in parse_interventions("all", shuffle_k=1):
        if iv.family == "input":
            variants[iv.label] = run(AlteredVideos(dataset, iv))
        elif iv.family == "model":
            variants[iv.label] = run(dataset, iv)
        else:
            variants[iv.label] = run(dataset, deletion=deletion)
    model.keep_refiner_inputs = True  # only the deletion pass reads them; kept for all so the rounds are alike
    try:
        times = interleaved(variants, repeats)
    finally:
        model.keep_refiner_inputs = False
        module.teardown("test")
    frames = sum(dataset.video_lengths)
    case = f"{len(dataset)} synthetic val videos ({frames} frames) 240x320, tiny_fish, cpu"
    return [
        timed_ratio_row("intervention pass", case, label, "plain pass", times[label], times["plain"],
                        target=f"<= {TARGET}x", limit=TARGET)
        for label in variants if label != "plain"
    ]


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    rows = bench_interventions(args.videos, args.repeats)
    for r in rows:
        print(f"{r.variant:<20} {r.value:.3f} s vs {r.base_value:.3f} s  ratio {r.ratio:.3f}  "
              f"spread {r.spread[0]:.2f}-{r.spread[1]:.2f}  met={r.met}")
    return rows


if __name__ == "__main__":
    main()
