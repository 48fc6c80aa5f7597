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

def _upsample(grid: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a (h, w, c) grid to (height, width, c)."""
    h, w = grid.shape[:2]
    ys, xs = np.linspace(0, h - 1, height), np.linspace(0, w - 1, width)
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


def _background(rng, height: int, width: int, level: float) -> np.ndarray:
    """Smooth multi-octave noise, a gradient and a few static shapes (sizes relative to the short side;
    on a square frame the draws and the pixels are those of the square generator)."""
    short, extent = min(height, width), np.array([height, width])
    tint = rng.uniform(0.7, 1.3, 3).astype(np.float32)
    img = np.zeros((height, width, 3), np.float32)
    for cells, amp in ((3, 0.12), (6, 0.08), (12, 0.05)):
        img += amp * _upsample(rng.uniform(-1, 1, (cells, cells, 3)), height, width)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yy, xx = yy / height, xx / width
    ang = rng.uniform(0, 2 * np.pi)
    img += (0.12 * ((xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang)))[..., None]
    for _ in range(rng.integers(2, 5)):
        cy, cx = rng.uniform(0, 1, 2) * extent
        a, b = rng.uniform(0.05, 0.2, 2) * short
        alpha = _ellipse_alpha(yy * height, xx * width, cy, cx, a, b, rng.uniform(0, np.pi))
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


def render_video(motion: str, rng: np.random.Generator, size: int, frames: int,
                 width: int | None = None, motion_rng: np.random.Generator | None = None) -> np.ndarray:
    """Render a clean (bright, noise-free) clip as float32 (T, H, W, 3) in [0, 1]: `size` x `size`, or
    `size` rows by `width` columns (ARID's 320x240: size 240, width 320). Sizes and speeds are relative
    to the short side, so a wide frame shows the same actor with more room around it.

    The scene (background, actor, distractors, light) is drawn from `rng`; the camera shake, the
    motion and where it starts from `motion_rng` when given (else `rng`): clips of one recording
    share `rng`'s state and differ in `motion_rng`, as ARID's clips cut from one recording do."""
    height, width = size, size if width is None else width
    size = min(height, width)  # the short side: what actor sizes and motions are relative to
    t = np.arange(frames, dtype=np.float64)
    shake_px = max(1, round(SHAKE_PX * size / 64))
    # Appearance first, in the same draw order for every class.
    level = rng.uniform(0.25, 0.5)
    bg = _background(rng, height + 2 * shake_px, width + 2 * shake_px, level)
    contrast = rng.uniform(*CONTRAST) * (1 if rng.random() < 0.75 else -1)
    actor_rgb = _colour(rng, np.clip(level + contrast, 0.05, 0.95))
    a = rng.uniform(0.10, 0.16) * size
    b = a * rng.uniform(0.45, 0.7)
    angle0 = rng.uniform(0, np.pi)
    head_rgb = _colour(rng, np.clip(level + contrast * rng.uniform(0.6, 1.4), 0.05, 0.95))
    distractors = _distractors(rng, level, height, width)
    light = _light(rng, height, width)
    rng = rng if motion_rng is None else motion_rng
    shake = _shake(rng, frames, shake_px) + shake_px
    # Then the class's motion.
    dx, dy, scale, rot = MOTIONS[motion](t, rng)
    extent = (a + 0.5 * b) * scale.max()  # body semi-axis plus head
    cx = _place(rng, dx * size, extent, width) + dx * size
    cy = _place(rng, dy * size, extent, height) + dy * size

    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    front = [d for d in distractors if d["front"]]
    back = [d for d in distractors if not d["front"]]
    video = np.empty((frames, height, width, 3), np.float32)
    bounds = np.array([height, width], np.float64)
    for i in range(frames):
        sy, sx = shake[i]
        img = bg[sy:sy + height, sx:sx + width].astype(np.float64)
        for d in back:
            img = _draw_distractor(img, d, i, yy, xx, bounds)
        ang = angle0 + rot[i]
        aa, bb = a * scale[i], b * scale[i]
        _blend_ellipse(img, yy, xx, cy[i], cx[i], aa, bb, ang, actor_rgb)
        hy, hx = cy[i] + aa * np.sin(ang), cx[i] + aa * np.cos(ang)
        _blend_ellipse(img, yy, xx, hy, hx, 0.5 * bb, 0.5 * bb, 0.0, head_rgb)
        for d in front:
            img = _draw_distractor(img, d, i, yy, xx, bounds)
        video[i] = img * light
    return video


def _distractors(rng, level: float, height: int, width: int) -> list[dict]:
    """One or two shapes drifting and wobbling across the frame, in front of the actor or behind."""
    distractors, size = [], min(height, width)
    for _ in range(int(rng.integers(1, 3))):
        pos = rng.uniform(0.1, 0.9, 2) * np.array([height, width])
        speed = rng.uniform(0.0, 0.02) * size
        heading = rng.uniform(0, 2 * np.pi)
        distractors.append(dict(
            pos=pos, vel=speed * np.array([np.sin(heading), np.cos(heading)]),
            r=rng.uniform(0.05, 0.09) * size, square=rng.random() < 0.5,
            rgb=_colour(rng, np.clip(level + rng.uniform(-0.25, 0.3), 0.05, 0.95)),
            wobble=rng.uniform(0, 0.04) * size, wobble_period=rng.uniform(4, 16),
            front=rng.random() < 0.5))
    return distractors


def _light(rng, height: int, width: int) -> np.ndarray:
    """(height, width, 1) uneven lighting: a Gaussian pool over a floor, so shadows hide detail."""
    light_c = rng.uniform(0.1, 0.9, 2) * np.array([height, width])
    light_s = rng.uniform(0.4, 0.9) * min(height, width)
    light_floor = rng.uniform(0.15, 0.45)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    return (light_floor + (1 - light_floor) * np.exp(-((yy - light_c[0]) ** 2 + (xx - light_c[1]) ** 2)
                                                     / (2 * light_s ** 2)))[..., None]


def _box(shape, cy: float, cx: float, reach: float) -> tuple[slice, slice]:
    """The rows and columns within `reach` pixels of (cy, cx), clipped to the frame: a shape whose
    coverage is exactly 0 beyond `reach` is blended there only (the same pixels, a fraction of the work
    on a 320x240 frame)."""
    h, w = shape[:2]
    rows = slice(max(0, int(np.floor(cy - reach))), max(0, min(h, int(np.ceil(cy + reach)) + 1)))
    cols = slice(max(0, int(np.floor(cx - reach))), max(0, min(w, int(np.ceil(cx + reach)) + 1)))
    return rows, cols


def _blend(img: np.ndarray, box: tuple[slice, slice], alpha: np.ndarray, rgb: np.ndarray) -> None:
    """img = img * (1 - alpha) + alpha * rgb inside `box`, in place (alpha is 0 outside it)."""
    img[box] = img[box] * (1 - alpha) + alpha * rgb


def _blend_ellipse(img, yy, xx, cy, cx, a, b, angle, rgb) -> None:
    # coverage is 0 once r > 1 + 0.5 / min(a, b), so beyond max(a, b) * (1 + 0.5 / min(a, b)) pixels
    box = _box(img.shape, cy, cx, max(a, b) * (1 + 0.5 / max(min(a, b), 1e-6)) + 1)
    _blend(img, box, _ellipse_alpha(yy[box], xx[box], cy, cx, a, b, angle), rgb)


def _draw_distractor(img, d, i, yy, xx, bounds):
    """Draw distractor `d` at frame i; `bounds` = (height, width) it bounces between."""
    pos = d["pos"] + d["vel"] * i
    pos = pos + d["wobble"] * np.sin(2 * np.pi * i / d["wobble_period"])
    pos = bounds - np.abs(bounds - np.abs(pos) % (2 * bounds))  # bounce off the edges
    if d["square"]:
        box = _box(img.shape, pos[0], pos[1], d["r"] + 1)
        dist = np.maximum(np.abs(yy[box] - pos[0]), np.abs(xx[box] - pos[1]))
        _blend(img, box, np.clip(d["r"] - dist + 0.5, 0.0, 1.0)[..., None], d["rgb"])
    else:
        _blend_ellipse(img, yy, xx, pos[0], pos[1], d["r"], d["r"], 0.0, d["rgb"])
    return img


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
