"""What ``test`` and ``predict`` were asked to do, as frozen values: the CLI builds :class:`RunOptions`
from its parsed arguments (after its checks and defaults) and the run orchestration reads only these.

No field has a default here: the CLI's defaults are the only ones, so nothing below it can disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Hardware", "RunOptions"]


@dataclass(frozen=True)
class Hardware:
    """The Lightning Trainer flags (``--accelerator --devices --strategy --precision --num-nodes``)."""

    accelerator: str
    devices: str
    strategy: str
    precision: str
    num_nodes: int

    def flags(self) -> str:
        """The flags as the user gave them, to name them in an error line."""
        return (
            f"--accelerator {self.accelerator} --devices {self.devices} --strategy {self.strategy} "
            f"--precision {self.precision} --num-nodes {self.num_nodes}"
        )


@dataclass(frozen=True)
class RunOptions:
    """One ``test`` / ``predict`` run.

    ``ckpt`` is the checkpoint actually loaded (the shipped weights' file when ``weights`` is
    ``"shipped"``); ``weights`` says where it came from: ``checkpoint``, ``shipped`` or ``random``.
    ``model_config`` is the resolved config path (None: the embedded one). ``overrides`` are the
    trailing ``KEY VALUE`` pairs. ``argv`` is the command line as given, recorded in ``run.json``.
    """

    command: str
    argv: tuple[str, ...]
    model_config: str | None
    model_source: str
    ckpt: str | None
    weights: str
    trust_checkpoint: bool
    overrides: tuple[str, ...]
    data: str | None
    frames: str | None
    out: str | None
    max_videos: int | None
    capture: str
    interventions: str | None
    shuffle_k: int
    freeze_frame: str
    intervention_seed: int
    hardware: Hardware
    num_workers: int | None  # None: chosen from the device (see runner.execute)

    @property
    def random_weights(self) -> bool:
        return not self.ckpt

    @property
    def captures(self) -> bool:
        return self.capture != "none"
