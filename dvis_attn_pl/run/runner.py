"""What ``test`` and ``predict`` share: resolve config, data, weights and run directory, then run Lightning."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ..data.ytvis_json import YTVISData
from ..utils.compat import disable_lightning_signal_handlers
from ..utils.errors import UserError
from ..utils.run_layout import TENSORBOARD_DIR, RunLayout
from .options import Hardware, RunOptions
from .precision import lightning_precision, set_float32_matmul
from .preflight import check_inputs, check_run_dir_creatable, first_process_of_node, load_data, select_videos

RUN_DIR_ENV = "DVIS_ATTN_PL_RUN_DIR"


def log(message: str) -> None:
    """One status line on stderr (rank 0 only under DDP)."""
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        print(f"dvis_attn_pl: {message}", file=sys.stderr, flush=True)


def run_dir_path(out: str | None, command: str) -> Path:
    """``--out`` or ``runs/<timestamp>-<command>``; identical on every DDP rank (shared via env)."""
    if out:
        path = Path(out)
    elif os.environ.get(RUN_DIR_ENV):
        path = Path(os.environ[RUN_DIR_ENV])
    else:
        path = Path("runs") / f"{time.strftime('%Y%m%d-%H%M%S')}-{command}"
    os.environ[RUN_DIR_ENV] = str(path)
    return path


def make_run_dir(path: Path) -> Path:
    """Create the run directory ``path`` and make sure files can be written in it."""
    from .resume import PROBE_FILE

    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / PROBE_FILE
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"{path}: cannot write the run directory ({exc.strerror or exc})") from None
    return path


def resolve_config(options: RunOptions):
    """The model config: ``--model-config`` (+ trailing overrides) or the embedded tiny CPU config."""
    from ..config import check_values, config_path, load_config

    if options.model_source == "detectron2":  # the user's own code via detectron2
        from ..model.detectron2_source import load_detectron2_config

        if not options.model_config:
            raise UserError("--model-source detectron2 needs --model-config (the YAML your code reads)")
        return load_detectron2_config(options.model_config, list(options.overrides)), Path(options.model_config)

    path = Path(options.model_config) if options.model_config else config_path("tiny_fish")
    if options.ckpt and not options.model_config:
        raise UserError(f"{options.ckpt}: a checkpoint needs its model config: pass --model-config")
    opts = list(options.overrides)
    cfg = load_config(path, overrides=opts)
    check_values(cfg, f"{path} (+ overrides)" if opts else path)
    return cfg, path


def resolve_data(options: RunOptions) -> tuple[Path, Path]:
    """``--data``/``--frames`` or the embedded synthetic fish-video set (generated on first use)."""
    if bool(options.data) != bool(options.frames):
        raise UserError("--data and --frames go together: pass both, or neither for the embedded dataset")
    if options.data:
        return Path(options.data), Path(options.frames)
    from ..data.synthetic import ensure_synthetic_dataset

    root = ensure_synthetic_dataset()
    return root / "valid.json", root / "JPEGImages"


def build_weighted_model(cfg, ckpt: str | None, trust: bool, config_file: Path | str = "the model config"):
    """Build the model; load ``ckpt`` strictly, or seed the random weights so every rank agrees."""
    import torch

    from ..model.build import build_model
    from ..model.checkpoint import load_state_strict, read_checkpoint

    if type(cfg).__module__.startswith("detectron2"):  # --model-source detectron2 (see resolve_config)
        from ..model.detectron2_source import build_detectron2_model

        return build_detectron2_model(None, ckpt=ckpt, trust=trust, cfg=cfg)
    stored = read_checkpoint(ckpt, trust=trust) if ckpt else None  # a broken file fails before the build
    torch.manual_seed(int(cfg.SEED) if int(cfg.SEED) >= 0 else 0)
    try:
        model = build_model(cfg)
    except (ValueError, KeyError, TypeError, AssertionError, RuntimeError) as exc:
        # the config is the build's only input: a value the checks up front did not foresee
        problem = f"{type(exc).__name__}: {exc}"
        raise UserError(f"{config_file}: the model cannot be built from this config ({problem})") from None
    if stored is not None:
        load_state_strict(model, *stored, ckpt)
    return model


def build_shipped_or_given_model(options: RunOptions, cfg, config_file):
    """:func:`build_weighted_model` for a run; when the shipped weights do not fit the model the
    overrides made (another meta-architecture, class count, ...), the error says what to pass."""
    from ..model.checkpoint import CheckpointError

    try:
        return build_weighted_model(cfg, options.ckpt, options.trust_checkpoint, config_file)
    except CheckpointError as exc:
        if options.weights != "shipped":
            raise
        raise UserError(
            f"{options.ckpt}: the shipped weights are for {config_file} as it is, and the overrides change the "
            f"model ({exc}); pass --random-weights, or --ckpt with weights for this model"
        ) from None


def weights_line(options: RunOptions, cfg) -> str:
    """The status line that says which weights the run uses."""
    source = options.weights
    if source == "shipped":
        from ..weights import shipped_info

        info = shipped_info()
        ap = (info.get("val") or {}).get("AP")
        detail = f", val AP {ap:.3f} on the synthetic val split" if isinstance(ap, float) else ""
        return f"weights: the shipped tiny_fish model trained on synthetic fish ({options.ckpt}{detail})"
    if source == "random" or not options.ckpt:
        return f"weights: random (seed {cfg.SEED}, --random-weights): the scores mean nothing"
    return f"weights: {options.ckpt}"


def quiet_lightning() -> None:
    """Drop Lightning's tips and the warnings that do not concern our users."""
    import logging
    import warnings

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    for pattern in (
        ".*overridden `transfer_batch_to_device`.*",
        ".*isinstance\\(treespec, LeafSpec\\).*",
        ".*does not have many workers.*",
        ".*when logging on epoch level in distributed setting.*",  # we log rank 0's synced metric
    ):
        warnings.filterwarnings("ignore", message=pattern)


def build_trainer(hardware: Hardware, run_dir: Path, callbacks: list, tensorboard: bool = True):
    """A Lightning Trainer for inference from the hardware flags; a combination Lightning refuses
    (no GPU for ``--accelerator gpu``, an unknown strategy, ``--devices 0``) is a one-line UserError.
    Nothing is written: the TensorBoard logger creates its folder on first use."""
    import lightning as L

    quiet_lightning()
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from lightning.pytorch.loggers import TensorBoardLogger

    set_float32_matmul(hardware.precision)
    try:
        trainer = L.Trainer(
            accelerator=hardware.accelerator,
            devices=hardware.devices if hardware.devices == "auto" else _parse_devices(hardware.devices),
            strategy=hardware.strategy,
            precision=lightning_precision(hardware.precision),
            num_nodes=hardware.num_nodes,
            use_distributed_sampler=False,
            logger=TensorBoardLogger(str(run_dir), name="", version=TENSORBOARD_DIR, default_hp_metric=False)
            if tensorboard
            else False,
            callbacks=callbacks,
            enable_checkpointing=False,
            enable_model_summary=False,
            inference_mode=True,
        )
    except (MisconfigurationException, ValueError, TypeError, RuntimeError, ImportError) as exc:
        raise UserError(f"{hardware.flags()}: {exc}") from None
    check_multi_node_launcher(trainer, hardware.num_nodes)
    # Lightning's SIGTERM handler only notes the signal (and runs a collective inside the handler,
    # which can hang a DDP job): an evaluation run keeps going. Ours (ddp_guard) stops it instead.
    disable_lightning_signal_handlers(trainer)
    return trainer


_MULTI_NODE_ENV = ("MASTER_ADDR", "NODE_RANK", "GROUP_RANK")  # a user-set or torchrun rendezvous


def check_multi_node_launcher(trainer, num_nodes: int) -> None:
    """``--num-nodes > 1`` needs a launcher on every node (torchrun, SLURM's srun, or MASTER_ADDR and
    NODE_RANK set by hand): without one, the job would wait forever for nodes that never come."""
    if num_nodes <= 1:
        return
    env = getattr(trainer.strategy, "cluster_environment", None)
    if type(env).__name__ == "LightningEnvironment" and not any(k in os.environ for k in _MULTI_NODE_ENV):
        raise UserError(
            f"--num-nodes {num_nodes}: no multi-node launcher found (torchrun, SLURM srun, or MASTER_ADDR "
            "and NODE_RANK set on every node); start the command on each node through one"
        )


def _parse_devices(value: str):
    try:
        if "," in value:
            devices = [int(v) for v in value.split(",") if v.strip()]
            if devices and min(devices) >= 0:
                return devices
        elif int(value) > 0 or int(value) == -1:
            return int(value)
    except ValueError:
        pass
    raise UserError(f"--devices {value!r}: expected a positive number, -1 (all), a list like 0,1, or auto")


def build_dataset(data_json: Path, frames_root: Path, cfg, max_videos: int | None):
    """The video set, limited to its first ``max_videos`` videos (by id) when asked."""
    from ..data.dataset import YTVISVideoDataset

    data = load_data(data_json, max_videos)
    return YTVISVideoDataset.from_data(data, frames_root, cfg), data


def ground_truth_item(dataset, index: int) -> dict:
    """What :meth:`YTVISMetric.update` needs of video ``index`` (no frame is read)."""
    v = dataset.data.videos[index]
    return {
        "video_id": v.id,
        "height": v.height,
        "width": v.width,
        "length": v.length,
        "annotations": dataset.ground_truth(index),
    }


def check_run_dir(run_dir: Path, options: RunOptions, cfg, data: YTVISData, data_json: Path, frames_root: Path):
    """``(fingerprint, resuming)``: ``run_dir`` is new, empty, or an earlier start of this same run
    (refused otherwise: a folder of the user's, or another run). Nothing is written."""
    from .resume import check_resumable, run_fingerprint

    fingerprint = run_fingerprint(options, cfg, data_json, frames_root, data.sha256)
    return fingerprint, check_resumable(run_dir, fingerprint)


def prepare_resume(run_dir: Path, info, resuming: bool, dataset, capture: bool) -> list:
    """Record the run's start (``info``: its RunInfo) in the (created) ``run_dir`` and return the
    complete video ids."""
    from .resume import completed_videos, is_launching_process, remove_temporary_files, start_run

    done = completed_videos(run_dir, dataset.video_ids, capture) if resuming else []
    if is_launching_process():
        if resuming:
            remove_temporary_files(run_dir)
        start_run(run_dir, info)
    if resuming:
        log(f"resuming {run_dir}: {len(done)} of {len(dataset)} videos already complete")
    return done


def resumed_metric_inputs(run_dir: Path, dataset, done: list) -> list[tuple[list, dict]]:
    """(stored records, ground truth) of each complete video, for the metric of the launching process."""
    from .resume import is_launching_process, read_part

    if not is_launching_process():
        return []
    done_set = set(done)
    return [
        (read_part(run_dir, vid)["records"], ground_truth_item(dataset, i))
        for i, vid in enumerate(dataset.video_ids)
        if vid in done_set
    ]


def execute(options: RunOptions) -> int:
    """Run ``test`` or ``predict`` (``options.command``) end to end; returns the exit status.

    Inputs are checked (video json, frame files, run directory, checkpoint) before the run
    directory is created, so a bad input leaves nothing behind.
    """
    command = options.command
    interventions = requested_interventions(options)
    cfg, config_file = resolve_config(options)
    data_json, frames_root = resolve_data(options)
    data = check_inputs(command, data_json, frames_root, cfg, options.max_videos, frames=first_process_of_node())
    run_dir = run_dir_path(options.out, command)
    check_run_dir_creatable(run_dir)
    fingerprint, resuming = check_run_dir(run_dir, options, cfg, data, data_json, frames_root)

    from callbacks import PredictionWriter
    from callbacks.progress import VideoProgressBar

    callbacks = [PredictionWriter(run_dir), VideoProgressBar()]
    if options.captures:
        from callbacks import build_capture_callbacks

        callbacks += build_capture_callbacks(options.capture, run_dir)
    trainer = build_trainer(options.hardware, run_dir, callbacks)  # refuses hardware flags Lightning cannot use
    model = build_shipped_or_given_model(options, cfg, config_file)

    from ..data.datamodule import YTVISDataModule, default_num_workers
    from ..data.dataset import YTVISVideoDataset
    from ..lightning_module import DVISDAQModule

    workers = options.num_workers
    if workers is None:  # on the CPU the workers would only take the model's cores
        workers = 0 if trainer.strategy.root_device.type == "cpu" else default_num_workers()
    eager = workers > 0  # worker processes decode whole videos ahead of the model; else window by window
    # every frame was checked up front (check_inputs) and is checked again as it is decoded
    dataset = YTVISVideoDataset.from_data(data, frames_root, cfg, eager=eager, check_frames=False)
    make_run_dir(run_dir)  # the first byte written
    from .resume import describe_run

    info = describe_run(options, data_json, frames_root, fingerprint)
    done = prepare_resume(run_dir, info, resuming, dataset, options.captures)
    log(weights_line(options, cfg))
    metric = _metric(command, data)
    module = DVISDAQModule(model, data.contiguous_to_dataset_id, metric=metric)
    if done:
        module.resumed_videos = resumed_metric_inputs(run_dir, dataset, done) if metric is not None else []
        dataset = YTVISVideoDataset.from_data(
            select_videos(data, [v for v in dataset.video_ids if v not in set(done)]), frames_root, cfg,
            eager=eager, check_frames=False,
        )
    log(
        f"{command}: {len(dataset)} videos on {trainer.world_size} x {trainer.strategy.root_device.type}, "
        f"precision {options.hardware.precision}, config {config_file}, run directory {run_dir}"
    )
    datamodule = YTVISDataModule(dataset=dataset, num_workers=workers)
    try:
        _run_loop(trainer, module, datamodule, command)
        if trainer.is_global_zero:
            from .summary import finish_run

            finish_run(run_dir, info, module.metric_results, data, cfg)
        if interventions:
            from ..interventions import UnalteredRun

            full = YTVISVideoDataset.from_data(data, frames_root, cfg, eager=eager, check_frames=False)
            inputs = any(i.family == "input" for i in interventions)
            unaltered = UnalteredRun(run_dir) if inputs else None  # read once for every input pass
            for intervention in interventions:
                run_intervention(options, run_dir, intervention, full, model, data, workers, unaltered)
    except OSError:  # e.g. a full disk: an events file whose header never got written is never readable
        from ..viz.tensorboard import remove_empty_event_files

        remove_empty_event_files(RunLayout(run_dir).tensorboard)
        raise
    return 0


def requested_interventions(options: RunOptions) -> list:
    """The passes ``--interventions`` asks for (checked before anything is written)."""
    if not options.interventions:
        return []
    from ..interventions import parse_interventions

    return parse_interventions(
        options.interventions,
        shuffle_k=int(options.shuffle_k),
        seed=int(options.intervention_seed),
        freeze_frame=options.freeze_frame,
    )


def run_intervention(
    options: RunOptions, run_dir: Path, intervention, dataset, model, data, workers: int, unaltered=None
) -> None:
    """One altered pass of the whole set into ``run_dir/interventions/<label>/`` (same Lightning loop,
    same devices). A pass whose ``intervention.json`` exists is complete and not run again.
    ``unaltered``: the unaltered pass's results (:class:`~dvis_attn_pl.interventions.UnalteredRun`),
    which input interventions may read."""
    from callbacks import PredictionWriter
    from callbacks.progress import VideoProgressBar

    from ..data.datamodule import YTVISDataModule
    from ..interventions import AlteredVideos, frame_order, knockout
    from ..interventions.passes import write_pass_summary
    from ..lightning_module import DVISDAQModule

    layout = RunLayout(run_dir).intervention(intervention.label)
    out = layout.root
    if layout.pass_record.is_file():
        log(f"intervention {intervention.label}: already complete in {out}")
        return
    videos = AlteredVideos(dataset, intervention, unaltered) if intervention.family == "input" else dataset
    callbacks = [PredictionWriter(out), VideoProgressBar()]
    if intervention.family == "probe":  # deletion curves: edits the records before the writer stores them
        from callbacks import DeletionCurves

        callbacks.insert(0, DeletionCurves(seed=intervention.seed))
    command = options.command
    trainer = build_trainer(options.hardware, out, callbacks, tensorboard=False)
    metric = _metric(command, data)
    module = DVISDAQModule(model, data.contiguous_to_dataset_id, metric=metric)
    log(f"intervention {intervention.label}: {len(dataset)} videos ({intervention.kind.removes})")
    datamodule = YTVISDataModule(dataset=videos, num_workers=workers)
    with knockout(model, intervention):
        _run_loop(trainer, module, datamodule, command)
    if trainer.is_global_zero:
        orders = {
            str(v.id): frame_order(intervention, int(v.length), v.id, unaltered) for v in data.videos
        }
        write_pass_summary(out, intervention, orders, module.metric_results)


def _metric(command: str, data):
    """The YTVIS metric of a ``test`` loop (None for ``predict``)."""
    if command != "test":
        return None
    from ..metrics import YTVISMetric

    return YTVISMetric(categories=[{"id": c.id, "name": c.name} for c in data.categories])


def _run_loop(trainer, module, datamodule, command: str) -> None:
    """Lightning's test or predict loop over ``datamodule``."""
    if command == "test":
        trainer.test(module, datamodule=datamodule, verbose=False)
    else:
        trainer.predict(module, datamodule=datamodule, return_predictions=False)
