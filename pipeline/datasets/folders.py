"""The `folders` layout: one sub-directory of the root per class, no split lists; the test
split is drawn by a stable hash of each video's path relative to the root.
"""
from __future__ import annotations

import logging
import os

from .index import DatasetError, DatasetIndex, VideoEntry, held_out_count, inside_root, root_paths, stable_key

log = logging.getLogger("dlkdd")

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm")


def is_video(name: str) -> bool:
    """Whether a file name is a video's (by extension; hidden files are not)."""
    return not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS)


def _find_videos(class_dir: str, root_abs: str, root_real: str) -> list[str]:
    """Relative paths (forward slashes) of the videos under `class_dir`, recursively, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if is_video(name):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root_abs).replace(os.sep, "/")
                if not inside_root(os.path.realpath(path), root_real):
                    raise DatasetError(f"{root_abs}: {rel} resolves outside the dataset root")
                found.append(rel)
    return sorted(found)


def read_folders(root, test_fraction: float = 0.25) -> DatasetIndex:
    """One class per sub-directory (sorted by name); the test split is drawn by a hash of each path."""
    root_abs, root_real = root_paths(root)
    classes, train, test = [], [], []
    for name in sorted(os.listdir(root_abs)):
        class_dir = os.path.join(root_abs, name)
        if name.startswith(".") or not os.path.isdir(class_dir):
            continue
        rels = _find_videos(class_dir, root_abs, root_real)
        if not rels:
            log.debug("%s: no videos, not a class", class_dir)
            continue
        label = len(classes)
        classes.append(name)
        held_out = set(sorted(rels, key=stable_key)[:held_out_count(len(rels), test_fraction)])
        for rel in rels:
            split = "test" if rel in held_out else "train"
            entry = VideoEntry(os.path.join(root_abs, *rel.split("/")), rel, label, split, root_abs, 0)
            (test if split == "test" else train).append(entry)
    if not classes:
        patterns = ", ".join("*" + e for e in VIDEO_EXTENSIONS)
        raise DatasetError(f"{root_abs}: no class folders with videos ({patterns})")
    if not test:
        raise DatasetError(f"{root_abs}: no test videos (every class folder holds a single video)")
    return DatasetIndex(root_abs, classes, train, test)
