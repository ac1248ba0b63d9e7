"""``FitModule``: one training stage of DVIS-DAQ under Lightning, with the val AP at the stage's end."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import lightning as L
import torch
from lightning.pytorch.callbacks import TQDMProgressBar
from torch import nn
from torch.utils.data import DataLoader

from ..data.datamodule import YTVISDataModule, is_placeholder
from ..results import to_ytvis_records
from .data import ClipSamples, collate_clips
from .losses import LossWeights, weighted_total
from .position import PositionHead
from .segmenter_cache import SegmenterCache
from .stages import STAGE_LOSSES

# The children each stage trains; everything else is frozen.
TRAINED_CHILDREN = {"segmenter": ("backbone", "sem_seg_head"), "tracker": ("tracker",), "refiner": ("refiner",)}


def trainable_parameters(model: nn.Module, stage: str) -> list[nn.Parameter]:
    """Freeze every parameter except those of ``stage``'s children; returns the trainable ones."""
    keep = TRAINED_CHILDREN[stage]
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.split(".", 1)[0] in keep)
        if p.requires_grad:
            params.append(p)
    return params


def lr_factor(step: int, max_steps: int, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then x0.1 for the last 15 % of the steps."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.1 if step >= int(0.85 * max_steps) else 1.0


class FitModule(L.LightningModule):
    """Trains one stage (``segmenter``, ``tracker`` or ``refiner``) of a DVIS-DAQ model."""

    def __init__(
        self,
        model: nn.Module,
        stage: str,
        *,
        lr: float,
        weight_decay: float,
        max_steps: int,
        contiguous_to_dataset_id: Sequence[int],
        metric: nn.Module | None = None,
        warmup: int = 50,
        position_weight: float = 0.0,
        segmenter_cache: SegmenterCache | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.stage = stage
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_steps = max_steps
        self.warmup = max(1, min(warmup, max_steps // 10))
        self.weights = dataclasses.replace(LossWeights.from_cfg(model.cfg), position=position_weight)
        self.contiguous_to_dataset_id = list(contiguous_to_dataset_id)
        self.metric = metric
        self.val_results: dict | None = None
        self.params = trainable_parameters(model, stage)
        self.segmenter_cache = segmenter_cache  # the frozen segmenter's outputs (tracker, refiner stages)
        # training-only: not part of ``self.model``, so the exported weights keep the official keys
        self.position_head = None
        if position_weight > 0 and stage != "refiner":
            self.position_head = PositionHead(int(model.cfg.MODEL.MASK_FORMER.HIDDEN_DIM))
            self.params += list(self.position_head.parameters())

    def transfer_batch_to_device(self, batch, device, dataloader_idx: int):
        """Clips and videos stay on the host; the stages move what they run."""
        return batch

    def _set_modes(self) -> None:
        # Dropout is 0 everywhere in DVIS-DAQ, so eval mode changes nothing but BatchNorm: the
        # segmenter stage trains the backbone's BatchNorm statistics, later stages keep them frozen.
        self.model.eval()
        if self.stage == "segmenter":
            self.model.backbone.train()

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._set_modes()

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        losses = STAGE_LOSSES[self.stage](
            self.model, batch, self.weights, self.position_head, self.segmenter_cache
        )
        total = weighted_total(losses, self.weights)
        self.log_dict({f"train_{self.stage}/{k}": v.detach() for k, v in losses.items()}, on_step=True)
        self.log(f"train_{self.stage}/loss", total.detach(), on_step=True, prog_bar=False)
        self.log("loss", total.detach(), on_step=True, prog_bar=True, logger=False)
        return total

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.params, lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, self.max_steps, self.warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: list[dict], batch_idx: int) -> None:
        (video,) = batch
        if is_placeholder(video) or self.metric is None or not len(video["image"]):
            return
        with torch.no_grad():
            outputs = self.model([video])
        self.metric.update(to_ytvis_records(outputs, video["video_id"], self.contiguous_to_dataset_id), video)

    def on_validation_epoch_end(self) -> None:
        if self.metric is None:
            return
        results = self.metric.compute()
        self.metric.reset()
        self.val_results = results
        scalars = {f"val_{self.stage}/{k}": float(v) for k, v in results.items() if not isinstance(v, dict)}
        for name, ap in (results.get("per_category") or {}).items():
            scalars[f"val_{self.stage}/AP_{name}"] = float(ap)
        self.log_dict(scalars, sync_dist=False, rank_zero_only=True)


class FitData(YTVISDataModule):
    """Training samples (:class:`ClipSamples`) plus the val videos of :class:`YTVISDataModule`."""

    def __init__(self, samples: ClipSamples, val_dataset, batch_size: int) -> None:
        super().__init__(dataset=val_dataset)
        self.samples = samples
        self.batch_size = batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.samples, batch_size=self.batch_size, shuffle=False, collate_fn=collate_clips)

    def val_dataloader(self) -> DataLoader:
        return self._loader()


class LossProgressBar(TQDMProgressBar):
    """Lightning's progress bar showing the step's loss (without the logger's version number)."""

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
