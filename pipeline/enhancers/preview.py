"""`dlkdd preview`: a PNG grid, original above enhanced, to judge the enhancer at a glance."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..datasets.decode import decode_clips
from ..datasets.shards import read_clip
from ..engine.atomic import atomic_path
from ..names import CLIP_INDEX
from .apply import enhance_frames


def grid(pairs: list[tuple], frames: int) -> np.ndarray:
    """uint8 image: for each (name, original (T,H,W,3), enhanced[, curve map]) a row of `frames`
    frames per array (the curve map, when given, is a third row)."""
    rows = []
    for _, *clips in pairs:
        orig = clips[0]
        pick = np.linspace(0, len(orig) - 1, min(frames, len(orig))).round().astype(int)
        for clip in clips:
            tiles = [np.pad(clip[t], ((1, 1), (1, 1), (0, 0)), constant_values=255) for t in pick]
            rows.append(np.concatenate(tiles, axis=1))
        rows.append(np.full((4, rows[-1].shape[1], 3), 255, np.uint8))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(rows[:-1], axis=0)


def curve_images(enhancer, clip: np.ndarray) -> np.ndarray | None:
    """The enhancer's curve map for each frame of a uint8 clip (T, H, W, 3), as uint8 grey images:
    the brightening strength -r averaged over channels (and Zero-DCE's 8 maps), stretched over
    the clip's own min..max so that spatial variation is visible. None for parameter-free kinds."""
    if not hasattr(enhancer, "curves"):
        return None
    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2).float() / 255
        strength = -enhancer.cpu().eval().curves(x).mean(1)  # (T, H, W); r < 0 brightens
    lo, hi = float(strength.min()), float(strength.max())
    grey = ((strength - lo) / max(hi - lo, 1e-8) * 255).round().byte().numpy()
    return np.repeat(grey[..., None], 3, axis=-1)


def with_curves(pairs, enhancer) -> list[tuple]:
    """Each (name, original, enhanced) pair with the enhancer's curve map appended, when it has one."""
    if enhancer is None or not hasattr(enhancer, "curves"):
        return pairs
    return [(name, orig, enh, curve_images(enhancer, orig)) for name, orig, enh in pairs]


def save_png(image: np.ndarray, pairs, out: Path, title: str) -> Path:
    import matplotlib  # deferred: matplotlib is slow to import, and only this function draws
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = image.shape[:2]
    scale = max(1.0, 640 / w)
    fig = plt.figure(figsize=(w * scale / 100, h * scale / 100 + 0.4), dpi=100)
    ax = fig.add_axes([0, 0, 1, h * scale / (h * scale + 40)])
    ax.imshow(image, interpolation="nearest")
    ax.axis("off")
    fig.suptitle(title, fontsize=8)
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def cache_pairs(clips_dir: Path, n: int, split: str = "test") -> list[tuple[str, np.ndarray, np.ndarray]]:
    """The first clip of `n` videos spread over the cache (one per class first)."""
    index = json.loads((clips_dir / CLIP_INDEX).read_text())
    chosen, seen = [], set()
    for c in index["clips"]:
        if c["split"] == split and c["clip"] == 0 and c["label"] not in seen:
            chosen.append(c)
            seen.add(c["label"])
    chosen = chosen[:n]
    return [(c["video"], *read_clip(clips_dir / c["shard"], c["row"], "both")) for c in chosen]


def video_pairs(paths: list[str], enhancer, T: int, short_side: int, device: str = "cpu"):
    pairs = []
    for p in paths:
        frames, _ = decode_clips(p, T, 1, short_side)
        clip = frames[0]
        pairs.append((p, clip, enhance_frames(enhancer, clip, device=device)))
    return pairs


def describe(pairs) -> str:
    o = np.mean([p[1].mean() for p in pairs]) / 255
    e = np.mean([p[2].mean() for p in pairs]) / 255
    text = f"rows: original (mean {o:.3f}), enhanced (mean {e:.3f})"
    if pairs and len(pairs[0]) > 3:
        return text + ", curve map (brighter = lifted more)"
    return text
