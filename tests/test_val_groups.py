"""The validation split holds out whole groups of near-duplicate clips (data.val_group).

ARID cuts several clips from one recording (`Class_A_B`), Dark-48 several from one YouTube video
(`<id>_N`): carved video by video, near-duplicates of a train clip landed in validation, which
picks `keep = best` and every tuned default.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from dlkdd.pipeline.config import DataConfig
from dlkdd.pipeline.datasets.index import DatasetError
from dlkdd.pipeline.datasets.splits import read_dataset

CLASSES = ("Drink", "Jump", "Run")


def arid_root(tmp_path: Path, recordings: int = 5, clips: int = 3) -> Path:
    """An ARID-format dataset: Class/Class_A_B.mp4, `clips` clips B of each of `recordings` recordings A."""
    root = tmp_path / "arid"
    train, test = [], []
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for a in range(1, recordings + 2):
            for b in range(1, clips + 1):
                rel = f"{name}/{name}_{a}_{b}.mp4"
                (root / rel).write_bytes(b"")  # listed videos must exist; nothing decodes them here
                (test if a == recordings + 1 else train).append(f"{len(train) + len(test)}\t{label}\t{rel}")
    (root / "splits").mkdir()
    (root / "splits" / "train.txt").write_text("\n".join(train) + "\n")
    (root / "splits" / "test.txt").write_text("\n".join(test) + "\n")
    return root


def dark48_root(tmp_path: Path) -> Path:
    """MMAction / Dark-48 lists: `path label`, clips of one YouTube video named <id>_N."""
    root = tmp_path / "dark48"
    lines = {"train": [], "test": []}
    for label, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for v in range(5):
            for n in range(3):
                rel = f"{name}/yt{label}x-{v}_{n}.mp4"
                (root / rel).write_bytes(b"")
                lines["test" if v == 4 else "train"].append(f"{rel} {label}")
    (root / "splits").mkdir()
    for split, rows in lines.items():
        (root / "splits" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root


def recording(rel: str) -> str:
    return rel.rsplit("_", 1)[0]


@pytest.mark.parametrize("make, fmt", [(arid_root, "auto"), (arid_root, "arid"), (dark48_root, "auto"),
                                       (dark48_root, "mmaction")])
def test_no_group_straddles_the_split_and_every_class_is_validated(tmp_path, make, fmt):
    root = make(tmp_path)
    index = read_dataset(DataConfig(format=fmt, val_fraction=0.25), root)
    train, val = {recording(e.rel) for e in index.train}, {recording(e.rel) for e in index.val}
    assert val and not train & val
    assert {e.label for e in index.val} == set(range(len(CLASSES)))  # stratified by class
    assert index.groups == {"train": {"groups": len(train), "videos": len(index.train)},
                            "val": {"groups": len(val), "videos": len(index.val)}}
    again = read_dataset(DataConfig(format=fmt, val_fraction=0.25), root)  # stable across runs
    assert [e.rel for e in again.val] == [e.rel for e in index.val]


def test_none_carves_video_by_video_and_a_pattern_names_groups(tmp_path):
    root = arid_root(tmp_path)
    alone = read_dataset(DataConfig(val_fraction=0.25, val_group="none"), root)
    assert alone.groups["val"]["groups"] == alone.groups["val"]["videos"]
    by_class = read_dataset(DataConfig(val_fraction=0.25, val_group=r"^([A-Za-z]+_\d)"), root)
    assert not {recording(e.rel) for e in by_class.train} & {recording(e.rel) for e in by_class.val}


def test_a_bad_pattern_and_a_class_in_one_group_are_one_line_errors(tmp_path):
    root = arid_root(tmp_path)
    with pytest.raises(DatasetError, match=r"data.val_group: '\(' is not a regular expression"):
        read_dataset(DataConfig(val_fraction=0.25, val_group="("), root)
    with pytest.raises(DatasetError, match="class Drink has all its 15 train videos in one group") as e:
        read_dataset(DataConfig(val_fraction=0.25, val_group=r"^[A-Za-z]+"), root)
    assert "\n" not in str(e.value)


def test_the_bundled_sample_keeps_its_split(tmp_path):
    """Its names (Class_N) are one clip per video: grouping changes nothing there."""
    sample = read_dataset(DataConfig(), Path(__file__).resolve().parents[1] / "data" / "sample")
    assert sample.groups["val"]["groups"] == sample.groups["val"]["videos"] == 36
