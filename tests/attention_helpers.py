"""Shared pieces of the attention capture/store/rollout tests: the tiny model, synthetic videos,
a Trainer run, and readers of the run directory."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from safetensors import safe_open
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from dvis_attn_pl.config import config_path, load_config
from dvis_attn_pl.lightning_module import DVISDAQModule
from dvis_attn_pl.model.build import build_model


def tiny_model():
    """The tiny offline config with seeded random weights: (cfg, model)."""
    cfg = load_config(config_path("tiny_cpu"))
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def synthetic_videos(count: int, frames=(7, 5, 9), sizes=((64, 96), (96, 64)), seed: int = 0) -> list[dict]:
    """Official input dicts with random uint8 frames; lengths and sizes cycle through the given ones."""
    gen = torch.Generator().manual_seed(seed)
    videos = []
    for i in range(count):
        t = frames[i % len(frames)]
        h, w = sizes[i % len(sizes)]
        images = [torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen) for _ in range(t)]
        videos.append({"image": images, "height": h, "width": w, "video_id": i, "length": t})
    return videos


class Collect(Callback):
    """Keeps each step's VideoResult (host data only) by video id; with ``keep=False`` only counts."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.results: dict = {}
        self.count = 0

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self.count += 1
        if self.keep:
            self.results[outputs.video_id] = outputs


def run_test(cfg, model, videos: list[dict], callbacks: list, keep: bool = True) -> Collect:
    """``trainer.test`` over ``videos`` (one per step) with ``callbacks`` plus a :class:`Collect`."""
    collect = Collect(keep)
    module = DVISDAQModule(model, list(range(1, int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES) + 1)))
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
        callbacks=[*callbacks, collect],
    )
    trainer.test(module, DataLoader(videos, batch_size=1, collate_fn=lambda b: b), verbose=False)
    return collect


def load_manifest(run_dir: Path) -> dict:
    return json.loads((Path(run_dir) / "attention_maps" / "manifest.json").read_text())


def artifact(run_dir: Path, relpath: str) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run_dir) / "attention_maps" / relpath))


def artifact_meta(run_dir: Path, relpath: str) -> dict:
    """The file's own header: {"format", "video_id", "meta"}."""
    with safe_open(str(Path(run_dir) / "attention_maps" / relpath), framework="pt") as f:
        return json.loads(f.metadata()["dvis_attn_pl"])


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def same_outputs(a: dict, b: dict) -> bool:
    """Official output dicts equal exactly (scores, labels, ids, masks)."""
    if (
        a["pred_scores"] != b["pred_scores"]
        or a["pred_labels"] != b["pred_labels"]
        or a["pred_ids"] != b["pred_ids"]
    ):
        return False
    return all(torch.equal(x, y) for x, y in zip(a["pred_masks"], b["pred_masks"]))
