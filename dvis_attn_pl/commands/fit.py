"""``python -m dvis_attn_pl fit``: stage-wise training of DVIS-DAQ."""

from __future__ import annotations

import argparse
from pathlib import Path


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


def run_fit(args: argparse.Namespace) -> int:
    """Build the fit options from the parsed arguments and train; returns the exit status."""
    from ..cli import hardware_options
    from ..training.fit import FitOptions
    from ..training.fit import run_fit as fit

    return fit(
        FitOptions(
            stage=args.stage,
            out=Path(args.out),
            model_config=_path(args.model_config),
            opts=tuple(args.opts or ()),
            data=_path(args.data),
            frames=_path(args.frames),
            val_data=_path(args.val_data),
            val_frames=_path(args.val_frames),
            max_steps=args.max_steps,
            lr=args.lr,
            batch_size=args.batch_size,
            weight_decay=args.weight_decay,
            seed=args.seed,
            init=_path(args.init),
            resume=args.resume,
            hardware=hardware_options(args),
            shuffle_frames=args.shuffle_frames,
            position_loss=args.position_loss,
        )
    )
