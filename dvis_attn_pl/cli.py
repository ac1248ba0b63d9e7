"""Command line: ``python -m dvis_attn_pl {test,predict,evaluate,analyze} ...``.

This module only parses and checks arguments; each command's body is ``run_<command>(args)`` in
``dvis_attn_pl.commands.<command>``, imported when the command runs (so ``--help`` stays fast).
User mistakes (unknown flag, missing file, bad config) print one line and exit with status 2.
Any other failure prints one line and exits with status 1: a file-system error (disk full, read-only,
no permission) names the file and the problem; a traceback comes first only for what may be a bug.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from . import __version__
from .run.precision import PRECISIONS
from .utils.compat import file_being_written, install_thread_excepthook
from .utils.errors import UserError, one_line

__all__ = ["COMMANDS", "build_parser", "describe_error", "main"]

PROG = "dvis_attn_pl"
COMMANDS = ("test", "predict", "evaluate", "analyze", "fit", "control")
CAPTURE_PRESETS = ("none", "temporal", "decoder", "all")
MODEL_SOURCES = ("native", "detectron2")
DEFAULT_MODEL_CONFIG = "tiny_fish"

# (attribute, what it must be): paths checked before a command starts.
_PATH_ARGS = (
    ("ckpt", "file"),
    ("model_config", "file"),
    ("data", "file"),
    ("frames", "dir"),
    ("gt", "file"),
    ("results", "file"),
    ("run_dir", "dir"),
    ("compare", "dir"),
    ("val_data", "file"),
    ("val_frames", "dir"),
    ("init", "file"),
)


class _UsageError(Exception):
    """An argument problem found by argparse or by the checks here; printed as one line."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one short line instead of usage + error."""

    def error(self, message: str):  # type: ignore[override]
        raise _UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


def _checked_number(convert, ok, what: str):
    """An argparse type: ``convert(text)`` that must satisfy ``ok``, else "expected <what>"."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_non_negative_int = _checked_number(int, lambda v: v >= 0, "an integer >= 0")
_positive_int = _checked_number(int, lambda v: v > 0, "a positive integer")
_positive_float = _checked_number(float, lambda v: v > 0, "a positive number")


_DESCRIPTION = """\
Evaluate DVIS-DAQ video instance segmentation checkpoints (official code or the fish-dvis fork) with
PyTorch Lightning, capture the model's attention while it runs, score the YouTube-VIS mask AP, and
analyse what the model looked at. Each command has its own --help."""

_TOP_EPILOG = """\
commands:
  test      inference + YTVIS metric + attention capture on a labelled video set
  predict   inference + attention capture on unlabelled videos (no metric)
  evaluate  the YTVIS metric on an existing results.json
  analyze   summaries, plots and videos from a run directory
  fit       train DVIS-DAQ stage by stage (segmenter, tracker, refiner)

examples:
  python -m dvis_attn_pl test                       # embedded synthetic fish videos, tiny model
  python -m dvis_attn_pl test --ckpt model_final.pth --model-config DAQ_Offline_VitAdapterL.yaml \\
      --data valid.json --frames JPEGImages/ --out runs/vitl INPUT.MIN_SIZE_TEST 480
  python -m dvis_attn_pl evaluate --gt valid.json --results runs/vitl/inference/results.json
  python -m dvis_attn_pl analyze runs/vitl
"""

_TEST_DESCRIPTION = """\
Run a DVIS-DAQ model over a YouTube-VIS video set with ground truth: write the predictions
(results.json), score the YTVIS mask AP, and store the attention selected by --capture in the run
directory (--out). With no arguments it generates a small deterministic synthetic fish-video set and
runs the tiny CPU config (configs/tiny_cpu.yaml) with random weights, to show the whole pipeline.
Trailing KEY VALUE pairs override the model config, as with the official tools; they go last."""

_TEST_EPILOG = """\
examples:
  python -m dvis_attn_pl test
  python -m dvis_attn_pl test --interventions all --out runs/probe   # causal cue tests (docs/interventions.md)
  python -m dvis_attn_pl test --ckpt DAQ_Online_R50_ytvis19.pth \\
      --model-config configs/dvis_daq_r50_online_ytvis19.yaml \\
      --data ytvis_2019/valid.json --frames ytvis_2019/valid/JPEGImages --out runs/r50
  python -m dvis_attn_pl test --ckpt fish.pth --model-config DAQ_Fishway_config_camera.yaml \\
      --data fish/valid.json --frames fish/JPEGImages --devices 4 --accelerator gpu \\
      --capture all MODEL.MASK_FORMER.TEST.WINDOW_SIZE 50
"""

_PREDICT_DESCRIPTION = """\
Run a DVIS-DAQ model over videos without ground truth: write the predictions (results.json and the
temporal results) and the attention selected by --capture into the run directory, with no metric.
--data is a YouTube-VIS style json listing the videos and their frame files (annotations are not
needed). Trailing KEY VALUE pairs override the model config; they go last."""

_PREDICT_EPILOG = """\
examples:
  python -m dvis_attn_pl predict --ckpt fish.pth --model-config DAQ_Fishway_config_camera.yaml \\
      --data unlabelled.json --frames frames/ --out runs/fish_predict
  python -m dvis_attn_pl predict --max-videos 3 --capture decoder
"""

_EVALUATE_DESCRIPTION = """\
Score existing predictions with the YouTube-VIS video mask AP (AP, AP50, AP75, APs, APm, APl, AR1,
AR10 and per-category AP), computed as the official evaluator does. Reads only the two files: the
ground-truth json and a results.json in the YTVIS result format (from this tool or the official code)."""

_EVALUATE_EPILOG = """\
examples:
  python -m dvis_attn_pl evaluate --gt ytvis_2019/valid.json --results runs/r50/inference/results.json
  python -m dvis_attn_pl evaluate --gt valid.json --results results.json --json > metrics.json
"""

_ANALYZE_DESCRIPTION = """\
Turn a run directory written by test or predict into summaries, plots, attention videos and
TensorBoard events (temporal attention, rollout, frame importance, decision analysis). It reads only
the run directory, never the model, so it can run on another machine than the inference."""

_ANALYZE_EPILOG = """\
examples:
  python -m dvis_attn_pl analyze runs/r50
  python -m dvis_attn_pl analyze runs/r50 --only frame_importance,cues --videos 3,7
  python -m dvis_attn_pl analyze runs/r50 --layers 0,2 --scalings per_frame,across_frames_weighted
  python -m dvis_attn_pl analyze runs/scrambled --compare runs/r50 --no-video
  tensorboard --logdir runs/r50 --samples_per_plugin images=10000
"""


_FIT_DESCRIPTION = """\
Train DVIS-DAQ in the official stages, each starting from the previous stage's weights: segmenter
(single frames), tracker (clips, segmenter frozen), refiner (clips, segmenter and tracker frozen).
Each stage writes <out>/<stage>/model_final.safetensors in the official key layout (test --ckpt
loads it strictly), stage.json (steps, time, val AP) and TensorBoard events under <out>/tensorboard.
Without --data it trains on the synthetic fish train split and validates on the embedded set."""

_CONTROL_EPILOG = """\
examples:
  python -m dvis_attn_pl control                                 # writes docs/control_experiment.md
  python -m dvis_attn_pl control --held-out-videos 0 --out runs/control_val   # the 12-video val split
  python -m dvis_attn_pl control --skip-sanity --max-videos 4 --report /tmp/report.md
"""

_FIT_EPILOG = """\
examples:
  python -m dvis_attn_pl fit --stage all --out runs/fit_tiny          # the shipped model's recipe
  python -m dvis_attn_pl fit --stage tracker --out runs/fit_tiny --max-steps 50
  python -m dvis_attn_pl fit --stage segmenter --out runs/mine --data train.json --frames JPEGImages \\
      --val-data valid.json --val-frames valid/JPEGImages --devices 2 --strategy ddp
"""


def _add_hardware_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The Lightning Trainer flags every model-running command shares; returns their group."""
    hw = parser.add_argument_group("hardware (Lightning Trainer)")
    hw.add_argument("--devices", default="auto", help="devices per node: N, a list like 0,1, or auto (default)")
    hw.add_argument("--accelerator", default="auto", help="cpu, gpu, cuda, mps or auto (default)")
    hw.add_argument("--strategy", default="auto", help="Lightning strategy, e.g. ddp; default auto")
    hw.add_argument(
        "--precision", default="32-true", choices=PRECISIONS, metavar="PRECISION",
        help="32-true (default: exact float32, TF32 off), tf32 (float32 with TF32 tensor-core matmuls and "
        "convolutions on NVIDIA GPUs), 16-mixed (like the official fp16 autocast eval), bf16-mixed",
    )
    hw.add_argument("--num-nodes", metavar="N", type=_positive_int, default=1, help="number of nodes (default 1)")
    return hw


def _add_fit_flags(parser: argparse.ArgumentParser) -> None:
    """``fit`` options."""
    parser.add_argument(
        "--stage", choices=("segmenter", "tracker", "refiner", "all"), required=True,
        help="the stage to train, or all three in order",
    )
    parser.add_argument("--out", metavar="DIR", required=True, help="training directory (one folder per stage)")
    parser.add_argument(
        "--model-config", metavar="PATH",
        help=f"YAML config of the model to train (default: {DEFAULT_MODEL_CONFIG})",
    )
    parser.add_argument("--data", metavar="JSON", help="labelled YouTube-VIS json to train on (default: synthetic train split)")
    parser.add_argument("--frames", metavar="DIR", help="folder holding the frame files named in --data")
    parser.add_argument("--val-data", metavar="JSON", help="labelled json for the val AP (default: the embedded set)")
    parser.add_argument("--val-frames", metavar="DIR", help="folder holding the frame files named in --val-data")
    parser.add_argument("--max-steps", metavar="N", type=_positive_int, help="optimizer steps (default: per stage)")
    parser.add_argument("--lr", metavar="LR", type=_positive_float, help="AdamW learning rate (default 3e-4)")
    parser.add_argument("--batch-size", metavar="N", type=_positive_int, help="frames / clips per step (default: per stage)")
    parser.add_argument("--weight-decay", metavar="WD", type=float, default=0.05, help="AdamW weight decay (default 0.05)")
    parser.add_argument("--seed", metavar="N", type=int, default=0, help="seed of the weights and the samples (default 0)")
    parser.add_argument("--init", metavar="PATH", help="weights to start the (first) stage from, instead of the previous stage's")
    parser.add_argument("--resume", action="store_true", help="continue a stage from <out>/<stage>/checkpoints/last.ckpt")
    parser.add_argument(
        "--shuffle-frames", action="store_true",
        help="show every training clip in a random frame order (a control model that cannot learn order)",
    )
    parser.add_argument(
        "--position-loss", type=float, default=None, metavar="W",
        help="weight of the training-only loss that asks the segmenter's queries and the tracker's outputs "
        "to carry their object's position (default 2 for segmenter and tracker; 0 = the official criterion)",
    )
    _add_hardware_flags(parser)
    parser.add_argument("opts", nargs=argparse.REMAINDER, metavar="KEY VALUE", help="config overrides (last on the line)")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """The flags ``test`` and ``predict`` share."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--ckpt", metavar="PATH",
        help="checkpoint (.pth with or without a 'model' key, detectron2 .pkl, .safetensors); "
        "loaded strictly. Without it the embedded config runs the shipped weights (trained on the "
        "synthetic fish set); another config needs --ckpt or --random-weights",
    )
    model.add_argument(
        "--model-config", metavar="PATH",
        help="official DVIS-DAQ / fish-dvis YAML config (its _BASE_ chain is followed) or the name of "
        f"a config in configs/; default: {DEFAULT_MODEL_CONFIG} when neither --ckpt nor this is given",
    )
    model.add_argument(
        "--model-source", choices=MODEL_SOURCES, default="native",
        help="native: this package's re-implementation (default); detectron2: build your own "
        "DVIS-DAQ code through detectron2's registry (needs detectron2 and that code importable)",
    )
    model.add_argument(
        "--random-weights", action="store_true",
        help="run the model with seeded random weights instead of a checkpoint (only shows that the "
        "pipeline runs; without --ckpt the embedded config uses the shipped trained weights)",
    )
    model.add_argument(
        "--trust-checkpoint", action="store_true",
        help="allow a checkpoint that needs full unpickling (runs code from the file: only for "
        "files you trust); by default checkpoints load with weights_only",
    )
    data = parser.add_argument_group("data and output")
    data.add_argument("--data", metavar="JSON", help="YouTube-VIS json of the videos; default: the embedded synthetic set")
    data.add_argument("--frames", metavar="DIR", help="folder holding the frame files named in --data")
    data.add_argument("--out", metavar="DIR", help="run directory; default: runs/<timestamp>-<command>")
    data.add_argument("--max-videos", metavar="N", type=_positive_int, help="only the first N videos")
    data.add_argument(
        "--capture", metavar="PRESET", choices=CAPTURE_PRESETS, default="temporal",
        help="attention to keep: none; temporal (default: refiner time attention, the temporal pooling "
        "weights, tracker cross-attention, and their rollout); decoder (temporal + decoder cross-attention "
        "maps of the top predictions, weighted by the tracker); all (every attention site, large)",
    )
    probe = parser.add_argument_group("interventions (causal cue tests; see docs/interventions.md)")
    probe.add_argument(
        "--interventions", metavar="LIST",
        help="after the unaltered pass, one pass per intervention into <out>/interventions/<name>/: "
        "freeze, shuffle, reverse, silhouette, uniform_pooling, no_time_attention, tracker_memory_cut, "
        "or all (comma list)",
    )
    probe.add_argument("--shuffle-k", metavar="K", type=_positive_int, default=3, help="shuffle: seeded permutations, one pass each (default 3)")
    probe.add_argument(
        "--freeze-frame", metavar="WHICH", default="middle",
        help="freeze: the frame repeated: middle (default), first, random, median_importance (of the top "
        "prediction's present frames in the unaltered pass)",
    )
    probe.add_argument("--intervention-seed", metavar="N", type=int, default=0, help="seed of the shuffles and random frames (default 0)")
    hw = _add_hardware_flags(parser)
    hw.add_argument(
        "--num-workers", metavar="N", type=_non_negative_int, default=None,
        help="DataLoader processes decoding the next videos' frames while the model runs (0: decode in the "
        "main process, window by window); default: 0 when the model runs on the CPU (workers would "
        "take its cores), else half the CPU cores, at most 4",
    )
    parser.add_argument(
        "opts", nargs=argparse.REMAINDER, metavar="KEY VALUE",
        help="config overrides, e.g. INPUT.MIN_SIZE_TEST 360 MODEL.VIDEO_HEAD.OFFLINE_TOPK_NUM 20 (last on the line)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (top level + the four subcommands)."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog=PROG, description=_DESCRIPTION, epilog=_TOP_EPILOG, formatter_class=formatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, summary: str, description: str, epilog: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, description=description, epilog=epilog, formatter_class=formatter)

    _add_run_flags(add("test", "inference + metric + attention on a labelled set", _TEST_DESCRIPTION, _TEST_EPILOG))
    _add_run_flags(add("predict", "inference + attention, no metric", _PREDICT_DESCRIPTION, _PREDICT_EPILOG))

    evaluate = add("evaluate", "YTVIS metric on existing files", _EVALUATE_DESCRIPTION, _EVALUATE_EPILOG)
    evaluate.add_argument("--gt", metavar="JSON", required=True, help="ground-truth YouTube-VIS json")
    evaluate.add_argument("--results", metavar="JSON", required=True, help="predictions in the YTVIS results format")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON instead of a table")

    analyze = add("analyze", "summaries, plots and videos from a run", _ANALYZE_DESCRIPTION, _ANALYZE_EPILOG)
    analyze.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by test or predict")
    _add_analyze_flags(analyze)
    _add_fit_flags(add("fit", "train DVIS-DAQ stage by stage", _FIT_DESCRIPTION, _FIT_EPILOG))
    control = add(
        "control", "the control experiment: causal verdicts vs designed cues",
        "Run the synthetic val split with every intervention (shipped model, random weights, the control model "
        "trained on shuffled clips), analyse, and write the report (see docs/interventions.md).", _CONTROL_EPILOG,
    )
    control.add_argument("--out", metavar="DIR", default="runs/control", help="run directories (default runs/control)")
    control.add_argument("--report", metavar="MD", default="docs/control_experiment.md", help="report path (default docs/control_experiment.md)")
    control.add_argument("--interventions", metavar="LIST", default="all", help="interventions (default all)")
    control.add_argument("--shuffle-k", metavar="K", type=_positive_int, default=3, help="shuffle permutations (default 3)")
    control.add_argument("--max-videos", metavar="N", type=_positive_int, help="only the first N videos")
    control.add_argument(
        "--held-out-videos", metavar="N", type=_non_negative_int, default=30,
        help="videos of the held-out synthetic split (seed 2; default 30); 0: the embedded 12-video val split "
        "(3-5 objects per species: intervals too wide for most verdicts)",
    )
    control.add_argument("--control-weights", metavar="PATH", help="weights of the shuffled-clip control model")
    control.add_argument("--skip-sanity", action="store_true", help="run the trained model only")
    control.add_argument(
        "--record", action="store_true",
        help="maintainers: record whether the attention proxies agreed (labels them validated or descriptive only)",
    )
    return parser


def _add_analyze_flags(parser: argparse.ArgumentParser) -> None:
    """``analyze`` options (checked by the command: names, ids and layers depend on the run)."""
    parser.add_argument(
        "--only", metavar="LIST",
        help="comma list of analyses to run, failing if their inputs are missing: frame_importance, tracker, "
        "stats, cues, decision, compare, plots, videos, tensorboard (default: every one whose inputs exist)",
    )
    parser.add_argument("--videos", metavar="IDS", help="comma list of video ids (default: all)")
    parser.add_argument("--top-k", metavar="N", type=_positive_int, help="best-scored predictions per video (default 5)")
    parser.add_argument(
        "--layers", metavar="LIST",
        help="decoder cross-attention layers drawn in overlays and videos (default: the last captured one)",
    )
    parser.add_argument(
        "--scalings", metavar="LIST",
        help="attention overlay scalings: per_frame (default), across_frames, per_frame_weighted, "
        "across_frames_weighted (the first is used in videos and TensorBoard)",
    )
    parser.add_argument("--styles", metavar="LIST", help="attention overlay styles: smooth (default), grid")
    parser.add_argument("--compare", metavar="OTHER_RUN_DIR", help="compare frame importance with another run")
    parser.add_argument("--no-video", action="store_true", help="do not write the MP4 prediction videos")
    parser.add_argument("--no-tensorboard", action="store_true", help="do not write tensorboard/analyze events")
    parser.add_argument(
        "--order-by-importance", action="store_true",
        help="show the frames of the prediction videos in decreasing frame importance",
    )
    verdict = parser.add_argument_group("causal verdict (runs with --interventions; docs/interventions.md)")
    verdict.add_argument("--keep", metavar="R", type=float, help="R above which an intervention keeps a class (default 0.9)")
    verdict.add_argument("--drop", metavar="R", type=float, help="R below which it drops the class (default 0.5)")
    verdict.add_argument("--alpha", metavar="A", type=float, help="Holm-adjusted level of the threshold tests (default 0.05)")
    verdict.add_argument(
        "--max-attraction", metavar="X", type=float,
        help="how much freeze may move other classes' objects towards a class still read as appearance (default 0.1)",
    )


def _check_paths(args: argparse.Namespace) -> None:
    """Every path argument given must exist and be of the right kind."""
    for attr, kind in _PATH_ARGS:
        value = getattr(args, attr, None)
        if not value:
            continue
        path = Path(value)
        if not path.exists():
            raise _UsageError(f"{PROG}: error: {value}: no such {'directory' if kind == 'dir' else 'file'}")
        if kind == "file" and path.is_dir():
            raise _UsageError(f"{PROG}: error: {value}: is a directory, expected a file")
        if kind == "dir" and not path.is_dir():
            raise _UsageError(f"{PROG}: error: {value}: is a file, expected a directory")


def _resolve_model_config(args: argparse.Namespace) -> None:
    """Bundled config names -> paths; the tiny default when neither --ckpt nor a config is given."""
    from .config import available_configs, config_path

    value = args.model_config
    if value is None:
        if not args.ckpt:
            try:
                args.model_config = str(config_path(DEFAULT_MODEL_CONFIG))
            except UserError:
                pass  # not in a source checkout: the command reports what is missing
        return
    stem = value[: -len(".yaml")] if value.endswith(".yaml") else value
    if not Path(value).exists() and stem in available_configs():
        args.model_config = str(config_path(stem))


def _resolve_weights(args: argparse.Namespace) -> None:
    """Set ``args.weights`` ("checkpoint", "shipped" or "random") and, for the shipped weights, ``args.ckpt``."""
    from .config import config_path
    from .weights import SHIPPED_CONFIG, shipped_weights

    if args.ckpt:
        if args.random_weights:
            raise _UsageError(f"{PROG} {args.command}: error: --ckpt and --random-weights exclude each other")
        args.weights = "checkpoint"
        return
    if args.random_weights or args.model_source != "native":
        args.weights = "random"
        return
    try:
        embedded = args.model_config and Path(args.model_config).resolve() == config_path(SHIPPED_CONFIG).resolve()
    except UserError:
        embedded = False
    if not embedded:
        raise _UsageError(
            f"{PROG} {args.command}: error: {args.model_config}: no --ckpt given; pass the checkpoint "
            "trained with this config, or --random-weights to run it with random weights"
        )
    args.ckpt = str(shipped_weights())
    args.weights = "shipped"


def _check_overrides(args: argparse.Namespace) -> None:
    opts = list(getattr(args, "opts", None) or [])
    flags = [t for t in opts if t.startswith("--")]
    if flags:
        raise _UsageError(
            f"{PROG} {args.command}: error: option {flags[0]} comes after the KEY VALUE overrides; "
            "put options first"
        )
    if len(opts) % 2:
        raise _UsageError(
            f"{PROG} {args.command}: error: overrides must be KEY VALUE pairs; got an odd number of "
            f"tokens ({len(opts)}), last: {opts[-1]}"
        )


def _validate_config(args: argparse.Namespace) -> None:
    """Load the model config with its overrides now, so a bad key fails before any heavy work."""
    if args.model_config and args.model_source == "native":
        from .config import check_values, load_config

        opts = list(args.opts or [])
        cfg = load_config(args.model_config, overrides=opts)
        check_values(cfg, f"{args.model_config} (+ overrides)" if opts else args.model_config)


def _weights_override(args: argparse.Namespace) -> None:
    """A trailing ``MODEL.WEIGHTS PATH`` (the official tools' way to name the checkpoint) is the
    checkpoint: it is loaded as ``--ckpt`` would be, so the run's config.yaml tells the truth. With a
    different ``--ckpt`` as well, which one is meant is unclear: refused."""
    opts = list(args.opts or [])
    given = [opts[i + 1] for i in range(0, len(opts) - 1, 2) if opts[i] == "MODEL.WEIGHTS" and opts[i + 1]]
    if not given:
        return
    weights = given[-1]
    if args.ckpt and os.path.abspath(args.ckpt) != os.path.abspath(weights):
        raise _UsageError(
            f"{PROG} {args.command}: error: MODEL.WEIGHTS {weights} and --ckpt {args.ckpt} name different "
            "checkpoints; give one"
        )
    args.ckpt = weights


def _prepare(args: argparse.Namespace) -> None:
    if args.command in ("test", "predict", "fit"):
        _check_overrides(args)
    if args.command in ("test", "predict"):
        if args.model_source == "native":
            _weights_override(args)
        _resolve_model_config(args)
    if args.command == "fit" and args.model_config:
        _resolve_model_config(args)
    _check_paths(args)
    if args.command in ("test", "predict"):
        _validate_config(args)
        _resolve_weights(args)


def run_options(args: argparse.Namespace):
    """The frozen :class:`~dvis_attn_pl.run.options.RunOptions` of a checked ``test`` / ``predict``
    command line (after :func:`_prepare`): the only place the run's options leave the Namespace."""
    from .run.options import RunOptions

    return RunOptions(
        command=args.command,
        argv=tuple(args.argv),
        model_config=args.model_config,
        model_source=args.model_source,
        ckpt=args.ckpt,
        weights=args.weights,
        trust_checkpoint=bool(args.trust_checkpoint),
        overrides=tuple(args.opts or ()),
        data=args.data,
        frames=args.frames,
        out=args.out,
        max_videos=args.max_videos,
        capture=args.capture,
        interventions=args.interventions,
        shuffle_k=args.shuffle_k,
        freeze_frame=args.freeze_frame,
        intervention_seed=args.intervention_seed,
        hardware=hardware_options(args),
        num_workers=args.num_workers,
    )


def hardware_options(args: argparse.Namespace):
    """The :class:`~dvis_attn_pl.run.options.Hardware` of the flags every running command shares."""
    from .run.options import Hardware

    return Hardware(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        precision=args.precision,
        num_nodes=args.num_nodes,
    )


def _dispatch(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"{__package__}.commands.{args.command}")
    run = getattr(module, f"run_{args.command}")
    try:
        code = run(args)
    except NotImplementedError as exc:
        detail = f" ({one_line(str(exc))})" if str(exc) else ""
        print(f"{PROG}: error: '{args.command}' is not available yet{detail}", file=sys.stderr)
        return 2
    return 0 if code is None else int(code)


def _os_error(exc: BaseException) -> OSError | None:
    """The first OSError in ``exc``'s cause/context chain (an ``AttentionStoreError`` wraps one)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def worker_message(text: str) -> str:
    """The original message of an error re-raised from a DataLoader worker process (torch prefixes it
    with 'Caught X in DataLoader worker process N' and the worker's traceback); ``text`` otherwise."""
    if _WORKER_TRACEBACK not in text:
        return text
    last = [ln for ln in text.splitlines() if ln.strip()][-1]
    match = re.match(r"^[\w.]+: (.*)$", last)
    return match.group(1) if match else last


def describe_error(exc: BaseException) -> str:
    """One line for ``exc``: for a file-system error (disk full, read-only, permission) the file
    and the problem, e.g. ``runs/x/inference/parts/3.json: No space left on device (ENOSPC)``."""
    if isinstance(exc, UserError):
        return one_line(worker_message(str(exc)))
    os_error = _os_error(exc)
    if os_error is not None:
        name = errno.errorcode.get(os_error.errno, str(os_error.errno))
        problem = f"{os_error.strerror or os.strerror(os_error.errno)} ({name})"
        where = os_error.filename2 or os_error.filename or file_being_written(os_error)
        if where is not None:
            return f"{os.fsdecode(where)}: {problem}"
        outer = one_line(str(exc))
        return f"{outer} ({name})" if outer and exc is not os_error else f"cannot write the output: {problem}"
    text = one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _wants_traceback(exc: BaseException) -> bool:
    """A traceback only for what may be a bug; environment problems (out of memory, files) get one line."""
    return not isinstance(exc, (UserError, MemoryError)) and _os_error(exc) is None


def _report(guard, exc: BaseException, code: int, trace: bool) -> int:
    if guard is not None:
        return guard.report(exc, describe_error, code, trace)
    if trace:
        traceback.print_exception(exc, file=sys.stderr)
    print(f"{PROG}: error: {describe_error(exc)}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), run the command, return the exit status.

    ``test`` and ``predict`` run under a :class:`~dvis_attn_pl.run.ddp_guard.RankGuard`: with several
    processes, one failing rank stops them all and its error is printed once.
    """
    install_thread_excepthook()
    parser = build_parser()
    guard = None
    try:
        argv = list(sys.argv[1:] if argv is None else argv)
        args = parser.parse_args(argv)
        args.argv = tuple(argv)  # recorded in run.json
        if args.command is None:
            raise _UsageError(f"{PROG}: error: choose a command: {', '.join(COMMANDS)} (see {PROG} --help)")
        _prepare(args)
        if args.command in ("test", "predict", "fit"):
            from .run.ddp_guard import install

            guard = install(num_nodes=args.num_nodes)
        code = _dispatch(args)
    except SystemExit as exc:  # --help / --version, or a command that exits itself
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(one_line(str(exc.code)), file=sys.stderr)
            code = 1
        if code and guard is not None and _was_interrupted():  # Lightning ends Ctrl-C with exit(1)
            code = _interrupted(guard)
    except _UsageError as exc:
        print(one_line(str(exc)), file=sys.stderr)
        code = 2
    except UserError as exc:
        code = _report(guard, exc, 2, trace=False)
    except KeyboardInterrupt:
        code = _interrupted(guard)
    except Exception as exc:  # noqa: BLE001 - every failure ends as one line (and a traceback for bugs)
        code = _report(guard, exc, 1, trace=_wants_traceback(exc))
    if guard is None:
        return code
    try:
        return guard.finish(code)
    except KeyboardInterrupt:  # Ctrl-C while rank 0 waits for the other ranks to end
        return _interrupted(guard)
    finally:
        guard.close()


def _was_interrupted() -> bool:
    from .run.ddp_guard import interrupted

    return interrupted.is_set()


def _interrupted(guard) -> int:
    """Ctrl-C or SIGTERM: stop the other ranks; one line from the launching process; status
    128 + the signal's number (130, 143)."""
    from .run.ddp_guard import interrupt_code, interrupt_message

    if guard is not None:
        if guard.is_child:
            return interrupt_code()
        guard.stop_children()
    print(f"{PROG}: {interrupt_message()}", file=sys.stderr)
    return interrupt_code()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
