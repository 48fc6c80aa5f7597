"""Split lists and class lists: one reader per list format, all in LIST_FORMATS.

`data.format` names a format of the table, or `auto`: per list file, the first format
whose `matches` accepts its first data line. Every mistake is a one-line DatasetError
"<file>:<line>: <what is wrong>".
"""
from __future__ import annotations

import logging
import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

from .index import DatasetError, VideoEntry, inside_root, root_paths

log = logging.getLogger("dlkdd")


@dataclass(frozen=True)
class ListFormat:
    matches: Callable[[str], bool]  # a stripped data line -> is a list starting so in this format
    fields: Callable[[str], tuple[str, str]]  # a stripped data line -> (label, path); ValueError says why not


def _tab_fields(text: str) -> list[str]:
    return [f.strip() for f in text.split("\t")]


def _arid_matches(text: str) -> bool:
    return len(text.split("\t")) == 3


def _arid_fields(text: str) -> tuple[str, str]:
    """ARID V1.0: `idx<TAB>label<TAB>Class/Class_1_1.avi`."""
    fields = _tab_fields(text)
    if len(fields) != 3:
        raise ValueError(f"expected 3 tab-separated fields (index, label, path), got {len(fields)}")
    return fields[1], fields[2]


def _arid15_matches(text: str) -> bool:
    fields = text.split("\t")
    return len(fields) >= 2 and re.fullmatch(r"\s*-?\d+\s*", fields[-2]) is not None


def _arid15_fields(text: str) -> tuple[str, str]:
    """ARID V1.5: `...<TAB>label<TAB>path`, label and path the last two tab fields."""
    fields = _tab_fields(text)
    if len(fields) < 2:
        raise ValueError("expected tab-separated fields ending in label and path, got 1 field")
    return fields[-2], fields[-1]


def _mmaction_fields(text: str) -> tuple[str, str]:
    """MMAction2 video lists, Dark-48: `path label`, split on the last whitespace run (paths may hold spaces)."""
    parts = text.rsplit(None, 1)
    if len(parts) != 2:
        raise ValueError("expected '<path> <label>', got a single field")
    return parts[1], parts[0].strip()


LIST_FORMATS = {  # in the order `auto` tries them
    "arid": ListFormat(_arid_matches, _arid_fields),
    "arid15": ListFormat(_arid15_matches, _arid15_fields),
    "mmaction": ListFormat(lambda text: True, _mmaction_fields),  # any other line: last
}


def detect_format(line: str) -> str:
    """The list format a data line is written in: the first of LIST_FORMATS that matches it."""
    text = line.strip()
    return next(name for name, fmt in LIST_FORMATS.items() if fmt.matches(text))


def effective_format(path, fmt: str) -> str:
    """`fmt`, or for "auto" the format the list at `path` is written in (its first data line's)."""
    if fmt != "auto":
        return fmt
    rows = _data_lines(path)
    return detect_format(rows[0][1]) if rows else "arid"


def _data_lines(path) -> list[tuple[int, str]]:
    """(line number, text) of every non-blank, non-comment line; BOM and CRLF tolerated."""
    try:
        # newline=None turns CRLF and lone CR into "\n", so line numbers match an editor's.
        with open(path, encoding="utf-8-sig", newline=None) as f:
            text = f.read()
    except FileNotFoundError:
        raise DatasetError(f"{path}: split list not found") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a directory, expected a split list file") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            rows.append((number, line))
    return rows


def _parse_label(text: str, num_classes: int | None) -> int:
    if not re.fullmatch(r"-?\d+", text):
        raise ValueError(f"label {text!r} is not an integer")
    label = int(text)
    if label < 0:
        raise ValueError(f"negative label {label}")
    if num_classes is not None and label >= num_classes:
        raise ValueError(f"label {label} out of range for {num_classes} classes (0..{num_classes - 1})")
    return label


def _is_absolute(rel: str) -> bool:
    return rel.startswith("/") or re.match(r"[A-Za-z]:", rel) is not None


def _resolve(raw: str, root_abs: str, root_real: str) -> tuple[str, str, str]:
    """(normalised rel, absolute path, real path) of a listed path; ValueError if it escapes root."""
    rel = raw.replace("\\", "/")
    if _is_absolute(rel):
        raise ValueError(f"absolute path {raw!r}: paths must be relative to the dataset root {root_abs}")
    rel = posixpath.normpath(rel)
    if rel == ".." or rel.startswith("../"):
        raise ValueError(f"path {raw!r} escapes the dataset root {root_abs}")
    path = os.path.normpath(os.path.join(root_abs, *rel.split("/")))
    real = os.path.realpath(path)
    if not inside_root(real, root_real):
        raise ValueError(f"path {raw!r} resolves outside the dataset root {root_abs} (to {real})")
    return rel, path, real


def parse_list(path, root, fmt: str = "auto", split: str = "train",
               num_classes: int | None = None, missing: list | None = None) -> list[VideoEntry]:
    """Read one split list; every video must exist under `root`, once.

    `num_classes` (when known, e.g. from classes.txt) bounds the labels. With a `missing`
    list, videos not on disk are appended to it instead of failing at the first one.
    """
    if fmt != "auto" and fmt not in LIST_FORMATS:
        raise DatasetError(f"{path}: unknown list format {fmt!r} (auto, {', '.join(LIST_FORMATS)})")
    root_abs, root_real = root_paths(root)
    rows = _data_lines(path)
    if rows and fmt == "auto":
        fmt = detect_format(rows[0][1])
        log.debug("%s: %s format", path, fmt)
    entries: list[VideoEntry] = []
    first_line: dict[str, int] = {}
    for number, line in rows:
        try:
            label_text, raw = LIST_FORMATS[fmt].fields(line.strip())
            label = _parse_label(label_text, num_classes)
            rel, abs_path, real = _resolve(raw, root_abs, root_real)
        except ValueError as e:
            raise DatasetError(f"{path}:{number}: {e}") from None
        if not os.path.exists(real):
            if missing is None:
                raise DatasetError(f"{path}:{number}: video not found: {abs_path}")
            missing.append(VideoEntry(abs_path, rel, label, split, str(path), number))
            continue
        if not os.path.isfile(real):
            raise DatasetError(f"{path}:{number}: not a video file: {abs_path}")
        if real in first_line:
            raise DatasetError(f"{path}:{number}: duplicate entry {rel} "
                               f"(first listed at line {first_line[real]})")
        first_line[real] = number
        entries.append(VideoEntry(abs_path, rel, label, split, str(path), number))
    return entries


def read_classes(path) -> list[str]:
    """Class names, one per line (blank and '#' lines skipped), indexed by label."""
    names, seen = [], {}
    for number, line in _data_lines(path):
        name = line.strip()
        if name in seen:
            raise DatasetError(f"{path}:{number}: duplicate class name {name!r} "
                               f"(first at line {seen[name]})")
        seen[name] = number
        names.append(name)
    if not names:
        raise DatasetError(f"{path}: no class names")
    return names


def infer_classes(entries: list[VideoEntry]) -> list[str]:
    """Name label k after the folder all its videos sit in (ARID: Drink/... -> Drink), else class<k>."""
    num = max((e.label for e in entries), default=-1) + 1
    folders: dict[int, set] = {k: set() for k in range(num)}
    for e in entries:
        folders[e.label].add(e.rel.split("/")[0] if "/" in e.rel else None)
    names = []
    for k in range(num):
        found = folders[k]
        names.append(next(iter(found)) if len(found) == 1 and None not in found else None)
    for k, name in enumerate(names):  # a folder shared by two labels names neither
        if name is None or names.count(name) > 1:
            names[k] = f"class{k}"
    return names
