"""``analyze``: which analyses run on a run directory, one pass over its videos, and the outputs.

The stages, their outputs and what each needs are in :mod:`.stages` (one protocol, one ordered
registry).

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
from .run_dir import RunDirectory
from .stages import JSON_STAGES, REGISTRY, STAGES, VISUAL_STAGES, AnalyzeOptions, stage_named
from .video_inputs import VideoInputs

__all__ = ["JSON_STAGES", "STAGES", "AnalyzeOptions", "AnalyzeReport", "dump_json", "run_pipeline"]

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
    candidates = [stage_named(s) for s in opts.only] if explicit else [
        s for s in REGISTRY if not s.optional(opts)
    ]
    stages: list[str] = []
    for stage in candidates:
        why = stage.requires(run, opts)
        if why is None:
            stages.append(stage.name)
        elif explicit:
            raise UserError(why)
        else:
            report.skipped[stage.name] = why
            if why not in ("--no-video", "--no-tensorboard"):
                note(f"skipped {stage.name}: {why}")
    for stage in candidates:
        done = stage.already_done(run) if stage.name in stages else None
        if done is not None:
            stages.remove(stage.name)
            report.skipped[stage.name], message = done
            note(message)
    videos = _select_videos(run, opts.videos)

    gt, gt_reason = run.ground_truth
    if gt is None and any(s in stages for s in ("frame_importance", "cues", "plots", "videos")):
        note(f"no ground truth: {gt_reason}")
    analyses = {}
    for stage in stages:
        if stage in JSON_STAGES:
            t0 = time.perf_counter()
            analyses[stage] = stage_named(stage).build(run, gt, opts)
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
            path = run.inference_dir / stage_named(stage).output
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
