"""DeletionCurves: how much each prediction's class probability depends on its most important frames.

For the best-scored predictions of each video (offline model), the refiner is run again on subsets
of the video's frames (batched: one refiner call per removed fraction, each distinct frame set of
that fraction once, and one for every leave-one-out variant) with frames removed

* most important first and least important first, for each frame importance:
  the refiner's temporal pooling weights (the record's ``frame_importance``) and the rollout readouts
  of :data:`ROLLOUT_READOUTS`,
* in ``n_random`` seeded random orders (their mean curve, shared by every importance),

and the class probability of the prediction's class is read after each step. Frames are removed
from the refiner's input only: the segmenter and tracker still saw the whole video. Each
prediction's temporal record gets ``deletion``: the fractions, the curves of the pooling-weight
ordering, the random mean, per frame the drop of the class probability when that frame alone is
removed (``loo_effect``), and under ``rollout`` per readout its importance and its two curves.

The rollout importance comes from one extra refiner run on every frame with its ``refiner_time``
capture sites switched on (the model's own capture mechanism, so no ``AttentionCapture`` callback is
needed and whatever request a site had is restored after). The rollout uses the shipped defaults of
:class:`~callbacks.TemporalRollout` (:data:`ROLLOUT_OPTIONS`: ``rownorm(A + I)``, heads averaged, no
discard, every layer, frames where the instance is absent masked out), from the float32 attention
(``TemporalRollout`` rounds it to the stored dtype first, so the two agree up to that rounding).
``column_mean`` (how much every present frame draws on a frame; the seed tool's readout) is the main
ordering; ``activation`` (``a^T R``, the pooling weights carried through the rollout) costs one more
pair of orders per prediction and no refiner run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch
from lightning.pytorch.callbacks import Callback

from dvis_attn_pl.analysis.rollout import rollout_readout, temporal_rollout
from dvis_attn_pl.model.capture import CaptureSite, enable_capture, select_sites
from dvis_attn_pl.model.meta_arch_offline import OfflineInferenceTrace, RefinerInputs
from dvis_attn_pl.utils.temporal_record import (
    CATEGORY_ID,
    DELETION,
    DELETION_FRACTIONS_KEY,
    DELETION_IMPORTANCE,
    DELETION_IMPORTANCE_FIRST,
    DELETION_LEAST_FIRST,
    DELETION_LOO_EFFECT,
    DELETION_RANDOM_MEAN,
    DELETION_ROLLOUT,
    FRAME_IMPORTANCE,
    REFINER_ID,
)

__all__ = ["DeletionCurves", "DELETION_FRACTIONS", "ROLLOUT_OPTIONS", "ROLLOUT_READOUTS"]

DELETION_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# TemporalRollout's shipped defaults (its mask_padding=True is the ``valid`` argument here)
ROLLOUT_OPTIONS = {"residual": "identity", "head_fusion": "mean", "discard_ratio": 0.0, "start_layer": 0}
ROLLOUT_READOUTS = ("column_mean", "activation")


class DeletionCurves(Callback):
    """Adds ``deletion`` to the temporal records of the top ``top_k`` predictions of every video.

    ``rollout_readouts``: the rollout readouts that order frames beside the pooling weights (any of
    :data:`ROLLOUT_READOUTS`; empty: no rollout run). Must come before the
    :class:`~callbacks.PredictionWriter` in the callback list (it edits the records the writer stores).
    """

    def __init__(
        self,
        top_k: int = 5,
        n_random: int = 4,
        seed: int = 0,
        fractions: Sequence[float] = DELETION_FRACTIONS,
        rollout_readouts: Sequence[str] = ROLLOUT_READOUTS,
    ) -> None:
        unknown = [r for r in rollout_readouts if r not in ROLLOUT_READOUTS]
        if unknown:
            raise ValueError(f"rollout readouts {unknown} are not among {ROLLOUT_READOUTS}")
        self.top_k, self.n_random, self.seed, self.fractions = top_k, n_random, seed, tuple(fractions)
        self.rollout_readouts = tuple(dict.fromkeys(rollout_readouts))

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
        rollout = {}
        if self.rollout_readouts:
            present = info.present[rows] if info.present is not None else torch.ones_like(importance, dtype=torch.bool)
            rollout = self._rollout_importance(refiner, inputs, rows, present, importance)
        orders = self._orders(importance, list(rollout.values()), result.video_id)  # (P, V, T)
        curves = torch.empty(orders.shape[:2] + (len(self.fractions),), dtype=torch.float64)
        for j, fraction in enumerate(self.fractions):
            removed = min(frames - 1, round(fraction * frames))
            kept = orders[..., removed:].sort(dim=-1).values  # (P, V, T - removed)
            # each distinct frame set once: orders that agree (every one at fraction 0) share a run
            unique, inverse = kept.flatten(0, 1).unique(dim=0, return_inverse=True)
            logits = inputs.run(refiner, unique)[inverse.to(inputs.frame_embeds.device)]  # (P*V, N, K+1)
            per_variant = logits.view(*orders.shape[:2], *logits.shape[1:])
            curves[..., j] = self._class_prob(per_variant, rows, classes)
        loo = torch.stack([torch.cat([torch.arange(t), torch.arange(t + 1, frames)]) for t in range(frames)])
        logits = inputs.run(refiner, loo)  # (T, N, K+1)
        probs = logits.float().softmax(-1)[:, rows, classes].double().T  # (P, T)
        full = curves[:, 0, 0]  # fraction 0: every frame
        first = 2 + self.n_random  # the rollout orders follow the random ones (see _orders)
        for i, entry in enumerate(picked):
            record = {
                DELETION_FRACTIONS_KEY: list(self.fractions),
                DELETION_IMPORTANCE_FIRST: _rounded(curves[i, 0]),
                DELETION_LEAST_FIRST: _rounded(curves[i, 1]),
                DELETION_RANDOM_MEAN: _rounded(curves[i, 2:first].mean(dim=0)),
                DELETION_LOO_EFFECT: _rounded(full[i] - probs[i]),
            }
            if rollout:
                record[DELETION_ROLLOUT] = {
                    name: {
                        DELETION_IMPORTANCE: _rounded(values[i]),
                        DELETION_IMPORTANCE_FIRST: _rounded(curves[i, first + 2 * k]),
                        DELETION_LEAST_FIRST: _rounded(curves[i, first + 2 * k + 1]),
                    }
                    for k, (name, values) in enumerate(rollout.items())
                }
            entry[DELETION] = record

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

    def _rollout_importance(
        self, refiner, inputs: RefinerInputs, rows: torch.Tensor, present: torch.Tensor, pooling: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Readout -> (P, T) float64 host rollout importance of refiner ``rows``, from the time attention
        of one refiner run on every frame (computed on the model's device)."""
        attn = time_attention(refiner, inputs).index_select(0, rows.to(inputs.frame_embeds.device))
        valid = present.to(attn.device, torch.bool)
        rollout = temporal_rollout(attn, valid=valid, **ROLLOUT_OPTIONS)  # (P, T, T)
        out = {}
        for name in self.rollout_readouts:
            if name == "column_mean":
                out[name] = rollout_readout(rollout, "column_mean", valid=valid)
            else:  # the pooling weights over present frames, as TemporalRollout's activation readout
                a = pooling.to(rollout) * valid
                a = a / a.sum(dim=1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
                out[name] = rollout_readout(rollout, "activation", activation=a)
        return {name: values.double().cpu() for name, values in out.items()}

    def _orders(self, importance: torch.Tensor, others: list[torch.Tensor], video_id) -> torch.Tensor:
        """(P, 2 + n_random + 2 * len(others), T) removal orders: most and least important first by
        ``importance``, random, then most and least important first by each of ``others``."""
        digest = hashlib.sha256(f"{self.seed}:{video_id}".encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
        p, t = importance.shape
        rand = torch.rand((p, self.n_random, t), generator=gen).argsort(dim=-1)
        pairs = [_most_least(w) for w in (importance, *others)]
        return torch.cat([pairs[0], rand, *pairs[1:]], dim=1)

    @staticmethod
    def _class_prob(logits: torch.Tensor, rows: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """(P, V) probability of prediction p's class at its row, from logits (P, V, N, K+1)."""
        probs = logits.float().softmax(-1)  # background kept in the softmax, as the model's scores
        p = torch.arange(len(rows))
        return probs[p, :, rows[p], classes[p]].double()


def time_attention(refiner, inputs: RefinerInputs) -> torch.Tensor:
    """(N, L, T, T) head-averaged time self-attention of the refiner run on every frame of ``inputs``,
    from its ``refiner_time`` capture sites; each site's previous capture request is restored after."""
    sites = select_sites(refiner, kinds=("refiner_time",))
    if not sites:
        raise RuntimeError("the refiner has no refiner_time capture sites (were the sites named?)")
    weights: dict[int, torch.Tensor] = {}

    def sink(site: CaptureSite, tensors: dict[str, torch.Tensor]) -> None:
        weights[id(site)] = tensors["weights"]  # (B*N, T, T) with B = 1

    previous = [site.capture for site in sites]
    enable_capture(sites, sink)
    try:
        inputs.run(refiner, torch.arange(inputs.frame_embeds.shape[0])[None])
    finally:
        for site, request in zip(sites, previous):
            site.capture = request
    return torch.stack([weights[id(site)] for site in sites], dim=1)


def _most_least(importance: torch.Tensor) -> torch.Tensor:
    """(P, 2, T): frames by decreasing then increasing importance (ties in frame order)."""
    most = importance.argsort(dim=1, descending=True, stable=True)
    least = importance.argsort(dim=1, stable=True)
    return torch.stack([most, least], dim=1)


def _rounded(values: torch.Tensor) -> list[float]:
    return [round(float(v), 6) for v in values]
