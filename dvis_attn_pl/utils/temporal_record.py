"""The temporal record of a prediction: one schema that its writers and readers import.

``results_temporal.json`` holds, per prediction, the YTVIS result fields plus what the model's
inference trace says about time. The Lightning module writes the record
(:meth:`dvis_attn_pl.lightning_module.DVISDAQModule.infer`), the ``deletion`` probe adds
``deletion``, and the prediction writer, the interventions and ``analyze`` read it. Every key is a
constant here, so a renamed key fails at import (a NameError), never as a feature that silently
finds nothing. The values written to JSON are the constants' strings: the file format is unchanged.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = [
    "CATEGORY_ID",
    "CLASS_PROBS",
    "DECISION_SETTLE_FRAME",
    "DELETION",
    "DELETION_FRACTIONS_KEY",
    "DELETION_IMPORTANCE",
    "DELETION_IMPORTANCE_FIRST",
    "DELETION_LEAST_FIRST",
    "DELETION_LOO_EFFECT",
    "DELETION_RANDOM_MEAN",
    "DELETION_ROLLOUT",
    "FRAME_IMPORTANCE",
    "LABEL_BY_FRAME",
    "PRESENT_FRAMES",
    "REFINER_ID",
    "SCORE",
    "SCORE_AFTER_K_FRAMES",
    "SEQUENCE_ID",
    "STORED_FRAMES",
    "VIDEO_ID",
    "DeletionCurvesRecord",
    "DeletionRecord",
    "TemporalRecord",
]

# identity (every record of a model with a trace)
VIDEO_ID = "video_id"
SCORE = "score"
CATEGORY_ID = "category_id"
REFINER_ID = "refiner_id"  # refiner row (offline models), None for online models
SEQUENCE_ID = "sequence_id"  # tracker sequence id, None for naive-linked rows
PRESENT_FRAMES = "present_frames"  # frames where the tracked instance had its own (valid) data
STORED_FRAMES = "stored_frames"  # [first, one past the last] frame the sequence stored
# offline models
FRAME_IMPORTANCE = "frame_importance"  # (T,) the refiner's temporal pooling weights
CLASS_PROBS = "class_probs"  # dataset category id (text) -> foreground probability
# models with prefix logits (decision timing)
DECISION_SETTLE_FRAME = "decision_settle_frame"  # first frame after which the argmax class never changes
LABEL_BY_FRAME = "label_by_frame"  # (T,) argmax dataset category after each frame
SCORE_AFTER_K_FRAMES = "score_after_k_frames"  # str(k) -> the predicted class's probability after k frames
# the deletion probe (--interventions deletion): ``deletion`` holds the keys below
DELETION = "deletion"
DELETION_FRACTIONS_KEY = "fractions"  # removed fractions, the x of every curve
DELETION_IMPORTANCE_FIRST = "importance_first"  # class probability, frames removed most important first
DELETION_LEAST_FIRST = "least_first"  # ... least important first
DELETION_RANDOM_MEAN = "random_mean"  # ... in random orders (their mean; shared by every ordering)
DELETION_LOO_EFFECT = "loo_effect"  # (T,) drop of the class probability when that frame alone is removed
# Optional (runs written before it lack it): readout name -> the curves of the frames ordered by that
# rollout readout, {DELETION_IMPORTANCE: (T,), DELETION_IMPORTANCE_FIRST, DELETION_LEAST_FIRST}. The
# top-level curves are ordered by FRAME_IMPORTANCE (the pooling weights).
DELETION_ROLLOUT = "rollout"
DELETION_IMPORTANCE = "importance"  # (T,) the ordering's per-frame importance


class DeletionCurvesRecord(TypedDict):
    """One rollout readout's entry of ``deletion[DELETION_ROLLOUT]``."""

    importance: list[float]
    importance_first: list[float]
    least_first: list[float]


class DeletionRecord(TypedDict, total=False):
    """A prediction's ``deletion`` entry (``rollout``: readout name -> its curves; absent in runs
    written before it)."""

    fractions: list[float]
    importance_first: list[float]
    least_first: list[float]
    random_mean: list[float]
    loo_effect: list[float]
    rollout: dict[str, DeletionCurvesRecord]


class TemporalRecord(TypedDict, total=False):
    """One prediction's entry of ``results_temporal.json`` beyond its segmentations (keys above)."""

    video_id: int
    score: float
    category_id: int
    refiner_id: int | None
    sequence_id: int | None
    present_frames: list[int]
    stored_frames: list[int]
    frame_importance: list[float]
    class_probs: dict[str, float]
    decision_settle_frame: int
    label_by_frame: list[int]
    score_after_k_frames: dict[str, float | None]
    deletion: DeletionRecord
