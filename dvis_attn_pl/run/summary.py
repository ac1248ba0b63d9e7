"""End of a run on rank 0: metrics.json (YTVIS + decision timing), the config used, and the printed table."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from ..analysis.decision import decision_timing
from ..metrics.ytvis_eval import STAT_NAMES
from ..utils.io_utils import atomic_write_bytes, atomic_write_json
from ..utils.run_layout import RunInfo, RunLayout


def format_table(stats: dict) -> str:
    """The 12 YTVIS statistics, one per line, as the official summary prints them."""
    from ..metrics.ytvis_eval import summary_lines

    return "\n".join(summary_lines(stats))


def log_metrics_to_tensorboard(log_dir: Path, metrics: dict, cfg) -> None:
    """Per-category AP, AP after a fraction of the frames, the table, hparams and a custom-scalars layout.

    The 12 YTVIS statistics themselves are logged by the LightningModule (``metrics/<name>``).
    """
    from ..viz.tensorboard import RunBoard, metrics_layout

    timing = metrics["decision_timing"]
    ap_k = {f"AP_after_{k.rstrip('%')}pct_frames": v for k, v in (timing.get("AP_after_fraction_of_frames") or {}).items()}
    ap_k = {k: v for k, v in ap_k.items() if v is not None}
    if timing.get("median_settle_fraction") is not None:
        ap_k["median_settle_fraction"] = timing["median_settle_fraction"]
    with RunBoard(log_dir) as board:
        tags = [f"metrics/{k}" for k in metrics["ytvis"]]
        tags += board.add_metrics(metrics["per_category_AP"], prefix="per_category_AP")
        tags += board.add_metrics(ap_k, prefix="decision_timing")
        board.add_text_table("summary/ytvis", [{"statistic": k, "value": round(v, 4)} for k, v in metrics["ytvis"].items()])
        board.add_layout(metrics_layout(tags))
        board.add_hparams(_config_dict(cfg), [t for t in tags if t.startswith("metrics/")])


def _config_dict(cfg) -> dict:
    import yaml

    return yaml.safe_load(cfg.dump())


def finish_run(run_dir: Path, info: RunInfo, metric_results, data, cfg):
    """Write config.yaml and run.json (``info`` marked complete); for ``test`` also metrics.json, the
    metric table printed and its TensorBoard scalars."""
    layout = RunLayout(run_dir)
    atomic_write_bytes(layout.config_file, cfg.dump().encode("utf-8"))
    replace(info, status="complete").write(layout)
    if info.command != "test":
        return
    random_weights = bool(info.random_weights)
    temporal = json.loads(layout.results_temporal.read_text())
    gt = data.document  # as read (once) and checked before the run: --data may be a pipe
    keep = {v.id for v in data.videos}
    gt = {**gt, "videos": [v for v in gt["videos"] if v["id"] in keep]}
    gt["annotations"] = [a for a in gt.get("annotations") or [] if a["video_id"] in keep]
    stats = {k: float(v) for k, v in metric_results.items() if k in STAT_NAMES}
    per_category = metric_results.get("per_category", {})
    metrics = {
        "ytvis": stats,
        "per_category_AP": {str(k): float(v) for k, v in per_category.items()},
        "decision_timing": decision_timing(gt, temporal),
        "random_weights": random_weights,
        "num_videos": len(data.videos),
    }
    atomic_write_json(layout.metrics, metrics, indent=1)
    log_metrics_to_tensorboard(layout.tensorboard, metrics, cfg)
    print(format_table(stats))
    if random_weights:
        print("(random weights: these numbers only show that the pipeline runs)")
