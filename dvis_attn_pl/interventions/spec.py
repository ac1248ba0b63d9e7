"""What an intervention is: its name, what it removes and keeps, and how it is given on the command line.

Two families:

* **input** interventions alter the frames the model sees (and the ground truth the same way, so
  AP and matching stay meaningful): ``freeze``, ``shuffle``, ``reverse``, ``silhouette``;
* **model** knockouts change one computation inside the model through forward hooks, frames
  unchanged: ``uniform_pooling``, ``no_time_attention``, ``tracker_memory_cut``;
* the **probe** ``deletion`` runs the video unaltered and re-runs the refiner on subsets of its
  frames (deletion curves of the frame importance: ``callbacks.DeletionCurves``).

``--interventions freeze,shuffle`` runs each after the unaltered pass; ``shuffle`` runs
``--shuffle-k`` seeded permutations, each its own pass (``shuffle-1`` ...).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..utils.errors import UserError

__all__ = [
    "FREEZE_FRAMES",
    "INTERVENTIONS",
    "Intervention",
    "InterventionKind",
    "parse_interventions",
]


@dataclass(frozen=True)
class InterventionKind:
    """A documented intervention: what it removes, what it keeps."""

    name: str
    family: str  # "input", "model" or "probe"
    removes: str
    keeps: str


INTERVENTIONS: dict[str, InterventionKind] = {
    k.name: k
    for k in (
        InterventionKind(
            "freeze",
            "input",
            removes="motion: one frame is repeated for the whole clip",
            keeps="the appearance (and posture) of that one frame, the clip length",
        ),
        InterventionKind(
            "shuffle",
            "input",
            removes="the order of the frames (K seeded permutations)",
            keeps="the set of views: every frame, each exactly once",
        ),
        InterventionKind(
            "reverse",
            "input",
            removes="the direction of time",
            keeps="every frame and every frame-to-frame change (played backwards)",
        ),
        InterventionKind(
            "silhouette",
            "input",
            removes="appearance: colours, texture, fins' colour, the background",
            keeps="each object's outline (shape, posture) and its motion, from the masks",
        ),
        InterventionKind(
            "uniform_pooling",
            "model",
            removes="the refiner's learned temporal pooling (every frame weighs 1/T in the class)",
            keeps="everything the refiner layers computed",
        ),
        InterventionKind(
            "no_time_attention",
            "model",
            removes="the refiner's time self-attention (each frame attends only to itself)",
            keeps="the temporal convolution (if on), object attention, the pooling",
        ),
        InterventionKind(
            "deletion",
            "probe",
            removes="for each top prediction, frames of the refiner's input: most important first, least "
            "important first, at random, and each frame alone (deletion curves)",
            keeps="the unaltered pass's frames, segmenter and tracker (frames are removed from the refiner only)",
        ),
        InterventionKind(
            "tracker_memory_cut",
            "model",
            removes="the tracker's memory: each track's query is replaced by the segmenter query it "
            "matches in the current frame, so no history is carried",
            keeps="the identities the tracker assigns (association by the matched query)",
        ),
    )
}

FREEZE_FRAMES = ("middle", "first", "random", "median_importance")


@dataclass(frozen=True)
class Intervention:
    """One altered pass: ``label`` names its folder (``interventions/<label>/``)."""

    name: str
    label: str
    seed: int = 0
    freeze_frame: str = "middle"  # freeze only: which frame is repeated (see FREEZE_FRAMES)

    @property
    def kind(self) -> InterventionKind:
        return INTERVENTIONS[self.name]

    @property
    def family(self) -> str:
        return self.kind.family

    def describe(self) -> dict:
        """JSON-ready description (written beside the pass's results)."""
        out = {"name": self.name, "label": self.label, "family": self.family, "seed": self.seed}
        out.update(removes=self.kind.removes, keeps=self.kind.keeps)
        if self.name == "freeze":
            out["freeze_frame"] = self.freeze_frame
        return out


def parse_interventions(
    text: str, shuffle_k: int = 3, seed: int = 0, freeze_frame: str = "middle"
) -> list[Intervention]:
    """``"freeze,shuffle,..."`` -> the passes, in the given order (shuffle expands to ``shuffle_k``).

    ``all`` stands for every intervention. An unknown name is a one-line :class:`UserError`.
    """
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise UserError("--interventions: give a comma list, e.g. freeze,shuffle (or all)")
    if "all" in names:
        names = list(INTERVENTIONS)
    unknown = [n for n in names if n not in INTERVENTIONS]
    if unknown:
        raise UserError(
            f"--interventions: unknown intervention {unknown[0]!r}; known: {', '.join(INTERVENTIONS)}, all"
        )
    if freeze_frame not in FREEZE_FRAMES:
        raise UserError(f"--freeze-frame {freeze_frame!r}: expected one of {', '.join(FREEZE_FRAMES)}")
    if shuffle_k < 1:
        raise UserError(f"--shuffle-k {shuffle_k}: expected at least 1")
    passes: list[Intervention] = []
    for name in dict.fromkeys(names):  # each once, in order
        if name == "shuffle":
            passes += [Intervention("shuffle", f"shuffle-{k + 1}", seed=seed + k) for k in range(shuffle_k)]
        else:
            passes.append(Intervention(name, name, seed=seed, freeze_frame=freeze_frame))
    return passes
