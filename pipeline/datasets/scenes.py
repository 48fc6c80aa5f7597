"""The scene of a synthetic sample video, as numbers (nothing here writes files).

Classes differ only by the actor's **motion** (MOTIONS: direction, speed, rhythm, trajectory,
growth, rotation); its colour, shape, size and start position, the textured background, the
distractors and the camera shake are drawn per video from the same distributions for every
class, so one frame does not give the class away (render_video). `expose` then films the clean
scene through a Poisson-Gaussian sensor model, dark (mean ~5 % of full scale) or in daylight,
so the raw dark input is genuinely harder than an enhanced one while staying learnable.
"""
from __future__ import annotations

import numpy as np

CONTRAST = (0.45, 0.65)  # actor vs background contrast; at 0.18-0.35 no model beat chance on the test split (measured)
SHAKE_PX = 2  # largest camera-shake offset in pixels (at size 64)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


# ---------------------------------------------------------------- motions
# Each motion maps frame times t (0..T-1) to the actor's offset from its start
# (dx, dy in units of the frame size), a scale factor and a rotation (radians).
# Speeds are per frame, so they do not depend on the container's frame rate.

def _still(t):
    z = np.zeros_like(t)
    return z, z.copy(), np.ones_like(t), z.copy()


def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _drink(t, rng):  # stationary, pulsing rhythm (sips)
    dx, dy, _, rot = _still(t)
    period, phase = rng.uniform(7, 11), rng.uniform(0, 2 * np.pi)
    return dx, dy, 1 + 0.25 * np.sin(2 * np.pi * t / period + phase), rot


def _jump(t, rng):  # repeated upward hops, sharp at the ground
    dx, _, scale, rot = _still(t)
    height, period = rng.uniform(0.15, 0.22), rng.uniform(8, 12)
    dy = -height * np.abs(np.sin(np.pi * t / period + rng.uniform(0, np.pi)))
    return dx, dy, scale, rot


def _pick(t, rng):  # one dip down and back up
    dx, _, scale, rot = _still(t)
    n = len(t)
    start, dur = rng.uniform(0, 0.2) * n, rng.uniform(0.6, 0.8) * n
    dy = rng.uniform(0.2, 0.3) * np.sin(np.pi * np.clip((t - start) / dur, 0, 1))
    return dx, dy, scale, rot


def _pour(t, rng):  # circular orbit, about one revolution, either sense
    _, _, scale, rot = _still(t)
    radius = rng.uniform(0.12, 0.18)
    omega = rng.choice([-1, 1]) * 2 * np.pi / (len(t) * rng.uniform(0.8, 1.2))
    phase = rng.uniform(0, 2 * np.pi)
    dx = radius * (np.cos(omega * t + phase) - np.cos(phase))
    dy = radius * (np.sin(omega * t + phase) - np.sin(phase))
    return dx, dy, scale, rot


def _push(t, rng):  # approaching: grows steadily
    dx, dy, _, rot = _still(t)
    growth = rng.uniform(0.5, 0.8)
    return dx, dy, 0.75 * np.exp(growth * t / len(t)), rot


def _run(t, rng):  # fast horizontal translation, either direction
    _, dy, scale, rot = _still(t)
    return rng.choice([-1, 1]) * rng.uniform(0.022, 0.03) * t, dy, scale, rot


def _sit(t, rng, sign=1.0):  # one move down (sign=-1: up), then still
    dx, _, scale, rot = _still(t)
    n = len(t)
    start, dur = rng.uniform(0, 0.35) * n, rng.uniform(0.3, 0.5) * n
    dy = sign * rng.uniform(0.2, 0.3) * _smoothstep((t - start) / dur)
    return dx, dy, scale, rot


def _stand(t, rng):
    return _sit(t, rng, sign=-1.0)


def _turn(t, rng):  # rotates in place, half a turn or more
    dx, dy, scale, _ = _still(t)
    return dx, dy, scale, rng.choice([-1, 1]) * rng.uniform(1.0, 1.5) * np.pi * t / len(t)


def _walk(t, rng):  # slow horizontal translation with a gait bob
    _, _, scale, rot = _still(t)
    dx = rng.choice([-1, 1]) * rng.uniform(0.008, 0.012) * t
    dy = -0.025 * np.abs(np.sin(np.pi * t / rng.uniform(3.5, 4.5)))
    return dx, dy, scale, rot


def _wave(t, rng):  # fast horizontal oscillation
    _, dy, scale, rot = _still(t)
    amp, period = rng.uniform(0.08, 0.12), rng.uniform(5, 8)
    return amp * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)), dy, scale, rot


MOTIONS = {"Drink": _drink, "Jump": _jump, "Pick": _pick, "Pour": _pour,
           "Push": _push, "Run": _run, "Sit": _sit, "Stand": _stand,
           "Turn": _turn, "Walk": _walk, "Wave": _wave}


# ---------------------------------------------------------------- rendering

def _upsample(grid: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a (h, w, c) grid to (size, size, c)."""
    h, w = grid.shape[:2]
    ys, xs = np.linspace(0, h - 1, size), np.linspace(0, w - 1, size)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x1] * fx
    bot = grid[y1][:, x0] * (1 - fx) + grid[y1][:, x1] * fx
    return top * (1 - fy) + bot * fy


def _colour(rng, lum: float) -> np.ndarray:
    """A random hue scaled to the given luminance."""
    c = rng.uniform(0.25, 1.0, 3).astype(np.float32)
    return np.clip(c * lum / float(LUMA @ c), 0.0, 1.0)


def _ellipse_alpha(yy, xx, cy, cx, a, b, angle):
    """Soft (about 1 px anti-aliased) ellipse coverage."""
    cos, sin = np.cos(angle), np.sin(angle)
    u = (xx - cx) * cos + (yy - cy) * sin
    v = -(xx - cx) * sin + (yy - cy) * cos
    r = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    return np.clip((1.0 - r) * min(a, b) + 0.5, 0.0, 1.0)[..., None]


def _background(rng, size: int, level: float) -> np.ndarray:
    """Smooth multi-octave noise, a gradient and a few static shapes."""
    tint = rng.uniform(0.7, 1.3, 3).astype(np.float32)
    img = np.zeros((size, size, 3), np.float32)
    for cells, amp in ((3, 0.12), (6, 0.08), (12, 0.05)):
        img += amp * _upsample(rng.uniform(-1, 1, (cells, cells, 3)), size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ang = rng.uniform(0, 2 * np.pi)
    img += (0.12 * ((xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang)))[..., None]
    for _ in range(rng.integers(2, 5)):
        cy, cx = rng.uniform(0, size, 2)
        a, b = rng.uniform(0.05, 0.2, 2) * size
        alpha = _ellipse_alpha(yy * size, xx * size, cy, cx, a, b, rng.uniform(0, np.pi))
        img = img * (1 - alpha) + alpha * (img + rng.uniform(-0.15, 0.15))
    return np.clip(level * tint + img, 0.0, 1.0)


def _shake(rng, frames: int, px: int) -> np.ndarray:
    """Smooth random walk of integer (dy, dx) offsets within +-px."""
    walk = np.cumsum(rng.normal(0, 0.4, (frames, 2)), axis=0)
    walk -= walk.mean(axis=0)
    return np.clip(np.round(walk), -px, px).astype(int)


def _place(rng, offsets: np.ndarray, extent: float, size: int) -> float:
    """A random start coordinate keeping the whole trajectory inside the frame."""
    lo, hi = extent - offsets.min(), size - extent - offsets.max()
    return float(rng.uniform(lo, hi)) if hi > lo else (lo + hi) / 2


def render_video(motion: str, rng: np.random.Generator, size: int, frames: int) -> np.ndarray:
    """Render a clean (bright, noise-free) clip as float32 (T, H, W, 3) in [0, 1]."""
    t = np.arange(frames, dtype=np.float64)
    shake_px = max(1, round(SHAKE_PX * size / 64))
    # Appearance first, in the same draw order for every class.
    level = rng.uniform(0.25, 0.5)
    bg = _background(rng, size + 2 * shake_px, level)
    contrast = rng.uniform(*CONTRAST) * (1 if rng.random() < 0.75 else -1)
    actor_rgb = _colour(rng, np.clip(level + contrast, 0.05, 0.95))
    a = rng.uniform(0.10, 0.16) * size
    b = a * rng.uniform(0.45, 0.7)
    angle0 = rng.uniform(0, np.pi)
    head_rgb = _colour(rng, np.clip(level + contrast * rng.uniform(0.6, 1.4), 0.05, 0.95))
    distractors = _distractors(rng, level, size)
    light = _light(rng, size)
    shake = _shake(rng, frames, shake_px) + shake_px
    # Then the class's motion.
    dx, dy, scale, rot = MOTIONS[motion](t, rng)
    extent = (a + 0.5 * b) * scale.max()  # body semi-axis plus head
    cx = _place(rng, dx * size, extent, size) + dx * size
    cy = _place(rng, dy * size, extent, size) + dy * size

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    front = [d for d in distractors if d["front"]]
    back = [d for d in distractors if not d["front"]]
    video = np.empty((frames, size, size, 3), np.float32)
    for i in range(frames):
        sy, sx = shake[i]
        img = bg[sy:sy + size, sx:sx + size].copy()
        for d in back:
            img = _draw_distractor(img, d, i, yy, xx, size)
        ang = angle0 + rot[i]
        aa, bb = a * scale[i], b * scale[i]
        body = _ellipse_alpha(yy, xx, cy[i], cx[i], aa, bb, ang)
        img = img * (1 - body) + body * actor_rgb
        hy, hx = cy[i] + aa * np.sin(ang), cx[i] + aa * np.cos(ang)
        head = _ellipse_alpha(yy, xx, hy, hx, 0.5 * bb, 0.5 * bb, 0.0)
        img = img * (1 - head) + head * head_rgb
        for d in front:
            img = _draw_distractor(img, d, i, yy, xx, size)
        video[i] = img * light
    return video


def _distractors(rng, level: float, size: int) -> list[dict]:
    """One or two shapes drifting and wobbling across the frame, in front of the actor or behind."""
    distractors = []
    for _ in range(int(rng.integers(1, 3))):
        pos = rng.uniform(0.1, 0.9, 2) * size
        speed = rng.uniform(0.0, 0.02) * size
        heading = rng.uniform(0, 2 * np.pi)
        distractors.append(dict(
            pos=pos, vel=speed * np.array([np.sin(heading), np.cos(heading)]),
            r=rng.uniform(0.05, 0.09) * size, square=rng.random() < 0.5,
            rgb=_colour(rng, np.clip(level + rng.uniform(-0.25, 0.3), 0.05, 0.95)),
            wobble=rng.uniform(0, 0.04) * size, wobble_period=rng.uniform(4, 16),
            front=rng.random() < 0.5))
    return distractors


def _light(rng, size: int) -> np.ndarray:
    """(size, size, 1) uneven lighting: a Gaussian pool over a floor, so shadows hide detail."""
    light_c = rng.uniform(0.1, 0.9, 2) * size
    light_s = rng.uniform(0.4, 0.9) * size
    light_floor = rng.uniform(0.15, 0.45)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return (light_floor + (1 - light_floor) * np.exp(-((yy - light_c[0]) ** 2 + (xx - light_c[1]) ** 2)
                                                     / (2 * light_s ** 2)))[..., None]


def _draw_distractor(img, d, i, yy, xx, size):
    pos = d["pos"] + d["vel"] * i
    pos = pos + d["wobble"] * np.sin(2 * np.pi * i / d["wobble_period"])
    pos = size - np.abs(size - np.abs(pos) % (2 * size))  # bounce off the edges
    if d["square"]:
        dist = np.maximum(np.abs(yy - pos[0]), np.abs(xx - pos[1]))
        alpha = np.clip(d["r"] - dist + 0.5, 0.0, 1.0)[..., None]
    else:
        alpha = _ellipse_alpha(yy, xx, pos[0], pos[1], d["r"], d["r"], 0.0)
    return img * (1 - alpha) + alpha * d["rgb"]


# Sensor exposures: the clean clip's mean is scaled to `mean` (share of full scale);
# photon counts are Poisson at `gain` digital levels per photo-electron, plus Gaussian
# read noise of `read` levels; then rounding and clipping to uint8.
EXPOSURES = {
    # night: a high-ISO small sensor, 3.5-7 % mean
    "dark": dict(mean=(0.035, 0.07), gain=(0.4, 0.9), read=(1.0, 2.0)),
    # daylight: the same scenes at normal exposure, many photons, light noise
    "day": dict(mean=(0.35, 0.5), gain=(0.03, 0.08), read=(0.3, 0.8)),
}


def expose(video: np.ndarray, rng: np.random.Generator, light: str = "dark") -> np.ndarray:
    """Scale a clean clip to the `light` exposure (see EXPOSURES) with Poisson-Gaussian noise."""
    ranges = EXPOSURES[light]
    target = rng.uniform(*ranges["mean"]) * 255
    gain = rng.uniform(*ranges["gain"])
    read_sigma = rng.uniform(*ranges["read"])
    levels = video * (target / max(float(video.mean()), 1e-6))
    electrons = rng.poisson(levels / gain)
    noisy = electrons * gain + rng.normal(0.0, read_sigma, video.shape)
    return np.clip(np.round(noisy), 0, 255).astype(np.uint8)
