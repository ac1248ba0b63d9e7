"""Copy a finished ``fit --stage all`` run into the package as the shipped weights, with their sidecar.

``python -m dvis_attn_pl.training.ship FIT_DIR`` (maintainers only): writes
``dvis_attn_pl/weights/tiny_fish_synthetic.safetensors`` (the refiner stage's weights) and
``tiny_fish_synthetic.json``: config hash, synthetic generator version and seeds, steps, time and
val AP of every stage.
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
from ..weights import SHIPPED_CONFIG, SHIPPED_INFO, SHIPPED_WEIGHTS
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
            | {"val_AP": (v.get("val") or {}).get("AP")}
            for s, v in stages.items()
        },
        "total_seconds": round(sum(v["seconds"] for v in stages.values()), 1),
        "val": final.get("val"),
    }
    shutil.copyfile(fit_dir / STAGES[-1] / WEIGHTS_NAME, SHIPPED_WEIGHTS)
    atomic_write_json(SHIPPED_INFO, info, indent=1)
    return info


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(ship(Path(sys.argv[1])), indent=1))
