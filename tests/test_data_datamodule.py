"""YTVISDataModule: one video per batch in the official list-of-one-dict format, per-rank samplers."""

from __future__ import annotations

import json
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from dvis_attn_pl.data.datamodule import YTVISDataModule
from dvis_attn_pl.data.dataset import YTVISVideoDataset
from dvis_attn_pl.data.frames import LazyFrames
from dvis_attn_pl.data.sampler import VideoDistributedSampler

CFG = {"INPUT": {"MIN_SIZE_TEST": 16, "MAX_SIZE_TEST": 1333}}


def _dataset(lengths=(3, 5, 2, 4, 1)):
    rng = np.random.default_rng(0)
    videos = [
        {"video_id": 10 + i, "frames": rng.integers(0, 256, size=(t, 12, 18, 3), dtype=np.uint8)}
        for i, t in enumerate(lengths)
    ]
    return YTVISVideoDataset.from_arrays(videos, CFG)


def test_loader_yields_list_of_one_video_dict():
    dm = YTVISDataModule(dataset=_dataset())
    batches = list(dm.test_dataloader())
    assert len(batches) == 5
    for batch, vid, length in zip(batches, [10, 11, 12, 13, 14], [3, 5, 2, 4, 1]):
        assert isinstance(batch, list) and len(batch) == 1
        item = batch[0]
        assert item["video_id"] == vid and item["length"] == length
        assert isinstance(item["image"], LazyFrames) and item["image"].decode_count == 0
        assert torch.stack(list(item["image"][:2])).shape == (min(2, length), 3, 16, 24)
    assert isinstance(dm.test_dataloader().sampler, VideoDistributedSampler)


def test_sampler_follows_the_trainer_rank():
    dm = YTVISDataModule(dataset=_dataset())
    dm.trainer = SimpleNamespace(world_size=3, global_rank=1)
    assert [b[0]["video_id"] for b in dm.predict_dataloader()] == [11, 14]
    dm = YTVISDataModule(dataset=_dataset(), balance="frames")
    dm.trainer = SimpleNamespace(world_size=2, global_rank=0)
    ids = [b[0]["video_id"] for b in dm.test_dataloader()]
    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)
    other = [b[0]["video_id"] for b in dm.test_dataloader()]
    assert sorted(ids + other) == [10, 11, 12, 13, 14] and not set(ids) & set(other)


def test_worker_processes_pass_lazy_items():
    dm = YTVISDataModule(dataset=_dataset((2, 3)), num_workers=1)
    batches = list(dm.test_dataloader())
    assert [b[0]["video_id"] for b in batches] == [10, 11]
    assert batches[1][0]["image"].stack().shape == (3, 3, 16, 24)


class _Probe(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.seen = []

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch

    def test_step(self, batch, batch_idx):
        assert isinstance(batch, list) and len(batch) == 1
        self.seen.append((batch[0]["video_id"], int(torch.stack(list(batch[0]["image"])).shape[0])))

    def predict_step(self, batch, batch_idx):
        return batch[0]["video_id"], len(batch[0]["image"])


def test_with_a_lightning_trainer(tmp_path):
    frames_root = tmp_path / "frames"
    (frames_root / "a").mkdir(parents=True)
    names = []
    for t in range(3):
        Image.fromarray(np.full((10, 14, 3), 40 * t, np.uint8)).save(frames_root / f"a/{t}.png")
        names.append(f"a/{t}.png")
    gt = tmp_path / "valid.json"
    gt.write_text(
        json.dumps(
            {
                "videos": [{"id": 4, "height": 10, "width": 14, "length": 3, "file_names": names}],
                "categories": [{"id": 1, "name": "fish"}],
            }
        )
    )
    dm = YTVISDataModule(gt, frames_root, CFG)
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        use_distributed_sampler=False,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    probe = _Probe()
    trainer.test(probe, datamodule=dm, verbose=False)
    assert probe.seen == [(4, 3)]
    assert trainer.predict(probe, datamodule=dm) == [(4, 3)]
    assert dm.metadata["contiguous_to_dataset_id"] == [1]


def test_needs_data():
    with pytest.raises(ValueError, match="json_path and frames_root"):
        YTVISDataModule()
