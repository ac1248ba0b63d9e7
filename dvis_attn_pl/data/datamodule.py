"""``YTVISDataModule``: the test / predict DataLoaders, one video per batch.

A batch is ``[item]`` (the official ``batched_inputs`` list of one video dict, see
:mod:`dvis_attn_pl.data.dataset`). Under DDP every rank gets its own
:class:`~dvis_attn_pl.data.sampler.VideoDistributedSampler` (world size and rank read from the
attached Trainer when the loader is built), so each video is evaluated exactly once.

Build the Trainer with ``use_distributed_sampler=False``: Lightning must not replace the sampler
(it would pad with duplicate videos). The sampler subclasses ``DistributedSampler`` as a second
guard, which Lightning leaves untouched, but the flag states the intent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from .dataset import YTVISVideoDataset
from .sampler import VideoDistributedSampler

__all__ = ["PLACEHOLDER", "YTVISDataModule", "collate_videos", "default_num_workers", "is_placeholder"]

PREFETCH_VIDEOS = 2  # videos each worker decodes ahead
MAX_DEFAULT_WORKERS = 4


def default_num_workers() -> int:
    """DataLoader workers when not asked: half the CPU cores (the model's threads keep the other
    half), at most :data:`MAX_DEFAULT_WORKERS`; 0 on a single core."""
    return min(MAX_DEFAULT_WORKERS, (os.cpu_count() or 1) // 2)

# The one item of a rank that has no video (fewer videos than processes, or a resumed run whose
# videos are all complete). Lightning skips every hook of an empty loop, so that rank would miss
# the collective operations (metric sync, barriers) of the others and the job would hang; with one
# placeholder step it takes part in them. The step returns None and writes nothing.
PLACEHOLDER: dict[str, Any] = {"placeholder": True, "video_id": None, "image": []}


def is_placeholder(item: dict[str, Any]) -> bool:
    """True for :data:`PLACEHOLDER` (a step with no video)."""
    return bool(item.get("placeholder"))


def collate_videos(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The official batch format: the list of video dicts, untouched (batch size 1 in practice)."""
    return list(batch)


class YTVISDataModule(L.LightningDataModule):
    """Test/predict data for a YTVIS-format json and frame folder.

    Args:
        json_path, frames_root, cfg: as :class:`YTVISVideoDataset` (ignored when ``dataset`` is given).
        num_workers: DataLoader worker processes (0: load in the main process).
        balance: ``"count"`` or ``"frames"`` (see :mod:`dvis_attn_pl.data.sampler`).
        eager: decode all frames of a video in the loader (worker) instead of lazily in the step.
        check_frames: check every frame's header when an item is built.
        dataset: an already built dataset (e.g. :meth:`YTVISVideoDataset.from_arrays`).
    """

    def __init__(
        self,
        json_path: str | Path | None = None,
        frames_root: str | Path | None = None,
        cfg: Any = None,
        *,
        num_workers: int = 0,
        balance: str = "count",
        eager: bool = False,
        check_frames: bool = True,
        dataset: YTVISVideoDataset | None = None,
    ) -> None:
        super().__init__()
        if dataset is None and (json_path is None or frames_root is None):
            raise ValueError("YTVISDataModule needs json_path and frames_root, or a dataset")
        if balance not in ("count", "frames"):
            raise ValueError(f"balance must be 'count' or 'frames', got {balance!r}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        self.json_path = json_path
        self.frames_root = frames_root
        self.cfg = cfg
        self.num_workers = int(num_workers)
        self.balance = balance
        self.eager = eager
        self.check_frames = check_frames
        self.dataset = dataset

    def setup(self, stage: str | None = None) -> None:
        """Read and validate the json (once)."""
        if self.dataset is None:
            self.dataset = YTVISVideoDataset(
                self.json_path, self.frames_root, self.cfg, eager=self.eager, check_frames=self.check_frames
            )

    @property
    def metadata(self) -> dict[str, Any]:
        self.setup()
        return self.dataset.metadata

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def sampler(self) -> VideoDistributedSampler:
        """This rank's sampler (world size / rank from the attached Trainer, else 1 / 0)."""
        self.setup()
        world, rank = self._world()
        lengths = self.dataset.video_lengths if self.balance == "frames" else None
        return VideoDistributedSampler(len(self.dataset), world, rank, balance=self.balance, lengths=lengths)

    def _loader(self) -> DataLoader:
        self.setup()
        sampler = self.sampler()
        if len(sampler) == 0:
            return DataLoader([PLACEHOLDER], batch_size=1, collate_fn=collate_videos)
        return DataLoader(
            self.dataset,
            batch_size=1,
            shuffle=False,
            sampler=sampler,
            collate_fn=collate_videos,
            num_workers=self.num_workers,
            prefetch_factor=PREFETCH_VIDEOS if self.num_workers else None,
            pin_memory=False,
        )

    def test_dataloader(self) -> DataLoader:
        return self._loader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader()
