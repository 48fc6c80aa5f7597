"""Views: a finite, seeded set of crops and flips per clip.

Cached teacher logits are right only for the view the teacher saw, so the
augmentation is not free-running: view v of clip c is a pure function of
(data.view_seed, c, v) and the clip size, and any process recomputes it. View 0
is the centre square of side = short side, unflipped; views 1..V-1 are squares
of side uniform(min_scale, 1) x short side at a uniform position, flipped with
p = 0.5. Every view is then resized to crop x crop. The same geometry applies
to original and enhanced clips, which are pixel-aligned.

Views are drawn on the CPU (`view_params`) and made where the model runs: a dataset item
ships the clip's uint8 pixels (`window`: the short-side square that holds the view's box,
so items of one clip shape stack) and the box within them (`Windows`); after the batch is
copied to the device, `make_views` cuts, resizes, flips and standardises every view of the
batch. The CPU runs the same function, so teacher, soft labels, student and evaluation see
the same pixels for the same (clip, view) on any device. `apply_view` is the per-clip
reference that `make_views` is tested against (and what `predict` uses).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import NamedTuple

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
    """View `view` of clip `clip_id` for an H x W clip; `views_cfg` is a DataConfig.

    Memoised on the values it depends on (data.view_seed, data.min_scale, clip, view, H, W; never on
    the config object, so a changed config draws anew): drawing costs ~60 us (a seeded generator per
    call), a share of the loader's time per item when the views run on a GPU (benchmarks/loader.py)."""
    if not 0 <= view < views_cfg.views:
        raise ValueError(f"view {view} out of range: data.views = {views_cfg.views}")
    return _drawn_view(int(views_cfg.view_seed), float(views_cfg.min_scale), int(clip_id), int(view), int(H), int(W))


@functools.lru_cache(maxsize=1 << 16)  # ~350 bytes an entry: 65536 (clip, view) pairs in ~23 MB per process
def _drawn_view(view_seed: int, min_scale: float, clip_id: int, view: int, H: int, W: int) -> View:
    """`view_params` without the range check or the memo (`_drawn_view.__wrapped__`: the draw itself)."""
    if view == 0:
        return _centre_square(H, W)
    rng = np.random.default_rng([view_seed, clip_id, view])
    short = min(H, W)
    scale = rng.uniform(min_scale, 1.0)
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


def test_views(H: int, W: int, crops: int, scale: float) -> list[View]:
    """The test-time views, one definition for `evaluate`'s multi-view, soft labels' view 0, `predict`
    and long-video windows: one crop is the centre square of the short side (view 0); more are
    `multi_view_crops` of side `scale` x the short side (evaluate.crop_scale, < 1 by default, so
    that on square frames too the crops differ)."""
    return multi_view_crops(H, W, 1) if crops == 1 else multi_view_crops(H, W, crops, scale=scale)


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


# ----------------------------------------------------------------------------- views made in batch

class Windows(NamedTuple):
    """What a dataset item ships instead of a float view: uint8 pixels and the boxes to cut from them.
    Batched by the DataLoader's collate (and pinned on CUDA) like a tuple of tensors."""
    pixels: torch.Tensor  # uint8 (T, h, w, 3); batched (B, T, h, w, 3)
    boxes: torch.Tensor  # int64 (5,) or (V, 5) rows (y0, x0, h, w, flip) within `pixels`; batched (B, ...)


def box_row(view: View, dy: int = 0, dx: int = 0) -> list[int]:
    """A view as a `Windows.boxes` row, its box moved by (-dy, -dx) into a window that starts there."""
    return [view.y0 - dy, view.x0 - dx, view.h, view.w, int(view.flip)]


def window(clip: torch.Tensor, view: View) -> Windows:
    """The short-side square of a (T, H, W, 3) clip that holds `view`'s box, and the box within it.

    Views are squares no larger than the short side, so the square always exists; it starts at
    the box where it can (else it ends at the clip's edge), and every clip of one shape gives
    windows of one shape: a batch stacks. A square clip is its own window (no copy)."""
    T, H, W, _ = clip.shape
    side = min(H, W)
    if view.y0 < 0 or view.x0 < 0 or view.y0 + view.h > H or view.x0 + view.w > W or max(view.h, view.w) > side:
        raise ValueError(f"{view} does not fit in a {H}x{W} clip")
    dy, dx = min(view.y0, H - side), min(view.x0, W - side)
    return Windows(clip[:, dy:dy + side, dx:dx + side], torch.tensor(box_row(view, dy, dx), dtype=torch.int64))


def _affine(stats: dict | None, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, bias), each (3, 1, 1, 1): pixel value v in 0..255 -> (v / 255 - mean) / std."""
    mean = torch.tensor(stats["mean"] if stats else [0.0] * 3, dtype=torch.float64)
    std = torch.tensor(stats["std"] if stats else [1.0] * 3, dtype=torch.float64)
    scale, bias = 1.0 / (255.0 * std), -mean / std
    return (scale.to(device, torch.float32).reshape(3, 1, 1, 1), bias.to(device, torch.float32).reshape(3, 1, 1, 1))


def make_views(pixels: torch.Tensor, boxes: torch.Tensor, crop: int, stats: dict | None = None) -> torch.Tensor:
    """uint8 pixels (B, T, h, w, 3) and boxes (B, 5) -> float32 views (B, 3, T, crop, crop), on the
    pixels' device; boxes (B, V, 5) (V views of each clip) -> (B, V, 3, T, crop, crop).

    Each view: its box cut out, resized to crop x crop (bilinear, align_corners=False, no
    antialias: `apply_view`'s), mirrored left-right if flip, then (v / 255 - mean) / std with
    `stats` (pixel / 255 without). The 255 and the statistics fold into one multiply-add after
    the resize (they commute with it), so a view equals `apply_view` + `normalize` up to float32
    rounding: within 1e-6 in pixel / 255 units, i.e. 1e-6 / std once standardised (tests/test_views.py;
    the reference's clamp to [0, 1] after the resize only ever removed such rounding). `boxes` is read
    on the CPU (keep it there: it is a few integers).

    A loop over the views, each a slice, one uint8 -> float copy into channel-first order, one
    `F.interpolate` and one multiply-add into the output, rather than one `grid_sample` of
    the batch: on the CPU the loop measured ~4x faster (see benchmarks/RESULTS.md, issue 22), and
    on a GPU its few small kernels per view are a small share of a training step.

    On one CPU core (16 x 128 x 128 windows, crop 112; `benchmarks/loader.py` prints the split) the
    resize takes about half the time and the uint8 -> float copy, the multiply-add and the flips the
    rest: a few passes over 2.4 MB of float32 per view; memory traffic and the resize bound it, not Python.
    Measured and not used (issue 22, second round): torch's channels-last resize with the 3 x T planes
    as its channels is ~4x faster than this one, but the pixels must be transposed to (h, w, 3T) and
    the result back, which costs what it saves; H by that kernel and W by `linear`, ~1.05x; the
    affine before the resize, the resize written into the output and the flip done on the uint8 box,
    ~1.1x, but a flipped view then differs from the reference by up to 7e-6 (the mirrored sample
    positions round differently); the uint8 (AVX2) resize, ~2.4x faster, is off by up to a whole grey
    level (a fifth of its values by more than half a level), more than the 0.5 / 255 a view may be
    allowed. So the views stay float32 and equal to the reference to float rounding.
    """
    pixels = torch.as_tensor(pixels)
    boxes = torch.as_tensor(boxes).cpu()
    if pixels.ndim != 5 or pixels.shape[-1] != 3 or pixels.dtype != torch.uint8:
        raise ValueError(f"pixels: expected uint8 (B, T, h, w, 3), got {pixels.dtype} {tuple(pixels.shape)}")
    if boxes.shape[0] != pixels.shape[0] or boxes.shape[-1] != 5 or boxes.ndim not in (2, 3):
        raise ValueError(f"boxes: expected ({pixels.shape[0]}, [V,] 5), got {tuple(boxes.shape)}")
    B, T, h, w, _ = pixels.shape
    per_clip = boxes.shape[1] if boxes.ndim == 3 else 1
    rows = boxes.reshape(-1, 5).tolist()
    for y0, x0, bh, bw, _ in rows:
        if y0 < 0 or x0 < 0 or bh < 1 or bw < 1 or y0 + bh > h or x0 + bw > w:
            raise ValueError(f"box (y0={y0}, x0={x0}, h={bh}, w={bw}) does not fit in {h}x{w} pixels")
    scale, bias = _affine(stats, pixels.device)
    out = torch.empty(len(rows), 3, T, crop, crop, dtype=torch.float32, device=pixels.device)
    for k, (y0, x0, bh, bw, flip) in enumerate(rows):
        box = pixels[k // per_clip, :, y0:y0 + bh, x0:x0 + bw, :]
        x = torch.empty(3, T, bh, bw, dtype=torch.float32, device=pixels.device)
        x.copy_(box.permute(3, 0, 1, 2))  # channel-first: the frames' 3 x T planes, one resize
        if (bh, bw) != (crop, crop):
            x = F.interpolate(x.view(1, 3 * T, bh, bw), size=(crop, crop), mode="bilinear",
                              align_corners=False, antialias=False).view(3, T, crop, crop)
        if flip:
            x = x.flip(-1)
        torch.mul(x, scale, out=out[k]).add_(bias)  # (addcmul with these broadcasts measured 2x slower)
    return out.view(B, per_clip, 3, T, crop, crop) if boxes.ndim == 3 else out


@dataclass(frozen=True)
class ViewMaker:
    """What turns a batch of `Windows` into model input: the crop and the model's input statistics.
    A dataset that ships `Windows` offers one as `view_maker`."""
    crop: int
    stats: dict | None = None

    def __call__(self, windows: Windows, device=None) -> torch.Tensor:
        """The batch's views on `device` (default: where the pixels are); the uint8 pixels cross to
        it first (non-blocking from pinned memory), the boxes stay on the CPU."""
        pixels = windows.pixels if device is None else windows.pixels.to(device, non_blocking=True)
        return make_views(pixels, windows.boxes, self.crop, self.stats)

    def one(self, windows: Windows) -> torch.Tensor:
        """The view(s) of one dataset item (no batch dimension), on the CPU: for tests and checks."""
        return make_views(windows.pixels[None], windows.boxes[None], self.crop, self.stats)[0]
