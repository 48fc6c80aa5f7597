"""Views: a finite, seeded set of crops and flips per clip.

Cached teacher logits are right only for the view the teacher saw, so the
augmentation is not free-running: view v of clip c is a pure function of
(data.view_seed, c, v) and the clip size, and any process recomputes it. View 0
is the centre square of side = short side, unflipped; views 1..V-1 are squares
of side uniform(min_scale, 1) x short side at a uniform position, flipped with
p = 0.5. Every view is then resized to crop x crop. The same geometry applies
to original and enhanced clips, which are pixel-aligned.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class View:
    y0: int  # top row of the box in the stored clip
    x0: int  # left column of the box
    h: int  # box height, pixels
    w: int  # box width, pixels
    flip: bool  # mirror left-right after resizing


def _centre_square(H: int, W: int) -> View:
    side = min(H, W)
    return View((H - side) // 2, (W - side) // 2, side, side, False)


def view_params(clip_id: int, view: int, H: int, W: int, views_cfg) -> View:
    """View `view` of clip `clip_id` for an H x W clip; `views_cfg` is a DataConfig."""
    if not 0 <= view < views_cfg.views:
        raise ValueError(f"view {view} out of range: data.views = {views_cfg.views}")
    if view == 0:
        return _centre_square(H, W)
    rng = np.random.default_rng([int(views_cfg.view_seed), int(clip_id), int(view)])
    short = min(H, W)
    scale = rng.uniform(views_cfg.min_scale, 1.0)
    side = min(short, max(1, round(scale * short)))
    y0 = int(rng.integers(0, H - side + 1))
    x0 = int(rng.integers(0, W - side + 1))
    flip = bool(rng.random() < 0.5)
    return View(y0, x0, side, side, flip)


def clip_views(clip_id: int, H: int, W: int, views_cfg) -> list[View]:
    """All V views of one clip, view 0 first (the order of the cached logits)."""
    return [view_params(clip_id, v, H, W, views_cfg) for v in range(views_cfg.views)]


def fit_size(frames, size: tuple[int, int]) -> np.ndarray:
    """uint8 clips (clips, T, h, w, 3) -> (clips, T, H, W, 3): resized (bilinear, antialiased) when a
    video's frame size differs from the cache's (H, W). The one resize of both the enhance stage
    (training input) and `predict` (serving input), so the two cannot drift apart."""
    frames = np.asarray(frames)
    if frames.shape[2:4] == tuple(size):
        return frames
    c, t, h, w, _ = frames.shape
    x = torch.from_numpy(np.ascontiguousarray(frames)).reshape(c * t, h, w, 3).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    x = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return x.reshape(c, t, *size, 3).numpy()


def apply_view(clip, view: View, crop: int) -> torch.Tensor:
    """uint8 (T, H, W, 3) clip -> float32 (3, T, crop, crop) in [0, 1]: box, resize, flip."""
    clip = torch.as_tensor(clip)
    if clip.ndim != 4 or clip.shape[-1] != 3:
        raise ValueError(f"clip: expected (T, H, W, 3), got {tuple(clip.shape)}")
    H, W = clip.shape[1:3]
    if view.y0 < 0 or view.x0 < 0 or view.y0 + view.h > H or view.x0 + view.w > W:
        raise ValueError(f"{view} does not fit in a {H}x{W} clip")
    box = clip[:, view.y0:view.y0 + view.h, view.x0:view.x0 + view.w, :]
    x = box.permute(0, 3, 1, 2).float().div_(255.0)  # (T, 3, h, w): frames as a batch
    if (view.h, view.w) != (crop, crop):
        x = F.interpolate(x, size=(crop, crop), mode="bilinear", align_corners=False,
                          antialias=False).clamp_(0.0, 1.0)
    if view.flip:
        x = x.flip(-1)
    return x.permute(1, 0, 2, 3).contiguous()  # (3, T, crop, crop), as video models expect


def multi_view_crops(H: int, W: int, crops: int, crop: int | None = None, scale: float = 1.0) -> list[View]:
    """Evaluation crops: `crops` unflipped squares of side round(scale x short side), spread evenly along
    the long side (the short axis centred); on a square clip they run left to right.

    scale = 1: 1 -> the centre square (= view 0); 3 -> left/centre/right of a wide clip, but three
    identical boxes on a square one. scale < 1 (evaluate.crop_scale) makes the boxes differ on any
    clip, like the training views' random crops of scale data.min_scale..1.
    `crop` (the output size) does not change the boxes; apply_view resizes them.
    """
    if crops < 1:
        raise ValueError(f"crops must be >= 1, got {crops}")
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    side = max(1, min(min(H, W), round(scale * min(H, W))))
    if crops == 1:
        return [View((H - side) // 2, (W - side) // 2, side, side, False)]
    along_w = W >= H
    slack = (W if along_w else H) - side
    starts = [k * slack // (crops - 1) for k in range(crops)]  # floor: with odd crops the middle one is centred
    if along_w:
        return [View((H - side) // 2, s, side, side, False) for s in starts]
    return [View(s, (W - side) // 2, side, side, False) for s in starts]


def normalize(x: torch.Tensor, stats: dict | None) -> torch.Tensor:
    """Standardise network inputs with the statistics a model was trained with.

    `x`: float in [0, 1], channels at dim -4 ((3, T, H, W) or (N, 3, T, H, W)). `stats`: the
    `normalize` entry of a model's meta.json, {"mean": [r, g, b], "std": [r, g, b]} in [0, 1]
    pixel units, or None for a model trained on pixel / 255 (returned unchanged).
    """
    if not stats:
        return x
    shape = (3, 1, 1, 1)
    mean = torch.as_tensor(stats["mean"], dtype=x.dtype, device=x.device).reshape(shape)
    std = torch.as_tensor(stats["std"], dtype=x.dtype, device=x.device).reshape(shape)
    return (x - mean) / std
