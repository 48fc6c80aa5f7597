"""The real datasets a preset is written for (`data.dataset`), and the check that a folder is one.

A preset (configs/arid.toml, ...) names its dataset; before any stage, the folder given as
`--data` must hold that dataset's split lists (in its list format, for the split `data.split`
asks for) and, where the names are known, only its class names. A folder that is not that
dataset stops with one line that names what is missing and what was expected, before anything is
written to the cache (the stage graph reads the dataset before it runs anything).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .index import DatasetError, DatasetIndex
from .lists import LIST_FORMATS, _data_lines

# ARID's 11 actions, in the order of its labels (list_cvt/mapping_table.txt: alphabetical).
ARID_CLASSES = ("Drink", "Jump", "Pick", "Pour", "Push", "Run",
                "Sit", "Stand", "Turn", "Walk", "Wave")


@dataclass(frozen=True)
class Expected:
    title: str  # how the error names the dataset
    format: str  # the split-list format its lists are written in (lists.LIST_FORMATS)
    example: str  # a line of its lists, for the error
    splits: tuple[int, ...]  # the split numbers data.split may name
    classes: tuple[str, ...] = ()  # its class names; () = not checked (the names could not be looked up)
    max_classes: int = 0  # at most this many classes (0 = the length of `classes`; neither: not checked)


DATASETS: dict[str, Expected] = {
    "arid": Expected("ARID v1.0", "arid", "0<TAB>0<TAB>Drink/Drink_1_1.avi", (1, 2, 3), ARID_CLASSES),
    # V1.5's lists put label and path last; its classes could not be checked against a public source
    "arid15": Expected("ARID v1.5", "arid15", "...<TAB>0<TAB>Drink/Drink_1_1.mp4", (1, 2, 3)),
    # Dark-48: 48 classes; their names were not found in a public source, so only the count is checked
    "dark48": Expected("Dark-48", "mmaction", "Drink/<youtube-id>_1.mp4 0", (1,), (), 48),
}
NAMES = ("", *DATASETS)  # data.dataset: "" = any folder, checked only as its format is


def expected(cfg) -> Expected | None:
    """The dataset `cfg` (a DataConfig) says it reads, or None."""
    return DATASETS.get(getattr(cfg, "dataset", ""))


def _expects(cfg, want: Expected) -> str:
    return f"data.dataset = {cfg.dataset!r} expects {want.title} (format {want.format}: {want.example})"


def check_layout(cfg, root: Path) -> None:
    """Before the lists are parsed: `data.split` is one the dataset has, each split list exists and
    its first line is in the dataset's list format. Each failure is one line naming the file."""
    want = expected(cfg)
    if want is None:
        return
    if cfg.split not in want.splits:
        raise DatasetError(f"data.split = {cfg.split}: {want.title} has split{'s' if len(want.splits) > 1 else ''} "
                           f"{', '.join(map(str, want.splits))}")
    if cfg.format not in ("auto", want.format):
        raise DatasetError(f"data.format = {cfg.format!r}: {_expects(cfg, want)}")
    for split in ("train", "test"):
        setting = getattr(cfg, f"{split}_list")
        path = Path(root) / setting
        if not path.is_file():
            raise DatasetError(f"{path}: {split} list of split {cfg.split} not found (data.{split}_list = "
                               f"{setting!r}); {_expects(cfg, want)}")
        rows = _data_lines(path)
        if rows and not LIST_FORMATS[want.format].matches(rows[0][1].strip()):
            number, line = rows[0]
            raise DatasetError(f"{path}:{number}: {line.strip()[:60]!r} is not a {want.title} list line; "
                               f"{_expects(cfg, want)}")


def check_classes(cfg, index: DatasetIndex) -> None:
    """After reading: the class names are the dataset's (a subset of them: a folder may hold fewer),
    or, where the names are not known, at most its class count."""
    want = expected(cfg)
    if want is None:
        return
    if want.classes:
        other = [name for name in index.classes if name not in want.classes]
        if other:
            shown = ", ".join(other[:5]) + (f" (+{len(other) - 5} more)" if len(other) > 5 else "")
            raise DatasetError(f"{index.root}: class names {shown} are not {want.title}'s "
                               f"({', '.join(want.classes)}); {_expects(cfg, want)}")
    limit = want.max_classes or len(want.classes)
    if limit and len(index.classes) > limit:
        raise DatasetError(f"{index.root}: {len(index.classes)} classes, {want.title} has {limit}; "
                           f"{_expects(cfg, want)}")
