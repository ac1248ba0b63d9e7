"""End of a run on rank 0: metrics.json (YTVIS + decision timing), the config used, and the printed table."""

from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

from .analysis.decision import prefix_lengths
from .io_utils import atomic_write_bytes, atomic_write_json
from .metrics.ytvis_eval import STAT_NAMES

PREFIX_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def truncate_ground_truth(gt: dict, fractions_to_k: dict[int, int]) -> dict:
    """The GT json restricted to each video's first k frames (``fractions_to_k``: video id -> k)."""
    videos = []
    for v in gt["videos"]:
        k = fractions_to_k[v["id"]]
        videos.append({**v, "length": k, "file_names": list(v.get("file_names", []))[:k]})
    anns = []
    for a in gt.get("annotations", []):
        k = fractions_to_k[a["video_id"]]
        trimmed = {**a, "segmentations": a["segmentations"][:k]}
        for key in ("areas", "bboxes"):
            if key in a and a[key] is not None:
                trimmed[key] = a[key][:k]
        anns.append(trimmed)
    return {**gt, "videos": videos, "annotations": anns}


def prefix_predictions(temporal: list[dict], video_k: dict[int, int]) -> list[dict]:
    """Each prediction restricted to the first k frames, scored by its class posterior after k frames."""
    out = []
    for rec in temporal:
        k = video_k[rec["video_id"]]
        score = (rec.get("score_after_k_frames") or {}).get(str(k))
        if score is None:
            continue
        out.append(
            {
                "video_id": rec["video_id"],
                "category_id": rec["category_id"],
                "score": score,
                "segmentations": rec["segmentations"][:k],
            }
        )
    return out


def decision_timing(gt: dict | None, temporal: list[dict], fractions=PREFIX_FRACTIONS) -> dict:
    """When decisions settle, and the AP when only the first fraction of each video is seen."""
    lengths = {v["id"]: _video_length(v) for v in gt["videos"]} if gt else {}
    settle = [
        rec["decision_settle_frame"] / max(1, len(rec["label_by_frame"]))
        for rec in temporal
        if "decision_settle_frame" in rec
    ]
    summary: dict = {
        "predictions": len(temporal),
        "median_settle_fraction": _median(settle),
        "settled_at_first_frame": sum(1 for s in settle if s == 0),
        "note": "class posterior of the temporal pooling restricted to the first k frames; for offline "
        "models the refined embeddings still saw the whole video",
    }
    if gt and gt.get("annotations") is not None:
        from .metrics import evaluate_ytvis

        ap = {}
        for f in fractions:
            video_k = {vid: prefix_lengths(t, (f,))[0] for vid, t in lengths.items()}
            preds = prefix_predictions(temporal, video_k)
            stats = evaluate_ytvis(truncate_ground_truth(gt, video_k), preds) if preds else None
            ap[f"{int(round(f * 100))}%"] = None if stats is None else stats["AP"]
        summary["AP_after_fraction_of_frames"] = ap
    return summary


def _video_length(video: dict) -> int:
    """A json video's frame count: ``length``, or the number of its frame files (``length`` is optional)."""
    return int(video["length"]) if video.get("length") is not None else len(video.get("file_names") or [])


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def format_table(stats: dict) -> str:
    """The 12 YTVIS statistics, one per line, as the official summary prints them."""
    from .metrics.ytvis_eval import summary_lines

    return "\n".join(summary_lines(stats))


def log_metrics_to_tensorboard(log_dir: Path, metrics: dict, cfg) -> None:
    """Per-category AP, AP after a fraction of the frames, the table, hparams and a custom-scalars layout.

    The 12 YTVIS statistics themselves are logged by the LightningModule (``metrics/<name>``).
    """
    from .viz.tensorboard import RunBoard, metrics_layout

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


def finish_run(run_dir: Path, command: str, metric_results, data_json: Path, data, cfg, args, random_weights: bool):
    """Write metrics.json, config.yaml and run.json; print the metric table (test only)."""
    import lightning
    import torch

    inference = Path(run_dir) / "inference"
    atomic_write_bytes(Path(run_dir) / "config.yaml", cfg.dump().encode("utf-8"))
    run_file = Path(run_dir) / "run.json"
    started = json.loads(run_file.read_text()) if run_file.is_file() else {}
    atomic_write_json(
        run_file,
        {
            "command": command,
            "argv": sys.argv[1:],
            "status": "complete",
            "data": str(Path(data_json).resolve()),
            "frames": str(Path(args.frames).resolve() if getattr(args, "frames", None) else Path(data_json).resolve().parent / "JPEGImages"),
            "checkpoint": args.ckpt,
            "weights": getattr(args, "weights", "checkpoint" if args.ckpt else "random"),
            "random_weights": random_weights,
            "versions": {"python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__},
            "fingerprint": started.get("fingerprint"),
        },
        indent=1,
    )
    if command != "test":
        return
    temporal = json.loads((inference / "results_temporal.json").read_text())
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
    atomic_write_json(inference / "metrics.json", metrics, indent=1)
    log_metrics_to_tensorboard(Path(run_dir) / "tensorboard", metrics, cfg)
    print(format_table(stats))
    if random_weights:
        print("(random weights: these numbers only show that the pipeline runs)")
