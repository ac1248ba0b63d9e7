"""Species of the synthetic fish-video set: designed cues and the motion models.

Two groups, so the set doubles as a control experiment for "appearance or motion?":

* group ``appearance`` — species 1 and 2 swim with the *same* motion model and parameter
  distributions (``cruise``) and differ only in how they look (body depth, colours, fins, bars).
* group ``motion`` — species 3, 4 and 5 share *one* appearance (identical parameters) and *one*
  per-frame posture distribution, and differ only in how they move over frames: ``sinusoidal``
  (steady travel on a weaving path, fast tail beat), ``dart`` (bursts and glides with abrupt turns),
  ``hover`` (station holding with strong vertical bobbing, slow tail beat). Generator version 2:
  their tail-beat amplitude is one constant and their body heading one shared yaw process around
  the horizontal, independent of the path, so no single frame tells them apart (version 1 leaked
  the species through the tail's bend and the body's tilt in one frame). Every motion species keeps
  moving (none is still), so a frozen clip is equally foreign to all three.

Sizes are drawn from one distribution for every species, so size is never a cue. Lengths are
fractions of the frame width and speeds fractions of the width per frame, so the set looks the
same at any resolution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["Appearance", "Motion", "Species", "SPECIES", "Trajectory", "simulate_motion", "FISH_LENGTH_RANGE"]

# Body length (snout to tail base) as a fraction of the frame width, for every species.
FISH_LENGTH_RANGE = (0.16, 0.22)


@dataclass(frozen=True)
class Appearance:
    """How a fish looks (colours are RGB 0..255; sizes are fractions of the body length)."""

    body_aspect: float  # maximum body depth / body length
    base_rgb: tuple[int, int, int]  # back colour
    belly_rgb: tuple[int, int, int]  # belly colour (countershading)
    fin_rgb: tuple[int, int, int]
    pattern: str  # "none", "bars" (vertical dark bars), "lateral_line"
    num_bars: int
    tail_length: float
    tail_span: float  # tail fin half-height / maximum body half-depth
    tail_fork: float  # 0 = straight trailing edge, 1 = deeply forked
    dorsal_height: float  # dorsal fin height / body length


@dataclass(frozen=True)
class Motion:
    """How a fish moves; speeds are fractions of the frame width per frame."""

    kind: str  # "cruise", "sinusoidal", "dart", "hover"
    speed: tuple[float, float]  # range of the cruising / forward / burst speed
    tail_beat_freq: float  # cycles per frame (while swimming)
    tail_beat_amp: float  # lateral tail excursion / body length
    params: tuple[tuple[str, Any], ...] = ()

    def param(self, key: str) -> Any:
        return dict(self.params)[key]


@dataclass(frozen=True)
class Species:
    id: int
    name: str
    group: str
    cue: str  # what separates it from the other species of its group
    appearance: Appearance
    motion: Motion
    confusable_with: tuple[str, ...]

    def design(self) -> dict[str, Any]:
        """JSON-ready design parameters."""
        motion = asdict(self.motion)
        motion["params"] = dict(self.motion.params)
        return {"appearance": asdict(self.appearance), "motion": motion}


_CRUISE = Motion(
    "cruise",
    speed=(0.012, 0.018),
    tail_beat_freq=0.12,
    tail_beat_amp=0.05,
    params=(("turn_deg_per_frame_sd", 0.35), ("heading_sd_deg", 9.0), ("speed_wobble", 0.06)),
)
# Generator version 2: one posture for the motion species. A constant tail-beat amplitude (the bend
# at a uniformly distributed phase has the same distribution at any frequency) and one body-yaw
# process, so a single frame carries no species information; only the frame-to-frame change does.
MOTION_TAIL_AMP = 0.08
_BODY_YAW = (("body_yaw_deg", 8.0), ("body_yaw_period", (25.0, 35.0)))
_SHARED_LOOK = Appearance(
    body_aspect=0.27,
    base_rgb=(92, 104, 88),
    belly_rgb=(196, 200, 186),
    fin_rgb=(112, 118, 104),
    pattern="lateral_line",
    num_bars=0,
    tail_length=0.26,
    tail_span=1.25,
    tail_fork=0.45,
    dorsal_height=0.07,
)

SPECIES: tuple[Species, ...] = (
    Species(
        1,
        "redfin_slender",
        "appearance",
        "appearance",
        Appearance(
            body_aspect=0.2,
            base_rgb=(120, 128, 92),
            belly_rgb=(222, 214, 180),
            fin_rgb=(214, 58, 40),
            pattern="none",
            num_bars=0,
            tail_length=0.27,
            tail_span=1.6,
            tail_fork=0.75,
            dorsal_height=0.08,
        ),
        _CRUISE,
        ("barred_deepbody",),
    ),
    Species(
        2,
        "barred_deepbody",
        "appearance",
        "appearance",
        Appearance(
            body_aspect=0.38,
            base_rgb=(206, 178, 96),
            belly_rgb=(238, 226, 176),
            fin_rgb=(150, 140, 120),
            pattern="bars",
            num_bars=5,
            tail_length=0.22,
            tail_span=1.05,
            tail_fork=0.1,
            dorsal_height=0.11,
        ),
        _CRUISE,
        ("redfin_slender",),
    ),
    Species(
        3,
        "grey_weaver",
        "motion",
        "motion",
        _SHARED_LOOK,
        Motion(
            "sinusoidal",
            speed=(0.008, 0.012),
            tail_beat_freq=0.22,
            tail_beat_amp=MOTION_TAIL_AMP,
            params=(
                ("weave_amp_h", (0.04, 0.06)),
                ("weave_freq", (0.035, 0.05)),
                ("heading_sd_deg", 6.0),  # of the path; the body follows the shared yaw
                *_BODY_YAW,
            ),
        ),
        ("grey_darter", "grey_hoverer"),
    ),
    Species(
        4,
        "grey_darter",
        "motion",
        "motion",
        _SHARED_LOOK,
        Motion(
            "dart",
            speed=(0.05, 0.065),
            tail_beat_freq=0.33,
            tail_beat_amp=MOTION_TAIL_AMP,
            params=(
                ("glide_speed", 0.008),
                ("burst_every", (7, 11)),
                ("burst_frames", 2),
                ("turn_sd_deg", 28.0),  # of the path; the body faces left or right with the shared yaw
                ("reverse_prob", 0.25),
                ("glide_tail_freq", 0.1),
                *_BODY_YAW,
            ),
        ),
        ("grey_weaver", "grey_hoverer"),
    ),
    Species(
        5,
        "grey_hoverer",
        "motion",
        "motion",
        _SHARED_LOOK,
        Motion(
            "hover",
            speed=(0.001, 0.002),
            tail_beat_freq=0.12,
            tail_beat_amp=MOTION_TAIL_AMP,
            params=(
                ("bob_amp_h", 0.045),
                ("bob_period", (14.0, 20.0)),
                *_BODY_YAW,
            ),
        ),
        ("grey_weaver", "grey_darter"),
    ),
)


@dataclass
class Trajectory:
    """Per-frame state of one fish (arrays of length T); ``x``, ``y`` relative to the anchor frame."""

    x: np.ndarray
    y: np.ndarray
    heading: np.ndarray  # radians, 0 = +x (right), y grows downwards
    tail_phase: np.ndarray  # radians
    tail_amp: np.ndarray  # fraction of the body length
    sampled: dict[str, float]


def _phase(freq: np.ndarray, phase0: float) -> np.ndarray:
    return phase0 + 2 * np.pi * np.concatenate([[0.0], np.cumsum(freq[:-1])])


def _integrate(speed: np.ndarray, heading: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dx = np.concatenate([[0.0], np.cumsum((speed * np.cos(heading))[:-1])])
    dy = np.concatenate([[0.0], np.cumsum((speed * np.sin(heading))[:-1])])
    return dx, dy


def _body_heading(motion: Motion, facing: np.ndarray | float, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The shared body pose of the motion species: facing left or right, yawing around it."""
    period = rng.uniform(*motion.param("body_yaw_period"))
    phase = rng.uniform(0, 2 * np.pi)
    return facing + np.deg2rad(motion.param("body_yaw_deg")) * np.sin(2 * np.pi * t / period + phase)


def simulate_motion(
    motion: Motion, num_frames: int, width: int, height: int, heading0: float, rng: np.random.Generator
) -> Trajectory:
    """Displacement from frame 0 (pixels), heading and tail beat of one fish; vectorised over frames."""
    t = np.arange(num_frames, dtype=np.float64)
    lo, hi = motion.speed
    phase0 = float(rng.uniform(0, 2 * np.pi))
    if motion.kind == "cruise":
        speed0 = rng.uniform(lo, hi) * width
        turn = np.deg2rad(rng.normal(0.0, motion.param("turn_deg_per_frame_sd")))
        heading = heading0 + np.deg2rad(rng.normal(0.0, motion.param("heading_sd_deg"))) + turn * t
        speed = speed0 * (1 + motion.param("speed_wobble") * np.sin(2 * np.pi * t / 17.0 + phase0))
        dx, dy = _integrate(speed, heading)
        freq = np.full(num_frames, motion.tail_beat_freq)
        amp = np.full(num_frames, motion.tail_beat_amp)
        sampled = {"speed_px": speed0, "turn_deg_per_frame": float(np.rad2deg(turn))}
    elif motion.kind == "sinusoidal":
        speed0 = rng.uniform(lo, hi) * width
        base = heading0 + np.deg2rad(rng.normal(0.0, motion.param("heading_sd_deg")))
        weave_amp = rng.uniform(*motion.param("weave_amp_h")) * height
        weave_freq = rng.uniform(*motion.param("weave_freq"))
        along = speed0 * t
        side = weave_amp * np.sin(2 * np.pi * weave_freq * t + phase0)
        dx = along * np.cos(base) - side * np.sin(base)
        dy = along * np.sin(base) + side * np.cos(base)
        heading = _body_heading(motion, heading0, t, rng)
        dx, dy = dx - dx[0], dy - dy[0]
        freq = np.full(num_frames, motion.tail_beat_freq)
        amp = np.full(num_frames, motion.tail_beat_amp)
        sampled = {"speed_px": speed0, "weave_amp_px": weave_amp, "weave_freq": weave_freq}
    elif motion.kind == "dart":
        burst_speed = rng.uniform(lo, hi) * width
        every_lo, every_hi = motion.param("burst_every")
        gaps = rng.integers(every_lo, every_hi + 1, size=num_frames)
        starts = np.cumsum(gaps) - gaps[0] + int(rng.integers(0, every_lo))
        starts = starts[starts < num_frames]
        in_burst = np.zeros(num_frames, dtype=bool)
        for k in range(motion.param("burst_frames")):  # a couple of offsets, not a loop over frames
            in_burst[np.clip(starts + k, 0, num_frames - 1)] = True
        # each burst picks a new heading around the horizontal (sometimes reversing): abrupt turns
        new_dir = heading0 + np.pi * (rng.random(starts.size) < motion.param("reverse_prob"))
        new_dir = new_dir + np.deg2rad(rng.normal(0.0, motion.param("turn_sd_deg"), size=starts.size))
        segment = np.searchsorted(starts, np.arange(num_frames), side="right") - 1  # last burst so far
        path = np.full(num_frames, float(heading0))
        path[segment >= 0] = new_dir[segment[segment >= 0]]
        speed = np.where(in_burst, burst_speed, motion.param("glide_speed") * width)
        dx, dy = _integrate(speed, path)
        facing = np.where(np.cos(path) >= 0, 0.0, np.pi)  # the body turns round, it does not tilt
        heading = _body_heading(motion, facing, t, rng)
        freq = np.where(in_burst, motion.tail_beat_freq, motion.param("glide_tail_freq"))
        amp = np.full(num_frames, motion.tail_beat_amp)
        sampled = {"burst_speed_px": burst_speed, "num_bursts": int(starts.size)}
    elif motion.kind == "hover":
        drift = rng.uniform(lo, hi) * width
        drift_dir = rng.uniform(0, 2 * np.pi)
        bob_amp = motion.param("bob_amp_h") * height
        bob_period = rng.uniform(*motion.param("bob_period"))
        dx = drift * t * np.cos(drift_dir)
        dy = drift * t * np.sin(drift_dir) + bob_amp * np.sin(2 * np.pi * t / bob_period + phase0)
        dy = dy - dy[0]
        heading = _body_heading(motion, heading0, t, rng)
        freq = np.full(num_frames, motion.tail_beat_freq)
        amp = np.full(num_frames, motion.tail_beat_amp)
        sampled = {"drift_px": drift, "bob_period": bob_period}
    else:
        raise ValueError(f"unknown motion kind {motion.kind!r}")
    return Trajectory(dx, dy, heading, _phase(freq, phase0), amp, {k: float(v) for k, v in sampled.items()})
