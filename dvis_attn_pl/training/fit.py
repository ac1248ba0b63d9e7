"""``python -m dvis_attn_pl fit``: train DVIS-DAQ stage by stage and export official-layout weights.

Each stage writes ``<out>/<stage>/``: ``model_final.safetensors`` (every key of the official
state dict, loadable strictly by ``test --ckpt``), ``stage.json`` (steps, time, val AP),
``checkpoints/last.ckpt`` (Lightning, for ``--resume``) and TensorBoard events under
``<out>/tensorboard/<stage>``. A stage starts from the previous stage's ``model_final.safetensors``
(or ``--init``); the segmenter stage starts from seeded random weights.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..run.options import Hardware
from ..run.precision import lightning_precision, set_float32_matmul
from ..utils.errors import UserError
from ..utils.io_utils import atomic_write_bytes, atomic_write_json
from . import STAGES

# The default train split: same generator and design as the embedded (val) set, another seed.
TRAIN_SPLIT = {"num_videos": 120, "seed": 1}
WEIGHTS_NAME = "model_final.safetensors"


@dataclass(frozen=True)
class StageDefaults:
    clip_frames: int
    batch_size: int
    max_steps: int
    lr: float
    position_loss: float  # weight of the training-only position loss (``training/position.py``)


STAGE_DEFAULTS = {
    "segmenter": StageDefaults(clip_frames=1, batch_size=8, max_steps=1500, lr=3e-4, position_loss=2.0),
    "tracker": StageDefaults(clip_frames=5, batch_size=2, max_steps=500, lr=3e-4, position_loss=2.0),
    "refiner": StageDefaults(clip_frames=20, batch_size=1, max_steps=2000, lr=3e-4, position_loss=0.0),
}


@dataclass(frozen=True)
class FitOptions:
    """What ``fit`` was asked to do (built by the CLI)."""

    stage: str  # one of STAGES or "all"
    out: Path
    model_config: Path | None
    opts: tuple[str, ...]
    data: Path | None
    frames: Path | None
    val_data: Path | None
    val_frames: Path | None
    max_steps: int | None
    lr: float | None
    batch_size: int | None
    weight_decay: float
    seed: int
    init: Path | None
    resume: bool
    hardware: Hardware  # --accelerator --devices --strategy --precision --num-nodes
    shuffle_frames: bool = False  # control models: every training clip in a random frame order
    position_loss: float | None = None  # None: the stage's default; 0: the official criterion only


def _log(message: str) -> None:
    from ..run.runner import log

    log(message)


def stage_weights(out: Path, stage: str) -> Path:
    return out / stage / WEIGHTS_NAME


def _resolve_sets(opt: FitOptions) -> tuple[Path, Path, Path, Path]:
    """(train json, train frames, val json, val frames); the synthetic splits by default."""
    from ..data.synthetic import ensure_synthetic_dataset

    if bool(opt.data) != bool(opt.frames):
        raise UserError("--data and --frames go together: pass both, or neither for the synthetic train split")
    if bool(opt.val_data) != bool(opt.val_frames):
        raise UserError("--val-data and --val-frames go together")
    if opt.data:
        train = (opt.data, opt.frames)
    else:
        root = ensure_synthetic_dataset(**TRAIN_SPLIT)
        train = (root / "valid.json", root / "JPEGImages")
    if opt.val_data:
        val = (opt.val_data, opt.val_frames)
    else:
        root = ensure_synthetic_dataset()
        val = (root / "valid.json", root / "JPEGImages")
    return train[0], train[1], val[0], val[1]


def _load_cfg(opt: FitOptions, stage: str):
    from ..config import config_path, load_config

    path = opt.model_config or config_path("tiny_fish")
    extra = ["MODEL.RESNETS.NORM", "BN"] if stage == "segmenter" else []  # trainable BatchNorm statistics
    return load_config(path, overrides=list(opt.opts) + extra), path


def _check_data(cfg, json_path: Path, role: str):
    from ..data.ytvis_json import load_ytvis_json

    data = load_ytvis_json(json_path)
    if role == "train" and (not data.has_annotations or not data.annotations):
        raise UserError(f"{json_path}: has no annotations; fit needs labelled videos")
    k = int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES)
    if len(data.categories) != k:
        raise UserError(
            f"{json_path}: has {len(data.categories)} categories but MODEL.SEM_SEG_HEAD.NUM_CLASSES is {k}"
        )
    return data


def _init_path(opt: FitOptions, stage: str, first: bool) -> Path | None:
    """The weights a stage starts from (None: seeded random weights)."""
    if opt.init is not None and first:
        return opt.init
    index = STAGES.index(stage)
    if index == 0:
        return None
    previous = stage_weights(opt.out, STAGES[index - 1])
    if not previous.is_file():
        raise UserError(
            f"{previous}: the {STAGES[index - 1]} stage's weights are missing; run "
            f"'fit --stage {STAGES[index - 1]} --out {opt.out}' first or pass --init"
        )
    return previous


def frozen_bn_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict in the official layout: BatchNorm's counters dropped (its weight, bias
    and running statistics are exactly FrozenBatchNorm2d's keys), every tensor contiguous float."""
    return {
        k: v.detach().contiguous().cpu()
        for k, v in model.state_dict().items()
        if not k.endswith("num_batches_tracked")
    }


def export_weights(model: torch.nn.Module, path: Path) -> None:
    """Write ``model``'s weights to ``path`` (safetensors, official keys), atomically."""
    from safetensors.torch import save

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, save(frozen_bn_state(model), metadata={"format": "pt"}))


def fit_stage(opt: FitOptions, stage: str, first: bool) -> dict:
    """Train one stage; returns its summary (also written to ``<out>/<stage>/stage.json``)."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from ..data.dataset import YTVISVideoDataset
    from ..metrics import YTVISMetric
    from ..model.build import build_model
    from ..model.checkpoint import load_state_strict, read_checkpoint
    from ..run.runner import _parse_devices, quiet_lightning
    from .data import ClipSamples, load_training_videos
    from .module import FitData, FitModule, LossProgressBar

    defaults = STAGE_DEFAULTS[stage]
    max_steps = opt.max_steps or defaults.max_steps
    batch_size = opt.batch_size or defaults.batch_size
    lr = opt.lr or defaults.lr
    position_weight = defaults.position_loss if opt.position_loss is None else opt.position_loss
    if position_weight < 0:
        raise UserError(f"--position-loss must be >= 0, got {position_weight}")
    if stage == "refiner":
        position_weight = 0.0  # the refiner's inputs are fixed by then; nothing to ask of it
    cfg, config_file = _load_cfg(opt, stage)
    train_json, train_frames, val_json, val_frames = _resolve_sets(opt)
    train_data = _check_data(cfg, train_json, "train")
    val_data = _check_data(cfg, val_json, "val")
    init = _init_path(opt, stage, first)
    stored = read_checkpoint(init) if init is not None else None
    torch.manual_seed(opt.seed)
    model = build_model(cfg)
    if stored is not None:
        load_state_strict(model, *stored, init)

    stage_dir = opt.out / stage
    stage_dir.mkdir(parents=True, exist_ok=True)
    _log(f"fit {stage}: loading {train_json} for training")
    videos = load_training_videos(train_data, train_frames, cfg)
    val_set = YTVISVideoDataset.from_data(val_data, val_frames, cfg)
    metric = YTVISMetric(categories=[{"id": c.id, "name": c.name} for c in val_data.categories])
    module = FitModule(
        model,
        stage,
        lr=lr,
        weight_decay=opt.weight_decay,
        max_steps=max_steps,
        contiguous_to_dataset_id=val_data.contiguous_to_dataset_id,
        metric=metric,
        position_weight=position_weight,
        segmenter_cache=_segmenter_cache(stage, videos, model, defaults.clip_frames),
    )
    quiet_lightning()
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode.*")  # eval mode on purpose
    ckpt_dir = stage_dir / "checkpoints"
    devices = opt.hardware.devices if opt.hardware.devices == "auto" else _parse_devices(opt.hardware.devices)
    set_float32_matmul(opt.hardware.precision)
    trainer = L.Trainer(
        accelerator=opt.hardware.accelerator,
        devices=devices,
        strategy=_strategy(opt.hardware.strategy, devices),
        precision=lightning_precision(opt.hardware.precision),
        num_nodes=opt.hardware.num_nodes,
        max_steps=max_steps,
        max_epochs=-1,  # max_steps ends the stage (a resumed stage may start a new pass over the samples)
        num_sanity_val_steps=0,
        gradient_clip_val=0.01,  # the official full-model gradient clipping
        log_every_n_steps=min(10, max_steps),
        logger=TensorBoardLogger(str(opt.out), name="tensorboard", version=stage, default_hp_metric=False),
        callbacks=[
            ModelCheckpoint(dirpath=ckpt_dir, save_last=True, every_n_train_steps=100, save_top_k=0),
            LossProgressBar(),
        ],
        enable_model_summary=False,
    )
    # one epoch of exactly max_steps steps on every rank (each rank draws its own share)
    samples = ClipSamples(
        videos, max_steps * batch_size * trainer.world_size, defaults.clip_frames, 1, opt.seed,
        shuffle_frames=opt.shuffle_frames,
    )
    resume_from = ckpt_dir / "last.ckpt"
    ckpt_path = str(resume_from) if opt.resume and resume_from.is_file() else None
    if opt.resume and ckpt_path is None:
        _log(f"fit {stage}: no {resume_from} to resume from; starting the stage from its beginning")
    _log(
        f"fit {stage}: {len(videos)} training videos, {max_steps} steps of batch {batch_size}, lr {lr}, "
        f"position loss {position_weight}, "
        f"on {trainer.world_size} x {trainer.strategy.root_device.type}; config {config_file}"
    )
    started = time.time()
    data = FitData(samples, val_set, batch_size)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    if module.val_results is None:  # a resumed stage can end mid-pass, before the epoch-end validation
        trainer.validate(module, datamodule=data, verbose=False)
    seconds = time.time() - started
    if module.segmenter_cache is not None:
        module.segmenter_cache.clear()  # its rows (GBs) must not outlive the stage
    summary = {
        "stage": stage,
        "steps": int(trainer.global_step),
        "batch_size": batch_size,
        "lr": lr,
        "seed": opt.seed,
        "shuffle_frames": opt.shuffle_frames,
        "position_loss": position_weight,
        "seconds": round(seconds, 1),
        "steps_per_second": round(trainer.global_step / max(seconds, 1e-9), 3),
        "init": str(init) if init else None,
        "train_json": str(train_json),
        "val_json": str(val_json),
        "val": _jsonable(module.val_results),
    }
    if trainer.is_global_zero:
        export_weights(model, stage_weights(opt.out, stage))
        atomic_write_json(stage_dir / "stage.json", summary, indent=1)
        ap = summary["val"].get("AP") if summary["val"] else None
        _log(f"fit {stage}: {summary['steps']} steps in {seconds:.0f} s, val AP {ap}; weights {stage_weights(opt.out, stage)}")
    return summary


def _segmenter_cache(stage: str, videos, model, clip_frames: int):
    """The frozen segmenter's outputs for the tracker and refiner stages, batched as each stage
    batches them (the tracker: a whole clip; the refiner: the model's inference windows)."""
    from .segmenter_cache import SegmenterCache

    if stage == "segmenter":
        return None
    return SegmenterCache(videos, chunk=clip_frames if stage == "tracker" else model.window_size)


def _strategy(name: str, devices) -> str:
    """DDP with unused-parameter detection: a stage's loss leaves some heads unused (e.g. the
    segmenter's re-id embedding), which plain DDP refuses."""
    several = (isinstance(devices, int) and devices > 1) or (isinstance(devices, list) and len(devices) > 1)
    if name == "ddp" or (name == "auto" and several):
        return "ddp_find_unused_parameters_true"
    return name


def _jsonable(results: dict | None) -> dict | None:
    if results is None:
        return None
    return json.loads(json.dumps(results, default=float))


def run_fit(opt: FitOptions) -> int:
    """Run the requested stage, or every stage in order with ``--stage all``."""
    stages = STAGES if opt.stage == "all" else (opt.stage,)
    for i, stage in enumerate(stages):
        fit_stage(opt, stage, first=i == 0)
    return 0
