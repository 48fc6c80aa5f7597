"""A dataset root read into its splits: train and test from the split lists (or the class
folders), refused when they overlap or list missing videos, and the validation split carved
from train. The bundled sample is the root when data.root is unset.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from .expected import check_classes, check_layout
from .folders import read_folders
from .index import DatasetError, DatasetIndex, VideoEntry, held_out_count, stable_key
from .lists import effective_format, infer_classes, parse_list, read_classes

# the bundled sample dataset: the default when data.root is unset
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"

CLASSES_FILE = "classes.txt"


def dataset_root(cfg) -> Path:
    """The dataset's folder (a Config's data.root), or the bundled sample when it is unset."""
    return Path(cfg.data.root) if cfg.data.root else SAMPLE


def read_dataset(cfg, root) -> DatasetIndex:
    """The dataset under `root` described by `cfg` (a DataConfig), its validation split carved from train."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found (or not a directory)")
    check_layout(cfg, root)  # data.dataset (a preset's): its lists, in its format, before they are parsed
    if cfg.format == "folders":
        index = read_folders(root, cfg.test_fraction)
    else:
        index = _read_lists(cfg, root)
    check_classes(cfg, index)
    return carve_validation(index, cfg, root)


def _read_lists(cfg, root: Path) -> DatasetIndex:
    classes_path = root / CLASSES_FILE
    classes = read_classes(classes_path) if classes_path.exists() else None
    num = len(classes) if classes else None
    lists = {"train": root / cfg.train_list, "test": root / cfg.test_list}
    split_entries, missing = {}, []
    for split, path in lists.items():
        if not path.is_file():
            setting = getattr(cfg, f"{split}_list")
            raise DatasetError(f"{path}: {split} split list not found (data.{split}_list = {setting!r})")
        split_entries[split] = parse_list(path, root, cfg.format, split, num, missing)
        if not split_entries[split] and not any(e.split == split for e in missing):
            raise DatasetError(f"{path}: no videos listed in the {split} split")
    if missing and not getattr(cfg, "skip_missing", False):
        raise DatasetError(missing_message(missing))
    train, test = split_entries["train"], split_entries["test"]
    for split, path in lists.items():
        if not split_entries[split]:
            raise DatasetError(f"{path}: every video of the {split} split is missing")
    _check_overlap(train, test)
    if classes is None:
        classes = infer_classes(train + test + missing)
    return DatasetIndex(os.path.abspath(root), classes, train, test, missing=missing)


def _check_overlap(train: list[VideoEntry], test: list[VideoEntry]) -> None:
    seen = {os.path.realpath(e.path): e for e in train}
    for e in test:
        other = seen.get(os.path.realpath(e.path))
        if other is not None:
            raise DatasetError(f"{e.source}:{e.line}: {e.rel} is also in the train split "
                               f"({other.source}:{other.line})")


def missing_message(missing: list[VideoEntry], shown: int = 10) -> str:
    """All missing videos in one line: the count, then the first few as list:line."""
    if len(missing) == 1:
        e = missing[0]
        return f"{e.source}:{e.line}: video not found: {e.path}; pass --skip-missing to go on without it"
    first = ", ".join(f"{e.source}:{e.line}: {e.rel}" for e in missing[:shown])
    more = f" (+{len(missing) - shown} more)" if len(missing) > shown else ""
    return (f"{len(missing)} listed videos not found: {first}{more}; "
            f"pass --skip-missing to go on without them")


def carve_validation(index: DatasetIndex, cfg, root) -> DatasetIndex:
    """Move the validation videos out of `index.train` into `index.val`.

    `data.val_list` names them (each must be in the train list: naming a test video is
    refused, since selecting on test is what the split exists to prevent); otherwise about
    round(n * data.val_fraction) videos of each class with n train videos, in whole groups
    (`data.val_group`: clips cut from one recording never straddle the split), the groups taken
    in the order of a sha1 of their name, so the split is stable across machines and runs.
    """
    val_list, rule = getattr(cfg, "val_list", ""), group_rule(cfg, root)
    if val_list:
        chosen = _listed_validation(index, cfg, Path(root) / val_list)
    else:
        fraction = getattr(cfg, "val_fraction", 0.0)
        chosen = _grouped_validation(index, fraction, rule) if fraction > 0 else set()
    index.val = [dataclasses.replace(e, split="val") for e in index.train if e.rel in chosen]
    index.train = [e for e in index.train if e.rel not in chosen]
    index.groups = {split: {"groups": len({group_of(e.rel, rule) for e in entries}), "videos": len(entries)}
                    for split, entries in (("train", index.train), ("val", index.val))}
    return index


# ARID (and V1.5) name clips Class_A_B: B-th clip of recording A; Dark-48 <youtube-id>_N
ARID_GROUP = re.compile(r"^(.+_\d+)_\d+$")
YOUTUBE_GROUP = re.compile(r"^(.+)_\d+$")


def group_rule(cfg, root) -> re.Pattern | None:
    """The pattern that names a video's group (None: every video is its own group)."""
    rule = getattr(cfg, "val_group", "auto")
    if rule == "none" or (rule == "auto" and cfg.format == "folders"):
        return None
    if rule == "auto":
        fmt = effective_format(Path(root) / cfg.train_list, cfg.format)
        return YOUTUBE_GROUP if fmt == "mmaction" else ARID_GROUP
    try:
        return re.compile(rule)
    except re.error as e:
        raise DatasetError(f"data.val_group: {rule!r} is not a regular expression ({e})") from None


def group_of(rel: str, rule: re.Pattern | None) -> str:
    """The group of the video at `rel`: what `rule` finds in its file name (its first group, else the
    whole match), or the video itself when there is no rule or no match."""
    stem = Path(rel).stem
    m = rule.search(stem) if rule is not None else None
    if m is None:
        return rel
    key = m.group(1) if m.re.groups else m.group(0)
    return f"{Path(rel).parent.as_posix()}/{key}"


def _grouped_validation(index: DatasetIndex, fraction: float, rule: re.Pattern | None) -> set[str]:
    """The rel paths of whole groups, per class about `held_out_count` videos, never the last group."""
    groups: dict[str, list[VideoEntry]] = {}
    for e in index.train:
        groups.setdefault(group_of(e.rel, rule), []).append(e)
    chosen: set[str] = set()
    by_class: dict[int, list[str]] = {}
    for key, members in groups.items():
        for label in {e.label for e in members}:
            by_class.setdefault(label, []).append(key)
    for label, keys in sorted(by_class.items()):
        n = sum(e.label == label for key in keys for e in groups[key])
        want = held_out_count(n, fraction)
        if want and len(keys) < 2:
            raise DatasetError(f"data.val_group: class {index.classes[label]} has all its {n} train videos in "
                               f"one group ({keys[0]}), so none can be held out for validation; set "
                               f"data.val_group (none, or a pattern) or data.val_list")
        held = sum(e.label == label for key in keys if key in chosen for e in groups[key])
        for key in sorted(keys, key=stable_key)[:-1]:  # the last group stays in train
            if held >= want:
                break
            if key not in chosen:
                chosen.add(key)
                held += sum(e.label == label for e in groups[key])
    return {e.rel for key in chosen for e in groups[key]}


def _listed_validation(index: DatasetIndex, cfg, path: Path) -> set[str]:
    if not path.is_file():
        raise DatasetError(f"{path}: validation list not found (data.val_list = {cfg.val_list!r})")
    listed = parse_list(path, index.root, cfg.format if cfg.format != "folders" else "auto", "val",
                        index.num_classes)
    train = {os.path.realpath(e.path): e for e in index.train}
    test = {os.path.realpath(e.path) for e in index.test}
    chosen = set()
    for e in listed:
        real = os.path.realpath(e.path)
        if real in test:
            raise DatasetError(f"{path}:{e.line}: {e.rel} is in the test split; validating on test is refused")
        if real not in train:
            raise DatasetError(f"{path}:{e.line}: {e.rel} is not in the train split "
                               f"(the validation split is carved from it)")
        if train[real].label != e.label:
            raise DatasetError(f"{path}:{e.line}: {e.rel} has label {e.label} here but {train[real].label} "
                               f"in {train[real].source}:{train[real].line}")
        chosen.add(train[real].rel)
    if len(chosen) == len(train):
        raise DatasetError(f"{path}: names every train video; nothing would be left to train on")
    return chosen
