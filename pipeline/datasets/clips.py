"""Datasets over the clip cache that draw views: what teacher, student and evaluation see.

Training draws one cached temporal position (clip) per (seed, epoch, video) and one
view per (seed, epoch, clip) — pure functions, so a resumed
run and every DataLoader worker draw the same views — and the student gets the
cached teacher logits of exactly that view.

Items ship uint8 pixels and the view's box (`views.Windows`), not float views: the views are
made in batch where the model runs (`views.make_views`, through the dataset's `view_maker`),
so a DataLoader worker only reads, and the same function makes every stage's views.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import first_line
from ..config import normalize_mode
from ..names import CLIP_INDEX
from .shards import ClipDataset, ShardError
from .views import ViewMaker, Windows, box_row, clip_views, test_views, view_params, window


def clips_index(cache_clips: Path) -> Path:
    return Path(cache_clips) / CLIP_INDEX


def draw_view(seed: int, epoch: int, clip_id: int, views: int) -> int:
    """The view a training step uses for this clip in this epoch."""
    return int(np.random.default_rng([int(seed), int(epoch), int(clip_id), 7]).integers(views))


def draw_clip(seed: int, epoch: int, first_clip_id: int, clips: int) -> int:
    """Which of a video's cached temporal positions a training step uses in this epoch."""
    return int(np.random.default_rng([int(seed), int(epoch), int(first_clip_id), 11]).integers(clips))


def video_groups(clips: ClipDataset) -> list[list[int]]:
    """Positions in `clips` grouped by video, in first-seen order (a video's clips are its temporal positions)."""
    groups: dict[str, list[int]] = {}
    for i, video in enumerate(getattr(clips, "videos", None) or range(len(clips))):
        groups.setdefault(video, []).append(i)
    return list(groups.values())


def split_statistics(index_path: Path, which: str, data_cfg) -> dict | None:
    """The train clips' mean/std of stream `which` ("original" | "enhanced") from the clip index,
    or None when data.normalize is "none" (or the index predates the statistics). Which statistics a
    model is standardised with under each mode is `training.weights.input_normalization`'s choice."""
    if normalize_mode(getattr(data_cfg, "normalize", "none")) == "none":
        return None
    return (json.loads(Path(index_path).read_text()).get("normalize") or {}).get(which)


class ShipsUint8:
    """A clip dataset whose items ship uint8 pixels and boxes (`views.Windows`): `view_maker` turns a
    batch into float views of side `crop` standardised with `stats`; `item_bytes` is what one item
    reads (a whole clip), what `loaders` sizes a pass by."""
    clips: ClipDataset
    crop: int
    stats: dict | None

    @property
    def view_maker(self) -> ViewMaker:
        return ViewMaker(self.crop, self.stats)

    @property
    def item_bytes(self) -> int:
        return clip_bytes(self.clips)


class ViewDataset(ShipsUint8, Dataset):
    """(x, y, extra) with x the `Windows` of one seeded view of each clip per epoch: the short-side
    square of uint8 pixels that holds the view's box (T, S, S, 3), and the box (5,) within it;
    `view_maker` turns a batch of them into float (B, 3, T, crop, crop).

    `logits` (N, V, K), rows by global clip id: extra is the teacher's logits for the
    drawn view (student); without logits extra is (clip id, view) (teacher).
    `view` fixes the view instead of drawing one (0 = centre crop, for validation).
    `per_video`: items are videos, and each epoch draws one of the video's cached temporal
    positions (clips) as well as a view: temporal jitter at the cost of one clip per video.
    `stats` ({"mean", "std"}) standardises the views (`view_maker` reads it when called, so it
    may be set after construction).
    """

    def __init__(self, clips: ClipDataset, data_cfg, seed: int = 0, logits: np.ndarray | None = None,
                 view: int | None = None, per_video: bool = False, stats: dict | None = None):
        self.clips, self.cfg, self.seed, self.logits, self.fixed = clips, data_cfg, seed, logits, view
        self.stats, self.crop = stats, data_cfg.crop
        self.groups = video_groups(clips) if per_video else [[i] for i in range(len(clips))]
        T, H, W = clips.shape
        self.H, self.W = H, W
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.groups)

    def clip_of(self, i: int) -> int:
        """Position in `clips` of item i in this epoch."""
        group = self.groups[i]
        if len(group) == 1:
            return group[0]
        return group[draw_clip(self.seed, self.epoch, self.clips.clip_ids[group[0]], len(group))]

    def view_of(self, i: int) -> int:
        cid = self.clips.clip_ids[self.clip_of(i)]
        return self.fixed if self.fixed is not None else draw_view(self.seed, self.epoch, cid, self.cfg.views)

    def __getitem__(self, i: int):
        v = self.view_of(i)
        i = self.clip_of(i)
        clip, y, _ = self.clips[i]
        cid = self.clips.clip_ids[i]
        x = window(clip, view_params(cid, v, self.H, self.W, self.cfg))
        if self.logits is not None:
            return x, y, torch.from_numpy(np.asarray(self.logits[cid, v], dtype=np.float32))
        return x, y, torch.tensor([cid, v])


def clip_bytes(clips: ClipDataset) -> int:
    T, H, W = clips.shape
    return T * H * W * 3


def all_boxes(views) -> torch.Tensor:
    """(V, 5) `Windows` boxes of views of a whole clip."""
    return torch.tensor([box_row(v) for v in views], dtype=torch.int64)


class ClipAllViews(ShipsUint8, Dataset):
    """(x, clip id) with x the whole uint8 clip and the boxes of its V views (`Windows`, boxes (V, 5)):
    one clip read per item; `view_maker` makes (B, V, 3, T, crop, crop) of a batch."""

    def __init__(self, clips: ClipDataset, data_cfg, stats: dict | None = None):
        self.clips, self.cfg, self.stats, self.crop = clips, data_cfg, stats, data_cfg.crop
        _, self.H, self.W = clips.shape

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        clip, _, _ = self.clips[i]
        cid = self.clips.clip_ids[i]
        return Windows(clip, all_boxes(clip_views(cid, self.H, self.W, self.cfg))), cid


class CropsDataset(ShipsUint8, Dataset):
    """Evaluation: (x, y, clip id) with x the whole uint8 clip and the boxes of its `crops` spatial
    crops (`Windows`, boxes (crops, 5)); `view_maker` makes (B, crops, 3, T, crop, crop) of a batch."""

    def __init__(self, clips: ClipDataset, crop: int, crops: int, stats: dict | None = None,
                 scale: float = 1.0):
        self.clips, self.crop, self.stats = clips, crop, stats
        _, H, W = clips.shape
        self.views = test_views(H, W, crops, scale)
        self.boxes = all_boxes(self.views)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        clip, y, _ = self.clips[i]
        return Windows(clip, self.boxes), y, self.clips.clip_ids[i]


def read_logits(path: Path) -> tuple[np.ndarray, dict]:
    """The whole (N, V, K) logits array (small: N x V x K floats) and its attrs."""
    try:
        with h5py.File(path, "r") as f:
            return f["logits"][...], dict(f.attrs)
    except FileNotFoundError:
        raise ShardError(f"{path}: soft labels missing; run `dlkdd soft-labels`") from None
    except (OSError, KeyError) as e:
        raise ShardError(f"{path}: unreadable soft labels ({first_line(e)})") from None
