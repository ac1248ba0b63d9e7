"""``python -m dvis_attn_pl control``: the control experiment, one command, one report.

Runs the synthetic val split with every intervention through ``test`` and ``analyze`` (each a
subprocess, exactly as a user would run them) for the shipped trained model, the same config with
random weights, and (when its weights exist) the control model trained on frame-shuffled clips;
then writes the report (:mod:`dvis_attn_pl.analysis.control_report`) and its plot.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from ..utils.errors import UserError
from ..utils.run_layout import RunLayout

SANITY_INTERVENTIONS = "freeze,shuffle"  # what the verdict reads: the sanity checks are about verdicts
RANDOM_MAX_VIDEOS = 12  # random weights make many short sequences (slow mask decoding); 12 videos show the point
HELD_OUT_SEED = 2  # the synthetic train split is seed 1, the embedded val split seed 0


def _run(argv: list[str], what: str) -> None:
    print(f"dvis_attn_pl control: {what}: {' '.join(argv)}", file=sys.stderr, flush=True)
    done = subprocess.run([sys.executable, "-m", "dvis_attn_pl", *argv], check=False)
    if done.returncode != 0:
        raise UserError(f"{what}: 'dvis_attn_pl {' '.join(argv)}' failed with exit status {done.returncode}")


def _causal(
    run_dir: Path, args: argparse.Namespace, extra: list[str], what: str, interventions: str | None = None,
    max_videos: int | None = None,
) -> dict:
    test = ["test", "--out", str(run_dir), "--interventions", interventions or args.interventions,
            "--shuffle-k", str(args.shuffle_k),
            "--capture", "temporal", *extra]
    limits = [v for v in (args.max_videos, max_videos) if v]
    if limits:
        test += ["--max-videos", str(min(limits))]
    if args.data_json is not None:
        test += ["--data", str(args.data_json), "--frames", str(args.data_json.parent / "JPEGImages")]
    _run(test, what)
    _run(["analyze", str(run_dir), "--only", "cues,causal", "--no-video", "--no-tensorboard"], f"{what} (analyze)")
    return json.loads((RunLayout(run_dir).inference / "causal_cues.json").read_text())


def run_control(args: argparse.Namespace) -> int:
    """Run the control experiment and write its report; returns the exit status."""
    from ..analysis.control_report import goal_summary, plot_deletion, plot_ratios, render_report
    from ..weights import CONTROL_WEIGHTS

    out = Path(args.out)
    report = Path(args.report)
    control_weights = Path(args.control_weights) if args.control_weights else CONTROL_WEIGHTS
    if args.control_weights and not control_weights.is_file():
        raise UserError(f"{control_weights}: control weights not found")
    args.data_json = None
    split = "the embedded synthetic val split (seed 0, 12 videos)"
    if args.held_out_videos:
        split = (f"a held-out synthetic split (seed {HELD_OUT_SEED}, {args.held_out_videos} videos; the shipped "
                 "model was trained on seed 1 and validated on seed 0)")  # a larger held-out split of the same generator (train: seed 1, val: seed 0)
        from ..data.synthetic import ensure_synthetic_dataset

        args.data_json = ensure_synthetic_dataset(num_videos=args.held_out_videos, seed=HELD_OUT_SEED) / "valid.json"
    runs = {"trained": _causal(out / "trained", args, [], "trained model")}
    if not args.skip_sanity:
        runs["random"] = _causal(
            out / "random", args, ["--random-weights"], "random weights", SANITY_INTERVENTIONS, RANDOM_MAX_VIDEOS
        )
        if control_weights.is_file():
            extra = ["--model-config", "tiny_fish", "--ckpt", str(control_weights)]
            runs["control"] = _causal(out / "control", args, extra, "control model (shuffled training)", SANITY_INTERVENTIONS)
    plot = report.with_suffix("").name + "_ratios.png"
    plot_ratios(runs["trained"], report.parent / plot)
    curves = report.with_suffix("").name + "_deletion.png"
    if not plot_deletion(runs["trained"], report.parent / curves):
        curves = None
    probes = _position_probes(args)
    command = _reproducing_command(args)
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(render_report(runs, command, plot, curves, split, probes), encoding="utf-8")
    record = {**runs, "goals": goal_summary(runs["trained"]), "position_probe": probes}
    (out / "control_experiment.json").write_text(json.dumps(record, indent=1))
    if args.record:
        from ..analysis.proxy_validation import write_record

        print(f"dvis_attn_pl control: recorded {write_record(goal_summary(runs['trained']), str(report))}", file=sys.stderr)
    print(f"dvis_attn_pl control: wrote {report} and {report.parent / plot}", file=sys.stderr)
    return 0


def _position_probes(args: argparse.Namespace) -> dict[str, dict]:
    """What the trained model's refiner can see (:mod:`dvis_attn_pl.training.input_probe`). The control
    model shares its segmenter and tracker, so its refiner sees the same inputs."""
    from ..data.synthetic import ensure_synthetic_dataset
    from ..training.input_probe import probe_weights
    from ..weights import SHIPPED_WEIGHTS

    json_path = args.data_json or ensure_synthetic_dataset() / "valid.json"
    print("dvis_attn_pl control: position probe of the refiner's inputs", file=sys.stderr, flush=True)
    probe = probe_weights(SHIPPED_WEIGHTS, json_path, max_videos=args.max_videos or None, look_alike_group="motion")
    return {"trained": probe}


def _reproducing_command(args: argparse.Namespace) -> str:
    """The command line that reproduces the report's numbers: the options that decide them, and no
    paths of this machine (``--out``/``--report`` only say where things go)."""
    parts = ["python -m dvis_attn_pl control", f"--held-out-videos {args.held_out_videos}",
             f"--interventions {args.interventions}", f"--shuffle-k {args.shuffle_k}"]
    if args.max_videos:
        parts.append(f"--max-videos {args.max_videos}")
    if args.control_weights:
        parts.append(f"--control-weights {Path(args.control_weights).name}")
    if args.skip_sanity:
        parts.append("--skip-sanity")
    return " ".join(parts)
