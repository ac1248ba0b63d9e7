"""``analyze``: which analyses run on a run directory, one pass over its videos, and the outputs.

Stages (``--only`` names):

=================  ==========================================  =====================================
stage              output                                      needs
=================  ==========================================  =====================================
frame_importance   inference/frame_importance.json             frame_importance in results (offline)
tracker            inference/tracker_attention.json            tracker_cross attention (--capture temporal+)
stats              inference/attention_stats.json              refiner_time, rollout or decoder_cross
cues               inference/cue_reading.json                  frame_importance or refiner_time; run.json
causal             inference/causal_cues.json                  intervention passes (test --interventions)
decision           inference/decision_timing.json              decision fields in results; skipped when
                                                               metrics.json already has decision_timing
compare            inference/run_comparison.json               --compare OTHER_RUN_DIR
plots              inference/plots/**.png                      matplotlib (decoder overlays: frames)
videos             inference/videos/video_<id>.mp4             frames (ground-truth json + frame folder)
tensorboard        tensorboard/analyze/ (replaced as a whole)  tensorboard
=================  ==========================================  =====================================

A stage whose inputs are absent is skipped with a one-line note, unless it was asked for with
``--only``: then the run stops with a one-line :class:`UserError` naming the missing file and what
the stage needs. Every file is written atomically; JSON with sorted keys and no timestamps, so a
second run writes byte-identical files.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..utils.arrays import json_ready
from ..utils.errors import UserError
from ..utils.io_utils import atomic_write_bytes
from .causal_cues import CueThresholds
from .run_analyses import (
    CueReading,
    DecisionTiming,
    FrameImportance,
    RunComparison,
    Statistics,
    TrackerAttention,
)
from .run_dir import RunDirectory
from .video_inputs import VideoInputs

__all__ = ["JSON_STAGES", "STAGES", "AnalyzeOptions", "AnalyzeReport", "dump_json", "run_pipeline"]

JSON_STAGES = ("frame_importance", "tracker", "stats", "cues", "causal", "decision", "compare")
VISUAL_STAGES = ("plots", "videos", "tensorboard")
STAGES = JSON_STAGES + VISUAL_STAGES


@dataclass
class AnalyzeOptions:
    """What ``analyze`` does (the command-line flags, checked)."""

    only: tuple[str, ...] | None = None  # stages asked for explicitly (errors instead of skips)
    videos: tuple[str, ...] | None = None  # video ids (as text) to analyse; None = all
    layers: tuple[int, ...] | None = None  # decoder layers drawn; None = the last captured one
    scalings: tuple[str, ...] = ("per_frame",)
    styles: tuple[str, ...] = ("smooth",)
    top_k: int = 5  # best-scored predictions per video
    tracker_k: int = 5  # segmenter queries listed per frame and layer
    compare: Path | None = None
    video: bool = True
    tensorboard: bool = True
    order_by_importance: bool = False
    n_permutations: int = 5000
    seed: int = 0
    progress: bool = True
    cue_thresholds: CueThresholds = field(default_factory=CueThresholds)

    def __post_init__(self) -> None:
        if self.only is not None:
            unknown = [s for s in self.only if s not in STAGES]
            if unknown or not self.only:
                raise UserError(f"--only {','.join(self.only)}: unknown analysis {', '.join(unknown) or '(none)'}; "
                                f"choose from {', '.join(STAGES)}")
            if "videos" in self.only and not self.video:
                raise UserError("--only videos contradicts --no-video")
            if "tensorboard" in self.only and not self.tensorboard:
                raise UserError("--only tensorboard contradicts --no-tensorboard")
        if self.top_k < 1 or self.tracker_k < 1:
            raise UserError("--top-k must be a positive integer")
        if self.scalings != ("per_frame",) or self.styles != ("smooth",):
            from ..viz.plots import SCALINGS, STYLES

            for flag, given, allowed in (("--scalings", self.scalings, SCALINGS), ("--styles", self.styles, STYLES)):
                bad = [x for x in given if x not in allowed]
                if bad or not given:
                    raise UserError(f"{flag} {','.join(bad) or '(none)'}: not one of {', '.join(allowed)}")


@dataclass
class AnalyzeReport:
    """What a run of the pipeline did: files written, stages skipped (with why), seconds per stage."""

    written: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def dump_json(obj: Any) -> bytes:
    """Canonical JSON bytes: NaN/inf as null, sorted keys, one-space indent, trailing newline."""
    return (json.dumps(json_ready(obj), indent=1, sort_keys=True, allow_nan=False) + "\n").encode("utf-8")


def _stderr_note(message: str) -> None:
    print(f"dvis_attn_pl analyze: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- availability


def _problem(stage: str, run: RunDirectory, opts: AnalyzeOptions) -> str | None:
    """Why ``stage`` cannot run on ``run`` (one line), or None."""
    preds = [p for ps in run.predictions.values() for p in ps]
    temporal = run.temporal_path
    if stage == "frame_importance":
        if not any(p.get("frame_importance") is not None for p in preds):
            return (f"{temporal}: no prediction carries frame_importance; the frame_importance analysis "
                    "needs an offline (refiner) model with predictions")
    elif stage == "tracker":
        return run.missing_capture("tracker_cross", "tracker")
    elif stage == "stats":
        kinds = run.captured_kinds()
        if run.manifest is not None and not kinds & {"refiner_time", "rollout", "decoder_cross"}:
            return (f"{run.layout.attention_manifest}: none of refiner_time, rollout, decoder_cross "
                    "captured; the stats analysis needs a run with --capture temporal or more")
        return run.missing_capture("refiner_time", "stats") if run.manifest is None else None
    elif stage == "cues":
        if run.run_info is None:
            return (f"{run.layout.run_file}: missing; the cues analysis needs it (whether the weights "
                    "were random)")
        has_fi = any(p.get("frame_importance") is not None for p in preds)
        if not has_fi and "refiner_time" not in run.captured_kinds():
            return (f"{temporal}: no frame_importance and no refiner time attention captured; the cues "
                    "analysis needs an offline model run with --capture temporal or more")
    elif stage == "causal":
        from ..utils.run_layout import INTERVENTIONS_DIR, completed_passes

        if not completed_passes(run.root):
            return (f"{run.root / INTERVENTIONS_DIR}: no finished intervention pass; the causal analysis needs a "
                    "run made with --interventions")
        if not any(p.get("class_probs") is not None for p in preds):
            return f"{temporal}: no prediction carries class_probs; the causal analysis needs an offline model"
    elif stage == "decision":
        if not any("decision_settle_frame" in p for p in preds):
            return (f"{temporal}: no prediction carries decision_settle_frame; the decision analysis needs "
                    "predictions with the class posterior over frames")
    elif stage == "compare":
        if opts.compare is None:
            return "the compare analysis needs --compare OTHER_RUN_DIR"
    elif stage == "plots":
        return _viz_problem("plots")
    elif stage == "videos":
        if not opts.video:
            return "--no-video"
        gt, why = run.ground_truth
        if gt is None:
            return f"{why}; the videos analysis needs the frames named in the ground-truth json"
        root, why = run.frames_root
        if root is None:
            return f"{why}; the videos analysis needs the frames"
        return _viz_problem("videos") or _ffmpeg_problem()
    elif stage == "tensorboard":
        if not opts.tensorboard:
            return "--no-tensorboard"
        return _viz_problem("tensorboard")
    return None


def _viz_problem(stage: str) -> str | None:
    try:
        import dvis_attn_pl.viz  # noqa: F401
    except ImportError as exc:
        return f"dvis_attn_pl.viz cannot be imported ({exc}); the {stage} analysis needs it"
    return None


def _ffmpeg_problem() -> str | None:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        return f"ffmpeg is unavailable ({exc}); the videos analysis needs imageio-ffmpeg"
    return None


def _select_videos(run: RunDirectory, wanted: Sequence[str] | None) -> list[Any]:
    ids = run.video_ids
    if wanted is None:
        return ids
    by_text = {str(v): v for v in ids}
    unknown = [w for w in wanted if w not in by_text]
    if unknown:
        shown = ", ".join(str(v) for v in ids[:20]) + (" ..." if len(ids) > 20 else "")
        raise UserError(f"--videos {','.join(unknown)}: no such video in {run.root} (videos: {shown})")
    return [by_text[w] for w in dict.fromkeys(wanted)]


# ----------------------------------------------------------------------------- the pipeline


def _build_analysis(stage: str, run: RunDirectory, gt, gt_reason: str, opts: AnalyzeOptions):
    """The analysis object of a JSON stage (see :mod:`.run_analyses`)."""
    if stage == "frame_importance":
        return FrameImportance(run, gt, gt_reason, opts.top_k)
    if stage == "tracker":
        return TrackerAttention(run, opts.top_k, opts.tracker_k)
    if stage == "stats":
        return Statistics(run, gt, opts.top_k)
    if stage == "cues":
        return CueReading(run, gt, opts.top_k, n_permutations=opts.n_permutations, seed=opts.seed)
    if stage == "causal":
        from .causal_stage import CausalCues

        return CausalCues(run, gt, opts.cue_thresholds)
    if stage == "decision":
        return DecisionTiming(run, gt, gt_reason, opts.top_k)
    if stage == "compare":
        return RunComparison(run, RunDirectory(opts.compare), str(opts.compare), opts.top_k, seed=opts.seed)
    raise ValueError(f"{stage!r} is not a JSON analysis")


def run_pipeline(
    run_dir: str | Path,
    opts: AnalyzeOptions | None = None,
    *,
    note: Callable[[str], None] = _stderr_note,
) -> AnalyzeReport:
    """Run the selected analyses on ``run_dir`` (see the module docstring); returns what was done."""
    opts = opts or AnalyzeOptions()
    run = RunDirectory(run_dir)
    report = AnalyzeReport()
    explicit = opts.only is not None
    candidates = list(opts.only) if explicit else [
        s for s in STAGES if s != "compare" or opts.compare is not None
    ]
    stages: list[str] = []
    for stage in candidates:
        why = _problem(stage, run, opts)
        if why is None:
            stages.append(stage)
        elif explicit:
            raise UserError(why)
        else:
            report.skipped[stage] = why
            if why not in ("--no-video", "--no-tensorboard"):
                note(f"skipped {stage}: {why}")
    if "decision" in stages and (run.metrics or {}).get("decision_timing") is not None:
        stages.remove("decision")
        report.skipped["decision"] = "already in inference/metrics.json"
        note("decision timing: already in inference/metrics.json (not rewritten)")
    videos = _select_videos(run, opts.videos)

    gt, gt_reason = run.ground_truth
    if gt is None and any(s in stages for s in ("frame_importance", "cues", "plots", "videos")):
        note(f"no ground truth: {gt_reason}")
    analyses = {}
    for stage in stages:
        if stage in JSON_STAGES:
            t0 = time.perf_counter()
            analyses[stage] = _build_analysis(stage, run, gt, gt_reason, opts)
            report.seconds[stage] = time.perf_counter() - t0

    visuals = None
    if any(s in stages for s in VISUAL_STAGES):
        from .run_visuals import RunVisuals

        visuals = RunVisuals(run, opts, gt=gt, plots="plots" in stages, videos="videos" in stages,
                             tensorboard="tensorboard" in stages, note=note)
    try:
        bar = tqdm(videos, desc="analyze", unit="video", file=sys.stderr, disable=not opts.progress,
                   dynamic_ncols=True)
        for vid in bar:
            v = VideoInputs(run, vid, top_k=opts.top_k, ground_truth=gt)
            for stage, analysis in analyses.items():
                t0 = time.perf_counter()
                analysis.add_video(v)
                report.seconds[stage] = report.seconds.get(stage, 0.0) + time.perf_counter() - t0
            if visuals is not None:
                visuals.add_video(v)
        bar.close()
        results = {}
        for stage, analysis in analyses.items():
            t0 = time.perf_counter()
            results[stage] = analysis.finish()
            path = run.inference_dir / analysis.output
            atomic_write_bytes(path, dump_json(results[stage]))
            report.written.append(path)
            report.seconds[stage] = report.seconds.get(stage, 0.0) + time.perf_counter() - t0
        if visuals is not None:
            visuals.finish(results)
    except BaseException:
        if visuals is not None:
            visuals.abort()
        raise
    if visuals is not None:
        report.written.extend(visuals.written)
        for stage, seconds in visuals.seconds.items():
            report.seconds[stage] = seconds
    return report
