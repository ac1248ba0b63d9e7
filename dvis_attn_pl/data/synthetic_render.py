"""Vectorised rasterisation for the synthetic fish videos (numpy, coordinate grids, no pixel loops).

Everything works on whole clips at once: arrays are (T, H, W[, 3]) float32 in 0..255, built by
broadcasting a time axis against pixel-coordinate grids. A fish is drawn on a square patch that
follows it (``(T, S, S)``, S about 1.7 body lengths) and scattered into the frames with one
fancy-indexing assignment; its alpha >= 0.5 is its mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .synthetic_species import Appearance

__all__ = [
    "smooth_noise",
    "render_background",
    "FishSprite",
    "rasterise_fish",
    "composite",
    "render_plants",
    "render_rock",
    "add_particles",
    "finish_frames",
]

F32 = np.float32


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation weights (align-corners) for separable upsampling."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    lo = np.clip(np.floor(pos).astype(int), 0, max(n_in - 2, 0))
    frac = pos - lo
    m = np.zeros((n_out, n_in))
    rows = np.arange(n_out)
    m[rows, lo] += 1 - frac
    m[rows, np.minimum(lo + 1, n_in - 1)] += frac
    return m


def smooth_noise(rng: np.random.Generator, height: int, width: int, cells: tuple[int, int]) -> np.ndarray:
    """Low-frequency noise (H, W), unit-ish amplitude: a coarse normal grid, bilinearly upsampled."""
    coarse = rng.standard_normal(cells)
    return (_interp_matrix(height, cells[0]) @ coarse @ _interp_matrix(width, cells[1]).T).astype(F32)


def render_background(
    rng: np.random.Generator, num_frames: int, height: int, width: int
) -> tuple[np.ndarray, dict]:
    """Water: depth gradient, blotchy turbidity, animated caustics near the surface, a sediment bed."""
    y = np.linspace(0.0, 1.0, height, dtype=F32)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=F32)[None, :]
    top = np.array([72, 152, 158], F32) + rng.normal(0, 8, 3).astype(F32)
    bottom = np.array([18, 58, 78], F32) + rng.normal(0, 5, 3).astype(F32)
    depth = y**0.8
    still = top * (1 - depth)[..., None] + bottom * depth[..., None]  # (H, 1, 3)
    turbidity = smooth_noise(rng, height, width, (5, 7)) * 9.0
    still = still + turbidity[..., None] * np.array([0.6, 1.0, 0.9], F32)

    # sediment bed: wavy upper boundary, speckled sand with darker pebbles
    bed_level = rng.uniform(0.84, 0.9)
    boundary = (
        bed_level
        + 0.025 * np.sin(2 * np.pi * (x * rng.uniform(1.0, 2.5) + rng.uniform()))
        + 0.01 * smooth_noise(rng, 1, width, (1, 9))
    )
    bed = np.clip((y - boundary) * height / 2.0 + 0.5, 0, 1)  # soft edge, (H, W)
    sand = np.array([118, 104, 78], F32) + rng.normal(0, 6, 3).astype(F32)
    speckle = rng.standard_normal((height, width)).astype(F32) * 11.0
    pebbles = (smooth_noise(rng, height, width, (height // 6 + 2, width // 6 + 2)) > 1.1).astype(F32) * -35.0
    sand_img = sand + (speckle + pebbles)[..., None]
    still = still * (1 - bed)[..., None] + sand_img * bed[..., None]

    # caustics: bright ridges of two warped sine fields drifting in time, fading with depth
    t = np.arange(num_frames, dtype=F32)[:, None, None]
    xs = x[None] * (width / max(height, 1)) * 9.0
    ys = y[None] * 9.0
    k = rng.uniform(0.8, 1.2, 4).astype(F32)
    w = rng.uniform(0.08, 0.16, 4).astype(F32)
    p1 = np.sin(k[0] * xs + 1.3 * np.sin(k[1] * ys + w[0] * t) + w[1] * t)
    p2 = np.sin(k[2] * (0.7 * xs - 0.7 * ys) + 1.1 * np.sin(k[3] * xs - w[2] * t) - w[3] * t)
    ridges = (1 - np.abs(p1)) ** 6 + (1 - np.abs(p2)) ** 6
    fade = (1 - y[None]) ** 1.6 * (1 - bed[None]) * 26.0
    frames = still[None] + (ridges * fade)[..., None] * np.array([0.85, 1.0, 0.9], F32)
    params = {
        "top_rgb": top.round(1).tolist(),
        "bottom_rgb": bottom.round(1).tolist(),
        "bed_level": round(bed_level, 3),
    }
    return frames.astype(F32), params


@dataclass
class FishSprite:
    """A rasterised fish: the frame pixels it covers with their alpha and colour."""

    t: np.ndarray
    r: np.ndarray
    c: np.ndarray
    alpha: np.ndarray  # (N,)
    color: np.ndarray  # (N, 3)

    def mask(self, shape: tuple[int, int, int]) -> np.ndarray:
        """(T, H, W) bool: alpha >= 0.5."""
        out = np.zeros(shape, dtype=bool)
        keep = self.alpha >= 0.5
        out[self.t[keep], self.r[keep], self.c[keep]] = True
        return out


def rasterise_fish(
    look: Appearance,
    length: float,
    cx: np.ndarray,
    cy: np.ndarray,
    heading: np.ndarray,
    tail_phase: np.ndarray,
    tail_amp: np.ndarray,
    height: int,
    width: int,
) -> FishSprite:
    """Draw one fish in every frame: body, forked tail, dorsal fin, countershading, pattern, eye."""
    reach = 0.5 * length + length * look.tail_length + 0.5 * look.body_aspect * length * look.tail_span + 3
    half = int(np.ceil(reach)) + 2
    off = np.arange(-half, half + 1)
    icx, icy = np.floor(cx).astype(np.int64), np.floor(cy).astype(np.int64)
    dx = (off[None, None, :] - (cx - icx)[:, None, None]).astype(F32)  # (T, 1, S)
    dy = (off[None, :, None] - (cy - icy)[:, None, None]).astype(F32)  # (T, S, 1)
    cos_h = np.cos(heading).astype(F32)[:, None, None]
    sin_h = np.sin(heading).astype(F32)[:, None, None]
    u = dx * cos_h + dy * sin_h  # along the body, snout at +length/2
    v = -dx * sin_h + dy * cos_h  # across the body
    s = (0.5 * length - u) / length  # 0 at the snout, 1 at the tail base
    ramp = np.clip(s, 0, None)
    bend = (
        (tail_amp * length).astype(F32)[:, None, None]
        * ramp**2
        * np.sin(tail_phase.astype(F32)[:, None, None] - 2 * np.pi * 0.8 * ramp)
    )
    vb = v - bend
    up = np.where(np.cos(heading) >= 0, -1.0, 1.0).astype(F32)[:, None, None]  # dorsal side stays on top
    vd = vb * up  # > 0 on the dorsal side
    avb = np.abs(vb)

    hmax = 0.5 * look.body_aspect * length
    widest = 0.35
    z = np.where(s < widest, (s - widest) / widest, (s - widest) / (1 - widest))
    profile = np.sqrt(np.clip(1 - z * z, 0, 1))
    peduncle = 0.16
    half_depth = hmax * np.maximum(profile, peduncle * (s > 0.5))
    in_body = (s >= 0) & (s <= 1)
    a_body = np.clip(half_depth - avb + 0.5, 0, 1) * in_body

    r = (s - 1) / look.tail_length
    in_tail = (r >= 0) & (r <= 1)
    tail_half = hmax * (peduncle + r * (look.tail_span - peduncle))
    notch = look.tail_fork * tail_half * np.clip((r - 0.3) / 0.7, 0, 1)
    fork = np.where(notch > 0.5, np.clip(avb - notch + 0.5, 0, 1), 1.0)
    a_tail = np.clip(tail_half - avb + 0.5, 0, 1) * fork * in_tail

    q = (s - 0.3) / 0.35
    in_dorsal = (q >= 0) & (q <= 1) & (vd > 0)
    qc = np.clip(q, 0, 1)
    fin_extra = look.dorsal_height * length * np.clip(np.sin(np.pi * qc), 0, 1) ** 0.7 * (1 - 0.5 * qc)
    a_dorsal = np.clip(half_depth + fin_extra - vd + 0.5, 0, 1) * in_dorsal
    a_fins = np.maximum(a_tail, a_dorsal)
    alpha = np.maximum(a_body, a_fins)

    base = np.asarray(look.base_rgb, F32)
    belly = np.asarray(look.belly_rgb, F32)
    tv = np.clip(vd / np.maximum(half_depth, 1e-3), -1, 1)  # +1 back, -1 belly
    beta = np.clip(0.3 - tv, 0, 1)[..., None]
    color = base * (1 - beta) + belly * beta
    shade = np.ones_like(s)
    if look.pattern == "bars" and look.num_bars > 0:
        bars = 0.5 + 0.5 * np.cos(2 * np.pi * look.num_bars * (s - 0.15) / 0.75)
        shade = np.where((bars > 0.7) & (s > 0.15) & (s < 0.9) & (tv > -0.75), 0.42, shade)
    elif look.pattern == "lateral_line":
        shade = np.where((np.abs(vd - 0.1 * half_depth) < 0.7) & (s > 0.12) & (s < 0.95), 0.7, shade)
    eye_r = max(0.9, 0.035 * length)
    eye = ((s - 0.09) * length) ** 2 + (vd - 0.25 * hmax) ** 2 < eye_r**2
    shade = np.where(eye, 0.15, shade)
    color = color * shade[..., None]
    fins_on_top = (a_fins > a_body)[..., None]
    color = np.where(fins_on_top, np.asarray(look.fin_rgb, F32), color)

    rows = icy[:, None] + off[None, :]  # (T, S)
    cols = icx[:, None] + off[None, :]
    valid = (
        (alpha > 0) & ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    )
    tt, ii, jj = np.nonzero(valid)
    return FishSprite(
        t=tt,
        r=rows[tt, ii],
        c=cols[tt, jj],
        alpha=alpha[tt, ii, jj].astype(F32),
        color=color[tt, ii, jj].astype(F32),
    )


def composite(frames: np.ndarray, sprite: FishSprite) -> None:
    """Alpha-blend a sprite over the frames, in place."""
    a = sprite.alpha[:, None]
    idx = (sprite.t, sprite.r, sprite.c)
    frames[idx] = frames[idx] * (1 - a) + sprite.color * a


def render_plants(
    rng: np.random.Generator, num_frames: int, height: int, width: int, x_center: float, num_strands: int
) -> tuple[np.ndarray, dict]:
    """A clump of swaying weed strands rooted in the bed; returns alpha (T, H, W) and the params.

    Each strand only touches the columns it can reach, so the work is proportional to its width.
    """
    alpha = np.zeros((num_frames, height, width), F32)
    t = np.arange(num_frames, dtype=F32)[:, None, None]
    y = np.arange(height, dtype=F32)[None, :, None]
    strands = []
    for _ in range(num_strands):  # a few strands, each vectorised over (T, H, W-slice)
        x0 = x_center + rng.normal(0, 0.03 * width)
        tall = rng.uniform(0.45, 0.8) * height
        base_w = rng.uniform(0.02, 0.035) * width
        sway = rng.uniform(0.02, 0.045) * width
        lean = rng.normal(0, 0.03 * width)
        period = rng.uniform(18, 30)
        phase = rng.uniform(0, 2 * np.pi)
        lo = int(max(0, np.floor(x0 - sway - abs(lean) - base_w - 2)))
        hi = int(min(width, np.ceil(x0 + sway + abs(lean) + base_w + 2)))
        if hi <= lo:
            continue
        x = np.arange(lo, hi, dtype=F32)[None, None, :]
        level = np.clip((height - y) / tall, 0, None)  # 0 at the root, 1 at the tip
        centre = (
            x0 + lean * level**2 + sway * level**1.5 * np.sin(2 * np.pi * t / period + phase + 1.5 * level)
        )
        half_w = base_w * (1 - 0.7 * np.clip(level, 0, 1)) * 0.5
        a = np.clip(half_w - np.abs(x - centre) + 0.5, 0, 1) * (level <= 1)
        np.maximum(alpha[:, :, lo:hi], a, out=alpha[:, :, lo:hi])
        strands.append(
            {"x": round(float(x0), 1), "height": round(float(tall), 1), "sway": round(float(sway), 1)}
        )
    return alpha, {"type": "plant", "x": round(float(x_center), 1), "strands": strands}


def render_rock(
    rng: np.random.Generator, height: int, width: int, x_center: float
) -> tuple[np.ndarray, np.ndarray, dict]:
    """A static boulder sitting on the bed: alpha (H, W) and colour (H, W, 3)."""
    rx = rng.uniform(0.1, 0.18) * width
    ry = rng.uniform(0.16, 0.3) * height
    yc = height * rng.uniform(0.98, 1.05)
    y = np.arange(height, dtype=F32)[:, None]
    x = np.arange(width, dtype=F32)[None, :]
    ang = np.arctan2((y - yc) / ry, (x - x_center) / rx)
    wobble = 1 + 0.08 * np.sin(3 * ang + rng.uniform(0, 6.28)) + 0.05 * np.sin(5 * ang + rng.uniform(0, 6.28))
    rad = np.sqrt(((x - x_center) / rx) ** 2 + ((y - yc) / ry) ** 2)
    alpha = np.clip((wobble - rad) * min(rx, ry) + 0.5, 0, 1).astype(F32)
    tone = np.array([96, 90, 80], F32) + rng.normal(0, 6, 3).astype(F32)
    light = np.clip(1.25 - 0.6 * (y - (yc - ry)) / ry, 0.55, 1.25)
    texture = smooth_noise(rng, height, width, (height // 8 + 2, width // 8 + 2)) * 12.0
    color = tone * light[..., None] + texture[..., None]
    params = {
        "type": "rock",
        "x": round(float(x_center), 1),
        "rx": round(float(rx), 1),
        "ry": round(float(ry), 1),
    }
    return alpha, color.astype(F32), params


def add_particles(frames: np.ndarray, rng: np.random.Generator, count: int) -> None:
    """Drifting suspended particles ("marine snow"), one bright pixel each per frame, in place."""
    num_frames, height, width = frames.shape[:3]
    t = np.arange(num_frames)
    x = rng.uniform(0, width, count)[:, None] + rng.normal(0.0, 0.15, count)[:, None] * t
    y = rng.uniform(0, height, count)[:, None] + rng.uniform(0.1, 0.5, count)[:, None] * t
    xi, yi = np.floor(x).astype(np.int64) % width, np.floor(y).astype(np.int64) % height
    ti = np.broadcast_to(t, xi.shape)
    frames[ti, yi, xi] = np.minimum(frames[ti, yi, xi] + 38.0, 255.0)


def finish_frames(frames: np.ndarray, rng: np.random.Generator, noise_sd: float = 2.5) -> np.ndarray:
    """Sensor noise, rounding, clipping: float (T, H, W, 3) -> uint8."""
    frames += rng.standard_normal(frames.shape, dtype=F32) * noise_sd
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)
