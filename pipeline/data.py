"""Datasets over the clip cache that apply views: what teacher, student and evaluation see.

Training draws one view per (seed, epoch, clip) — a pure function, so a resumed
run and every DataLoader worker draw the same views — and the student gets the
cached teacher logits of exactly that view.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import first_line
from .shards import ClipDataset
from .views import apply_view, clip_views, multi_view_crops, normalize, view_params

LOGITS_FILE = "logits.h5"


def clips_index(cache_clips: Path) -> Path:
    return Path(cache_clips) / "index.json"


def draw_view(seed: int, epoch: int, clip_id: int, views: int) -> int:
    """The view a training step uses for this clip in this epoch."""
    return int(np.random.default_rng([int(seed), int(epoch), int(clip_id), 7]).integers(views))


class ViewDataset(Dataset):
    """(x, y, extra) with x float (3, T, crop, crop): one seeded view of each clip per epoch.

    `logits` (N, V, K), rows by global clip id: extra is the teacher's logits for the
    drawn view (student); without logits extra is (clip id, view) (teacher).
    `view` fixes the view instead of drawing one (0 = centre crop, for validation).
    """

    def __init__(self, clips: ClipDataset, data_cfg, seed: int = 0, logits: np.ndarray | None = None,
                 view: int | None = None):
        self.clips, self.cfg, self.seed, self.logits, self.fixed = clips, data_cfg, seed, logits, view
        T, H, W = clips.shape
        self.H, self.W = H, W
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def view_of(self, i: int) -> int:
        cid = self.clips.clip_ids[i]
        return self.fixed if self.fixed is not None else draw_view(self.seed, self.epoch, cid, self.cfg.views)

    def __getitem__(self, i: int):
        clip, y, _ = self.clips[i]
        cid = self.clips.clip_ids[i]
        v = self.view_of(i)
        x = apply_view(clip, view_params(cid, v, self.H, self.W, self.cfg), self.cfg.crop)
        if self.logits is not None:
            return x, y, torch.from_numpy(np.asarray(self.logits[cid, v], dtype=np.float32))
        return x, y, torch.tensor([cid, v])


class Normalized(Dataset):
    """A (x, y, extra) dataset with x standardised by `stats` (a meta.json `normalize` entry)."""

    def __init__(self, dataset: Dataset, stats: dict | None):
        self.dataset, self.stats = dataset, stats

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.dataset.set_epoch(epoch)

    def __getattr__(self, name):  # clips, H, W, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, i: int):
        x, y, extra = self.dataset[i]
        return normalize(x, self.stats), y, extra


class ClipAllViews(Dataset):
    """All V views of one clip stacked, (V, 3, T, crop, crop): one clip read per item."""

    def __init__(self, clips: ClipDataset, data_cfg):
        self.clips, self.cfg = clips, data_cfg
        _, self.H, self.W = clips.shape

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        clip, _, _ = self.clips[i]
        cid = self.clips.clip_ids[i]
        views = clip_views(cid, self.H, self.W, self.cfg)
        return torch.stack([apply_view(clip, v, self.cfg.crop) for v in views]), cid


class CropsDataset(Dataset):
    """Evaluation: the `crops` spatial crops of each clip stacked, (crops, 3, T, crop, crop)."""

    def __init__(self, clips: ClipDataset, crop: int, crops: int):
        self.clips, self.crop = clips, crop
        _, H, W = clips.shape
        self.views = multi_view_crops(H, W, crops)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        clip, y, _ = self.clips[i]
        return torch.stack([apply_view(clip, v, self.crop) for v in self.views]), y, self.clips.clip_ids[i]


def read_logits(path: Path) -> tuple[np.ndarray, dict]:
    """The whole (N, V, K) logits array (small: N x V x K floats) and its attrs."""
    from .shards import ShardError
    try:
        with h5py.File(path, "r") as f:
            return f["logits"][...], dict(f.attrs)
    except FileNotFoundError:
        raise ShardError(f"{path}: soft labels missing; run `dlkdd soft-labels`") from None
    except (OSError, KeyError) as e:
        raise ShardError(f"{path}: unreadable soft labels ({first_line(e)})") from None
