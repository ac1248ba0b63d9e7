"""The stages of ``analyze``: one protocol and one ordered registry.

Stages (``--only`` names), in the order they run:

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

A :class:`Stage` says what it needs (:meth:`Stage.requires`: the one-line problem, or None) and, for a
JSON stage, builds its :class:`Analysis` (:meth:`Stage.build`): ``add_video(v)`` once per video in
video order, then ``finish() -> dict``, the document written to ``inference/<output>``. ``cues``
comes before ``causal``: the causal stage reads the ``cue_reading.json`` written earlier in the same
run. The visual stages (plots, videos, tensorboard) are drawn together by
:class:`~.run_visuals.RunVisuals`; their :meth:`Stage.build` is not called.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol

from ..utils.errors import UserError
from ..utils.run_layout import INTERVENTIONS_DIR, completed_passes
from ..utils.temporal_record import CLASS_PROBS, DECISION_SETTLE_FRAME, FRAME_IMPORTANCE
from .causal_cues import CueThresholds
from .run_dir import GroundTruth, RunDirectory
from .video_inputs import VideoInputs

__all__ = ["JSON_STAGES", "REGISTRY", "STAGES", "VISUAL_STAGES", "Analysis", "AnalyzeOptions", "Stage", "stage_named"]


class Analysis(Protocol):
    """What a JSON stage builds: per-video collection, then one document."""

    def add_video(self, v: VideoInputs) -> None: ...

    def finish(self) -> dict: ...


class Stage:
    """One ``analyze`` stage. Subclasses set ``name`` and ``output`` and override what they need."""

    name: ClassVar[str]
    output: ClassVar[str]  # JSON stages: the file name under inference/; visual stages: a description
    visual: ClassVar[bool] = False

    def requires(self, run: RunDirectory, opts: AnalyzeOptions) -> str | None:
        """Why this stage cannot run on ``run`` (one line), or None."""
        return None

    def optional(self, opts: AnalyzeOptions) -> bool:
        """Whether a plain ``analyze`` (no ``--only``) leaves this stage out silently."""
        return False

    def already_done(self, run: RunDirectory) -> tuple[str, str] | None:
        """(skip reason, note) when the run directory already holds this stage's result."""
        return None

    def build(self, run: RunDirectory, gt: GroundTruth | None, opts: AnalyzeOptions) -> Analysis:
        raise ValueError(f"{self.name!r} is not a JSON analysis")


def _predictions(run: RunDirectory) -> list[dict]:
    return [p for ps in run.predictions.values() for p in ps]


def _has(run: RunDirectory, key: str) -> bool:
    return any(p.get(key) is not None for p in _predictions(run))


def _gt_reason(run: RunDirectory) -> str:
    return run.ground_truth[1]


class FrameImportanceStage(Stage):
    name = "frame_importance"
    output = "frame_importance.json"

    def requires(self, run, opts):
        if not _has(run, FRAME_IMPORTANCE):
            return (f"{run.temporal_path}: no prediction carries frame_importance; the frame_importance analysis "
                    "needs an offline (refiner) model with predictions")
        return None

    def build(self, run, gt, opts):
        from .run_analyses import FrameImportance

        return FrameImportance(run, gt, _gt_reason(run), opts.top_k)


class TrackerStage(Stage):
    name = "tracker"
    output = "tracker_attention.json"

    def requires(self, run, opts):
        return run.missing_capture("tracker_cross", "tracker")

    def build(self, run, gt, opts):
        from .run_analyses import TrackerAttention

        return TrackerAttention(run, opts.top_k, opts.tracker_k)


class StatsStage(Stage):
    name = "stats"
    output = "attention_stats.json"

    def requires(self, run, opts):
        if run.manifest is None:
            return run.missing_capture("refiner_time", "stats")
        if not run.captured_kinds() & {"refiner_time", "rollout", "decoder_cross"}:
            return (f"{run.layout.attention_manifest}: none of refiner_time, rollout, decoder_cross "
                    "captured; the stats analysis needs a run with --capture temporal or more")
        return None

    def build(self, run, gt, opts):
        from .run_analyses import Statistics

        return Statistics(run, gt, opts.top_k)


class CuesStage(Stage):
    name = "cues"
    output = "cue_reading.json"

    def requires(self, run, opts):
        if run.run_info is None:
            return (f"{run.layout.run_file}: missing; the cues analysis needs it (whether the weights "
                    "were random)")
        if not _has(run, FRAME_IMPORTANCE) and "refiner_time" not in run.captured_kinds():
            return (f"{run.temporal_path}: no frame_importance and no refiner time attention captured; the cues "
                    "analysis needs an offline model run with --capture temporal or more")
        return None

    def build(self, run, gt, opts):
        from .run_analyses import CueReading

        return CueReading(run, gt, opts.top_k, n_permutations=opts.n_permutations, seed=opts.seed)


class CausalStage(Stage):
    name = "causal"
    output = "causal_cues.json"

    def requires(self, run, opts):
        if not completed_passes(run.root):
            return (f"{run.root / INTERVENTIONS_DIR}: no finished intervention pass; the causal analysis needs a "
                    "run made with --interventions")
        if not _has(run, CLASS_PROBS):
            return f"{run.temporal_path}: no prediction carries class_probs; the causal analysis needs an offline model"
        return None

    def build(self, run, gt, opts):
        from .causal_stage import CausalCues

        return CausalCues(run, gt, opts.cue_thresholds)


class DecisionStage(Stage):
    name = "decision"
    output = "decision_timing.json"

    def requires(self, run, opts):
        if not any(DECISION_SETTLE_FRAME in p for p in _predictions(run)):
            return (f"{run.temporal_path}: no prediction carries decision_settle_frame; the decision analysis needs "
                    "predictions with the class posterior over frames")
        return None

    def already_done(self, run):
        if (run.metrics or {}).get("decision_timing") is not None:
            return ("already in inference/metrics.json",
                    "decision timing: already in inference/metrics.json (not rewritten)")
        return None

    def build(self, run, gt, opts):
        from .run_analyses import DecisionTiming

        return DecisionTiming(run, gt, _gt_reason(run), opts.top_k)


class CompareStage(Stage):
    name = "compare"
    output = "run_comparison.json"

    def requires(self, run, opts):
        return "the compare analysis needs --compare OTHER_RUN_DIR" if opts.compare is None else None

    def optional(self, opts):
        return opts.compare is None

    def build(self, run, gt, opts):
        from .run_analyses import RunComparison

        return RunComparison(run, RunDirectory(opts.compare), str(opts.compare), opts.top_k, seed=opts.seed)


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


class PlotsStage(Stage):
    name = "plots"
    output = "inference/plots/**.png"
    visual = True

    def requires(self, run, opts):
        return _viz_problem("plots")


class VideosStage(Stage):
    name = "videos"
    output = "inference/videos/video_<id>.mp4"
    visual = True

    def requires(self, run, opts):
        if not opts.video:
            return "--no-video"
        gt, why = run.ground_truth
        if gt is None:
            return f"{why}; the videos analysis needs the frames named in the ground-truth json"
        root, why = run.frames_root
        if root is None:
            return f"{why}; the videos analysis needs the frames"
        return _viz_problem("videos") or _ffmpeg_problem()


class TensorBoardStage(Stage):
    name = "tensorboard"
    output = "tensorboard/analyze/"
    visual = True

    def requires(self, run, opts):
        if not opts.tensorboard:
            return "--no-tensorboard"
        return _viz_problem("tensorboard")


# The one registry, in run order ("cues" before "causal": causal reads cue_reading.json).
REGISTRY: tuple[Stage, ...] = (
    FrameImportanceStage(),
    TrackerStage(),
    StatsStage(),
    CuesStage(),
    CausalStage(),
    DecisionStage(),
    CompareStage(),
    PlotsStage(),
    VideosStage(),
    TensorBoardStage(),
)
_BY_NAME: dict[str, Stage] = {s.name: s for s in REGISTRY}
STAGES: tuple[str, ...] = tuple(_BY_NAME)
JSON_STAGES: tuple[str, ...] = tuple(s.name for s in REGISTRY if not s.visual)
VISUAL_STAGES: tuple[str, ...] = tuple(s.name for s in REGISTRY if s.visual)


def stage_named(name: str) -> Stage:
    """The registered stage called ``name`` (KeyError for an unknown name)."""
    return _BY_NAME[name]


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
