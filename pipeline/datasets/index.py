"""What a dataset reads into: its videos (VideoEntry), their splits (DatasetIndex), the one-line
DatasetError, and the rules every reader shares: paths stay under the root, and a held-out
share is chosen by a stable hash of each video's path.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field

from ...errors import UserError


class DatasetError(UserError, ValueError):
    """A mistake in a split list, a class list or the dataset layout (one line)."""


@dataclass(frozen=True)
class VideoEntry:
    path: str  # absolute path of the video file
    rel: str  # the path as written in the list (or found under root), with forward slashes
    label: int  # class index
    split: str  # "train", "val" (carved from the train list) or "test"
    source: str  # the split list it came from (the root for the folders format)
    line: int  # 1-based line in `source` (0 for the folders format)


@dataclass
class DatasetIndex:
    root: str  # absolute dataset root
    classes: list[str]  # class names, indexed by label
    train: list[VideoEntry] = field(default_factory=list)
    test: list[VideoEntry] = field(default_factory=list)
    val: list[VideoEntry] = field(default_factory=list)  # carved from the train list; never in train or test
    missing: list[VideoEntry] = field(default_factory=list)  # listed, not on disk (data.skip_missing)
    groups: dict = field(default_factory=dict)  # {"train"|"val": {"groups", "videos"}} of the carve-out

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def entries(self, split: str) -> list[VideoEntry]:
        if split == "train":
            return self.train
        if split == "test":
            return self.test
        if split == "val":
            return self.val
        raise ValueError(f"unknown split {split!r} (expected 'train', 'val' or 'test')")


def root_paths(root) -> tuple[str, str]:
    """(absolute, real) path of a dataset root: listed paths are checked against the real one."""
    root_abs = os.path.abspath(os.fspath(root))
    return root_abs, os.path.realpath(root_abs)


def inside_root(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def stable_key(rel: str) -> tuple[str, str]:
    """Sort key of a relative path by its sha1: the same order on every machine and run."""
    return hashlib.sha1(rel.encode("utf-8")).hexdigest(), rel


def held_out_count(n: int, fraction: float) -> int:
    """Videos of a class held out: round(n * fraction), at least 1 (and at most n - 1) if n >= 2."""
    if n < 2:
        return 0
    return min(max(int(n * fraction + 0.5), 1), n - 1)
