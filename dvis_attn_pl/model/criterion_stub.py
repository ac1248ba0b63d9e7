"""``daq_criterion``: the training criterion's only state, so official checkpoints load strictly.

The official model keeps its loss module as a child; its one persistent buffer, ``empty_weight``
(K+1 ones, the last entry = ``MODEL.MASK_FORMER.NO_OBJECT_WEIGHT``), is in every checkpoint.
Inference never uses it.
"""

from __future__ import annotations

import torch
from torch import nn


class CriterionStub(nn.Module):
    """Holds ``empty_weight`` (K+1,) and nothing else."""

    def __init__(self, num_classes: int, no_object_weight: float) -> None:
        super().__init__()
        weight = torch.ones(num_classes + 1)
        weight[-1] = no_object_weight
        self.register_buffer("empty_weight", weight)

    @classmethod
    def from_cfg(cls, cfg) -> CriterionStub:
        return cls(int(cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES), float(cfg.MODEL.MASK_FORMER.NO_OBJECT_WEIGHT))

    def forward(self, *args, **kwargs):
        raise RuntimeError("daq_criterion is a stub holding checkpoint state; training is not supported")
