"""Copy a finished ``fit --stage all`` run into the package as the shipped weights, with their sidecar.

``python -m dvis_attn_pl.training.ship FIT_DIR`` (maintainers only): writes
``dvis_attn_pl/weights/tiny_fish_synthetic.safetensors`` (the refiner stage's weights) and
``tiny_fish_synthetic.json``: config hash, synthetic generator version and seeds, steps, time and
val AP of every stage. ``--control FIT_DIR`` installs the shuffled-clip control model instead
(``--control-init OUT`` writes its starting point).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

from ..config import config_path, load_config
from ..data.synthetic import GENERATOR_VERSION, SyntheticParams
from ..utils.io_utils import atomic_write_json
from ..weights import CONTROL_WEIGHTS, SHIPPED_CONFIG, SHIPPED_INFO, SHIPPED_WEIGHTS
from . import STAGES
from .fit import TRAIN_SPLIT, WEIGHTS_NAME


def config_hash(name: str = SHIPPED_CONFIG) -> str:
    """sha256 of the resolved config (its YAML dump)."""
    return hashlib.sha256(load_config(config_path(name)).dump().encode("utf-8")).hexdigest()


def ship(fit_dir: Path) -> dict:
    """Install ``fit_dir``'s final weights as the shipped ones; returns the sidecar."""
    stages = {s: json.loads((fit_dir / s / "stage.json").read_text()) for s in STAGES}
    final = stages[STAGES[-1]]
    info = {
        "config": SHIPPED_CONFIG,
        "config_sha256": config_hash(),
        "generator_version": GENERATOR_VERSION,
        "train_split": SyntheticParams(**TRAIN_SPLIT).as_dict(),
        "val_split": SyntheticParams().as_dict(),
        "command": f"python -m dvis_attn_pl fit --stage all --out {fit_dir.name} --seed {final['seed']}",
        "stages": {
            s: {k: v[k] for k in ("steps", "batch_size", "lr", "seed", "seconds", "steps_per_second")}
            | {"position_loss": v.get("position_loss", 0.0), "val_AP": (v.get("val") or {}).get("AP")}
            for s, v in stages.items()
        },
        "total_seconds": round(sum(v["seconds"] for v in stages.values()), 1),
        "val": final.get("val"),
    }
    shutil.copyfile(fit_dir / STAGES[-1] / WEIGHTS_NAME, SHIPPED_WEIGHTS)
    atomic_write_json(SHIPPED_INFO, info, indent=1)
    return info


def fresh_refiner_init(out: Path) -> Path:
    """The shipped weights with the refiner re-initialised as a seeded build makes it (the refiner stage's
    starting point in the shipped recipe): where the shuffled-clip control model starts."""
    from safetensors.torch import load_file, save_file

    from ..run.runner import build_weighted_model

    fresh = build_weighted_model(load_config(config_path(SHIPPED_CONFIG)), None, False).state_dict()  # seeded
    state = load_file(SHIPPED_WEIGHTS)
    state.update({k: fresh[k].clone().contiguous() for k in state if k.startswith("refiner.")})
    save_file(state, out)
    return out


def ship_control(fit_dir: Path) -> dict:
    """Install ``fit_dir``'s refiner stage, trained with ``--shuffle-frames`` from :func:`fresh_refiner_init`,
    as the control model of ``python -m dvis_attn_pl control``."""
    stage = json.loads((fit_dir / "refiner" / "stage.json").read_text())
    if not stage.get("shuffle_frames"):
        raise SystemExit(f"{fit_dir}: its refiner stage was not trained with --shuffle-frames")
    info = {
        "config": SHIPPED_CONFIG,
        "config_sha256": config_hash(),
        "what": "control model: the shipped segmenter and tracker; the refiner trained from its seeded initial "
        "weights on frame-shuffled clips, so it cannot learn the order of frames",
        "recipe": [
            "python -m dvis_attn_pl.training.ship --control-init init.safetensors",
            f"python -m dvis_attn_pl fit --stage refiner --init init.safetensors --shuffle-frames --out {fit_dir.name}",
            f"python -m dvis_attn_pl.training.ship --control {fit_dir.name}",
        ],
        "refiner_stage": {k: stage.get(k) for k in ("steps", "batch_size", "lr", "seed", "shuffle_frames", "seconds")},
        "val": stage.get("val"),
    }
    shutil.copyfile(fit_dir / "refiner" / WEIGHTS_NAME, CONTROL_WEIGHTS)
    atomic_write_json(CONTROL_WEIGHTS.with_suffix(".json"), info, indent=1)
    return info


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1] == "--control-init":
        print(fresh_refiner_init(Path(sys.argv[2])))
    elif sys.argv[1] == "--control":
        print(json.dumps(ship_control(Path(sys.argv[2])), indent=1))
    else:
        print(json.dumps(ship(Path(sys.argv[1])), indent=1))
