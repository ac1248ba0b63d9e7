"""DeletionCurves: how much each prediction's class probability depends on its most important frames.

For the best-scored predictions of each video (offline model), the refiner is run again on subsets
of the video's frames (batched: one refiner call per removed fraction, one for every leave-one-out
variant) with frames removed

* most important first (the prediction's frame importance: the refiner's temporal pooling weights),
* least important first,
* in ``n_random`` seeded random orders (their mean curve),

and the class probability of the prediction's class is read after each step. Frames are removed
from the refiner's input only: the segmenter and tracker still saw the whole video. Each
prediction's temporal record gets ``deletion``: the fractions, the three curves, and per frame the
drop of the class probability when that frame alone is removed (``loo_effect``).
"""

from __future__ import annotations

import hashlib

import torch
from lightning.pytorch.callbacks import Callback

from dvis_attn_pl.model.meta_arch_offline import OfflineInferenceTrace
from dvis_attn_pl.utils.temporal_record import CATEGORY_ID, DELETION, FRAME_IMPORTANCE, REFINER_ID

__all__ = ["DeletionCurves", "DELETION_FRACTIONS"]

DELETION_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class DeletionCurves(Callback):
    """Adds ``deletion`` to the temporal records of the top ``top_k`` predictions of every video.

    Must come before the :class:`~callbacks.PredictionWriter` in the callback list (it edits the
    records the writer stores).
    """

    def __init__(self, top_k: int = 5, n_random: int = 4, seed: int = 0, fractions=DELETION_FRACTIONS) -> None:
        self.top_k, self.n_random, self.seed, self.fractions = top_k, n_random, seed, tuple(fractions)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if not hasattr(pl_module.model, "keep_refiner_inputs"):
            from dvis_attn_pl.utils.errors import UserError

            raise UserError("deletion curves need the offline model's refiner (an online config has none)")
        pl_module.model.keep_refiner_inputs = True

    def teardown(self, trainer, pl_module, stage: str) -> None:
        pl_module.model.keep_refiner_inputs = False

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(pl_module, outputs)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add(pl_module, outputs)

    def _add(self, pl_module, result) -> None:
        info = None if result is None else result.info
        if not isinstance(info, OfflineInferenceTrace) or info.refiner_inputs is None:
            return
        inputs = info.refiner_inputs
        info.refiner_inputs = None  # the embeddings are not kept past this video
        frames = inputs.frame_embeds.shape[0]
        picked = self._predictions(result.temporal)
        if frames < 2 or not picked:
            return
        refiner = pl_module.model.refiner
        rows = torch.tensor([e[REFINER_ID] for e in picked])
        classes = torch.tensor([pl_module.contiguous_to_dataset_id.index(e[CATEGORY_ID]) for e in picked])
        importance = torch.tensor([e[FRAME_IMPORTANCE] for e in picked], dtype=torch.float64)  # (P, T)
        orders = self._orders(importance, result.video_id)  # (P, 2 + n_random, T)
        curves = torch.empty(orders.shape[:2] + (len(self.fractions),), dtype=torch.float64)
        for j, fraction in enumerate(self.fractions):
            removed = min(frames - 1, round(fraction * frames))
            kept = orders[..., removed:].sort(dim=-1).values  # (P, V, T - removed)
            logits = inputs.run(refiner, kept.flatten(0, 1))  # (P*V, N, K+1)
            per_variant = logits.view(*orders.shape[:2], *logits.shape[1:])
            curves[..., j] = self._class_prob(per_variant, rows, classes)
        loo = torch.stack([torch.cat([torch.arange(t), torch.arange(t + 1, frames)]) for t in range(frames)])
        logits = inputs.run(refiner, loo)  # (T, N, K+1)
        probs = logits.float().softmax(-1)[:, rows, classes].double().T  # (P, T)
        full = curves[:, 0, 0]  # fraction 0: every frame
        for i, entry in enumerate(picked):
            entry[DELETION] = {
                "fractions": list(self.fractions),
                "importance_first": _rounded(curves[i, 0]),
                "least_first": _rounded(curves[i, 1]),
                "random_mean": _rounded(curves[i, 2:].mean(dim=0)),
                "loo_effect": _rounded(full[i] - probs[i]),
            }

    def _predictions(self, temporal: list[dict]) -> list[dict]:
        """The best-scored record of each of the top ``top_k`` refiner rows that carry frame importance."""
        seen, out = set(), []
        for entry in sorted(temporal, key=lambda e: -float(e.get("score", 0.0))):
            row = entry.get(REFINER_ID)
            if row is None or row in seen or not entry.get(FRAME_IMPORTANCE):
                continue
            seen.add(row)
            out.append(entry)
            if len(out) == self.top_k:
                break
        return out

    def _orders(self, importance: torch.Tensor, video_id) -> torch.Tensor:
        """(P, 2 + n_random, T) removal orders: most important first, least important first, random."""
        most = importance.argsort(dim=1, descending=True, stable=True)
        least = importance.argsort(dim=1, stable=True)
        digest = hashlib.sha256(f"{self.seed}:{video_id}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        p, t = importance.shape
        rand = torch.rand((p, self.n_random, t), generator=gen).argsort(dim=-1)
        return torch.cat([most[:, None], least[:, None], rand], dim=1)

    @staticmethod
    def _class_prob(logits: torch.Tensor, rows: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(P, V) probability of prediction p's class at its row, from logits (P, V, N, K+1)."""
        probs = logits.float().softmax(-1)  # background kept in the softmax, as the model's scores
        p = torch.arange(len(rows))
        return probs[p, :, rows[p], classes[p]].double()


def _rounded(values: torch.Tensor) -> list[float]:
    return [round(float(v), 6) for v in values]
