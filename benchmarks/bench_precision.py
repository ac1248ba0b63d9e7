"""Benchmark: the precision modes side by side, speed and deviation from the official float32 outputs.

For every golden case (``../shared/golden``: the official model's weights and its float32 outputs)
each mode of ``--precision`` runs the case's videos on ``--device``: ``32-true`` (exact float32),
``tf32`` (TF32 tensor-core matmuls and convolutions; on a CPU the same as 32-true), ``bf16-mixed``
and ``16-mixed`` (autocast). Per mode and case: the forward time (median over interleaved rounds),
and per video the deviation from the official outputs: whether the predictions pair up (same count
and labels once ordered as the golden comparison orders them), the largest score difference of the
pairs (or of the score-sorted lists when they do not pair up) and the largest fraction of a
prediction's mask pixels that differ. ``--val-ap`` also runs ``test`` on the embedded val set with
the shipped weights in each mode and reports the AP.

    python benchmarks/bench_precision.py [--device cuda] [--repeats 3] [--val-ap] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import interleaved, resolve_device
from dvis_attn_pl.run.precision import set_float32_matmul

__all__ = ["MODES", "bench_precision", "deviation", "precision_mode", "val_ap"]

MODES = ("32-true", "tf32", "bf16-mixed", "16-mixed")
_AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


@contextmanager
def precision_mode(mode: str, device: torch.device):
    """Run the block as ``--precision mode`` runs the model (float32 matmul mode, autocast)."""
    set_float32_matmul(mode)
    try:
        if mode in _AUTOCAST:
            with torch.autocast(device.type, dtype=_AUTOCAST[mode]):
                yield
        else:
            yield
    finally:
        set_float32_matmul("32-true")


def deviation(out: dict, ref: dict) -> dict:
    """How far one video's outputs are from the official ones (``ref``: ``pred_scores``,
    ``pred_labels``, ``pred_masks`` tensors); predictions paired by score, then label, then position."""
    from tests.golden import prediction_order

    scores, labels = torch.tensor(out["pred_scores"], dtype=torch.float64), torch.tensor(out["pred_labels"])
    ref_scores, ref_labels = ref["pred_scores"].double(), ref["pred_labels"]
    mine, theirs = prediction_order(scores, labels), prediction_order(ref_scores, ref_labels)
    paired = len(scores) == len(ref_scores) and labels[mine].tolist() == ref_labels[theirs].tolist()
    if paired and len(scores):
        masks = torch.stack([m.cpu() for m in out["pred_masks"]])[mine]
        differ = (masks != ref["pred_masks"][theirs].bool()).flatten(1).float().mean(1)
        return {
            "paired": True,
            "max_score_diff": float((scores[mine] - ref_scores[theirs]).abs().max()),
            "max_mask_pixels_differing": float(differ.max()),
        }
    n = min(len(scores), len(ref_scores))
    sorted_diff = (scores.sort(descending=True).values[:n] - ref_scores.sort(descending=True).values[:n]).abs()
    return {
        "paired": paired,
        "max_score_diff": float(sorted_diff.max()) if n else 0.0,
        "max_mask_pixels_differing": None,
        "predictions": [len(scores), len(ref_scores)],
    }


def bench_precision(device: torch.device, repeats: int = 3, cases=None) -> list[dict]:
    """One row per golden case and mode: median forward seconds over the case's videos and the
    worst deviation of its videos."""
    from tests.golden import CASES

    return [row for name in cases or CASES for row in _case_rows(name, device, repeats)]


def _case_rows(name: str, device: torch.device, repeats: int) -> list[dict]:
    from tests.golden import golden_model

    case, model = golden_model(name)
    model.to(device).eval()
    videos = [case.batched_inputs(i) for i in range(case.num_videos)]
    refs = [
        {k: case.outputs[f"v{i}.{k}"] for k in ("pred_scores", "pred_labels", "pred_masks")}
        for i in range(case.num_videos)
    ]
    outputs: dict[str, list[dict]] = {}

    def run(mode: str) -> None:
        with torch.no_grad(), precision_mode(mode, device):
            outputs[mode] = [model(video) for video in videos]

    times = interleaved({m: (lambda m=m: run(m)) for m in MODES}, repeats, device=device)
    rows = []
    for mode in MODES:
        devs = [deviation(out, ref) for out, ref in zip(outputs[mode], refs)]
        pixel = [d["max_mask_pixels_differing"] for d in devs if d["max_mask_pixels_differing"] is not None]
        rows.append(
            {
                "case": name,
                "mode": mode,
                "seconds": statistics.median(times[mode]),
                "videos_paired": f"{sum(d['paired'] for d in devs)}/{len(devs)}",
                "max_score_diff": max(d["max_score_diff"] for d in devs),
                "max_mask_pixels_differing": max(pixel) if pixel else None,
            }
        )
    return rows


def val_ap(mode: str, device: torch.device) -> float:
    """The shipped model's AP on the embedded val set, ``test --precision mode`` in a fresh process."""
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "dvis_attn_pl", "test", "--capture", "none", "--precision", mode,
               "--accelerator", accelerator, "--devices", "1", "--out", str(Path(tmp) / "run")]
        subprocess.run(cmd, check=True, capture_output=True, cwd=Path(__file__).resolve().parents[1])
        return float(json.loads((Path(tmp) / "run" / "inference" / "metrics.json").read_text())["ytvis"]["AP"])


def markdown(rows: list[dict], aps: dict[str, float] | None, device: torch.device) -> str:
    lines = [
        f"Precision modes on `{device}` (torch {torch.__version__}); deviation from the official float32 outputs",
        "",
        "| case | mode | forward s (median) | x 32-true | videos paired | max score diff | max mask pixels differing |",
        "|---|---|---|---|---|---|---|",
    ]
    base = {r["case"]: r["seconds"] for r in rows if r["mode"] == "32-true"}
    for r in rows:
        pixels = "-" if r["max_mask_pixels_differing"] is None else f"{100 * r['max_mask_pixels_differing']:.3f} %"
        lines.append(
            f"| {r['case']} | {r['mode']} | {r['seconds']:.3f} | {r['seconds'] / base[r['case']]:.2f} | "
            f"{r['videos_paired']} | {r['max_score_diff']:.2e} | {pixels} |"
        )
    if aps:
        lines += ["", "| mode | shipped model, val AP |", "|---|---|"]
        lines += [f"| {mode} | {ap:.4f} |" for mode, ap in aps.items()]
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--val-ap", action="store_true", help="also the shipped model's val AP per mode")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    from tests.shared_data import SHARED

    if not (SHARED / "golden").is_dir():
        raise SystemExit(f"{SHARED / 'golden'}: no golden cases (set DVIS_ATTN_PL_SHARED to a copy of shared/)")
    rows = bench_precision(device, args.repeats)
    aps = {mode: val_ap(mode, device) for mode in MODES} if args.val_ap else None
    text = markdown(rows, aps, device)
    print(text)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "val_ap": aps}, indent=1))
    return text


if __name__ == "__main__":
    main()
