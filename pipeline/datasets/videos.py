"""Datasets and video decoding: split lists, class folders, frame sampling, decord.

Split-list formats (`data.format`):

- `arid`     `idx<TAB>label<TAB>Class/Class_1_1.avi`   (ARID V1.0)
- `arid15`   `...<TAB>label<TAB>path`: label and path are the last two tab fields (ARID V1.5)
- `mmaction` `path label`, split on the last whitespace run, so paths may hold spaces
             (MMAction2 video lists, Dark-48)
- `folders`  one sub-directory of the root per class; the test split is drawn by a
             stable hash of each video's relative path
- `auto`     per list file, from its first data line

Every user mistake is a one-line `DatasetError` "<file>:<line>: <what is wrong>";
a video decord cannot read is a one-line `VideoError` "<path>: <reason>".
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import posixpath
import re
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...errors import UserError

log = logging.getLogger("dlkdd")

# the bundled sample dataset: the default when data.root is unset
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample"

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".mov", ".webm")
LIST_FORMATS = ("arid", "arid15", "mmaction")
CLASSES_FILE = "classes.txt"


class DatasetError(UserError, ValueError):
    """A mistake in a split list, a class list or the dataset layout (one line)."""


class VideoError(UserError, RuntimeError):
    """A video decord cannot decode: "<path>: <reason>" (one line)."""


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


# ------------------------------------------------------------------ split lists

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


def detect_format(line: str) -> str:
    """The list format a data line is written in (see the module docstring)."""
    fields = line.strip().split("\t")
    if len(fields) == 3:
        return "arid"
    if len(fields) >= 2 and re.fullmatch(r"\s*-?\d+\s*", fields[-2]):
        return "arid15"
    return "mmaction"


def _split_line(line: str, fmt: str) -> tuple[str, str]:
    """(label text, path text) of one data line, or DatasetError's message as ValueError."""
    text = line.strip()
    if fmt == "arid":
        fields = [f.strip() for f in text.split("\t")]
        if len(fields) != 3:
            raise ValueError(f"expected 3 tab-separated fields (index, label, path), got {len(fields)}")
        return fields[1], fields[2]
    if fmt == "arid15":
        fields = [f.strip() for f in text.split("\t")]
        if len(fields) < 2:
            raise ValueError("expected tab-separated fields ending in label and path, got 1 field")
        return fields[-2], fields[-1]
    parts = text.rsplit(None, 1)
    if len(parts) != 2:
        raise ValueError("expected '<path> <label>', got a single field")
    return parts[1], parts[0].strip()


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
    if not _inside(real, root_real):
        raise ValueError(f"path {raw!r} resolves outside the dataset root {root_abs} (to {real})")
    return rel, path, real


def _inside(real: str, root_real: str) -> bool:
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def _roots(root) -> tuple[str, str]:
    root_abs = os.path.abspath(os.fspath(root))
    return root_abs, os.path.realpath(root_abs)


def parse_list(path, root, fmt: str = "auto", split: str = "train",
               num_classes: int | None = None, missing: list | None = None) -> list[VideoEntry]:
    """Read one split list; every video must exist under `root`, once.

    `num_classes` (when known, e.g. from classes.txt) bounds the labels. With a `missing`
    list, videos not on disk are appended to it instead of failing at the first one.
    """
    if fmt != "auto" and fmt not in LIST_FORMATS:
        raise DatasetError(f"{path}: unknown list format {fmt!r} (auto, {', '.join(LIST_FORMATS)})")
    root_abs, root_real = _roots(root)
    rows = _data_lines(path)
    if rows and fmt == "auto":
        fmt = detect_format(rows[0][1])
        log.debug("%s: %s format", path, fmt)
    entries: list[VideoEntry] = []
    first_line: dict[str, int] = {}
    for number, line in rows:
        try:
            label_text, raw = _split_line(line, fmt)
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


def _check_overlap(train: list[VideoEntry], test: list[VideoEntry]) -> None:
    seen = {os.path.realpath(e.path): e for e in train}
    for e in test:
        other = seen.get(os.path.realpath(e.path))
        if other is not None:
            raise DatasetError(f"{e.source}:{e.line}: {e.rel} is also in the train split "
                               f"({other.source}:{other.line})")


def dataset_root(cfg) -> Path:
    """The dataset's folder (a Config's data.root), or the bundled sample when it is unset."""
    return Path(cfg.data.root) if cfg.data.root else SAMPLE


def read_dataset(cfg, root) -> DatasetIndex:
    """The dataset under `root` described by `cfg` (a DataConfig), its validation split carved from train."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset root not found (or not a directory)")
    if cfg.format == "folders":
        index = read_folders(root, cfg.test_fraction)
    else:
        index = _read_lists(cfg, root)
    return carve_validation(index, cfg, root)


def carve_validation(index: DatasetIndex, cfg, root) -> DatasetIndex:
    """Move the validation videos out of `index.train` into `index.val`.

    `data.val_list` names them (each must be in the train list: naming a test video is
    refused, since selecting on test is what the split exists to prevent); otherwise
    round(n * data.val_fraction) videos of each class with n train videos, the first by a
    sha1 of the path relative to the root, so the split is stable across machines and runs.
    """
    val_list = getattr(cfg, "val_list", "")
    if val_list:
        chosen = _listed_validation(index, cfg, Path(root) / val_list)
    else:
        chosen = set()
        fraction = getattr(cfg, "val_fraction", 0.0)
        by_class: dict[int, list[str]] = {}
        for e in index.train:
            by_class.setdefault(e.label, []).append(e.rel)
        for rels in by_class.values():
            n_val = held_out_count(len(rels), fraction) if fraction > 0 else 0
            chosen.update(sorted(rels, key=_stable_key)[:n_val])
    index.val = [dataclasses.replace(e, split="val") for e in index.train if e.rel in chosen]
    index.train = [e for e in index.train if e.rel not in chosen]
    return index


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


def missing_message(missing: list[VideoEntry], shown: int = 10) -> str:
    """All missing videos in one line: the count, then the first few as list:line."""
    if len(missing) == 1:
        e = missing[0]
        return f"{e.source}:{e.line}: video not found: {e.path}; pass --skip-missing to go on without it"
    first = ", ".join(f"{e.source}:{e.line}: {e.rel}" for e in missing[:shown])
    more = f" (+{len(missing) - shown} more)" if len(missing) > shown else ""
    return (f"{len(missing)} listed videos not found: {first}{more}; "
            f"pass --skip-missing to go on without them")


# ------------------------------------------------------------------ class folders

def _is_video(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(VIDEO_EXTENSIONS)


def _find_videos(class_dir: str, root_abs: str, root_real: str) -> list[str]:
    """Relative paths (forward slashes) of the videos under `class_dir`, recursively, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if _is_video(name):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, root_abs).replace(os.sep, "/")
                if not _inside(os.path.realpath(path), root_real):
                    raise DatasetError(f"{root_abs}: {rel} resolves outside the dataset root")
                found.append(rel)
    return sorted(found)


def _stable_key(rel: str) -> tuple[str, str]:
    return hashlib.sha1(rel.encode("utf-8")).hexdigest(), rel


def held_out_count(n: int, fraction: float) -> int:
    """Videos of a class held out: round(n * fraction), at least 1 (and at most n - 1) if n >= 2."""
    if n < 2:
        return 0
    return min(max(int(n * fraction + 0.5), 1), n - 1)


def read_folders(root, test_fraction: float = 0.25) -> DatasetIndex:
    """One class per sub-directory (sorted by name); the test split is drawn by a hash of each path."""
    root_abs, root_real = _roots(root)
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
        held_out = set(sorted(rels, key=_stable_key)[:held_out_count(len(rels), test_fraction)])
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


# ------------------------------------------------------------------ frame sampling

def sample_indices(num_frames: int, T: int, clips: int = 1, mode: str = "uniform") -> np.ndarray:
    """Segment-based uniform sampling (TSN; ARID's test protocol): (clips, T) int64 frame indices.

    The video is cut into T equal segments and one frame taken per segment, at
    offset (c + 0.5) / clips within the segment for clip c. Shorter videos than
    T repeat frames (still covering every frame).
    """
    if mode != "uniform":
        raise ValueError(f"unknown sampling mode {mode!r} (expected 'uniform')")
    if num_frames <= 0:
        raise ValueError(f"video has {num_frames} frames; cannot sample a clip")
    if T <= 0 or clips <= 0:
        raise ValueError(f"T and clips must be positive, got T={T}, clips={clips}")
    if num_frames < T:
        log.debug("video has %d frames, fewer than T=%d: frames repeat", num_frames, T)
    t = np.arange(T, dtype=np.int64)[None, :]
    c = np.arange(clips, dtype=np.int64)[:, None]
    # floor((t + (c + 0.5) / clips) * n / T) in exact integer arithmetic
    return (2 * t * clips + 2 * c + 1) * num_frames // (2 * T * clips)


def resize_shape(h: int, w: int, short_side: int, max_long_side: int = 0) -> tuple[int, int]:
    """(h2, w2): short side at `short_side`, aspect kept (rounded), long side capped if asked."""
    if h <= 0 or w <= 0 or short_side <= 0:
        raise ValueError(f"bad sizes: h={h}, w={w}, short_side={short_side}")
    scale = short_side / min(h, w)
    if max_long_side > 0 and max(h, w) * scale > max_long_side:
        scale = max_long_side / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


# ------------------------------------------------------------------ decoding

_OPEN_LOCK = threading.Lock()  # decord's open errors go to fd 2, which is process-wide
_AV_ERRORS = {  # FFmpeg AVERROR codes decord reports as numbers
    1094995529: "Invalid data found when processing input",
    541478725: "End of file",
    1414092869: "Immediate exit requested",
    558323010: "Internal bug in FFmpeg",
}
_LOG_PREFIX = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")  # "[06:16:32] /src/video_reader.cc:486: "
# "[mov,mp4,m4a @ 0x55d0..] moov atom not found"
_FFMPEG_LINE = re.compile(r"^\[[^\]]* @ 0x[0-9a-fA-F]+\]\s*(.*)$")


def _decord():
    import decord
    decord.bridge.set_bridge("native")  # get_batch returns decord NDArrays; .asnumpy() below
    return decord


def decord_reason(message: str) -> str:
    """The first meaningful line of a decord error, without its timestamp and source location."""
    for line in str(message).splitlines():
        line = _LOG_PREFIX.sub("", line.strip())
        if line and not line.lower().startswith("stack trace"):
            code = re.search(r"failed with (-?\d+)", line)
            if code and abs(int(code.group(1))) in _AV_ERRORS:
                name = _AV_ERRORS[abs(int(code.group(1)))]
                line = line.replace(code.group(0), f"failed: {name} [{code.group(1)}]")
            return line
    return "unknown decord error"


@contextlib.contextmanager
def _capture_stderr():
    """Collect what C++ code writes to fd 2 meanwhile into box[0] (decord logs open errors there)."""
    box = [""]
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2: nothing to capture
        yield box
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield box
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box[0] = tmp.read().decode("utf-8", "replace")


def _open_reason(captured: str, reason: str = "") -> tuple[str, str]:
    """(reason with FFmpeg's details, the captured text that is not about this failure)."""
    details, rest = [], []
    for line in captured.splitlines():
        m = re.search(r"ERROR opening: .*, (.+)$", line)
        f = _FFMPEG_LINE.match(line.strip())
        if m and not reason:
            reason = m.group(1).strip()
        elif f:
            details.append(f.group(1).strip())
        elif line.strip() and not m:
            rest.append(line)
    reason = reason or "decord cannot open it (not a video, or an unsupported or corrupt file)"
    details = [d for d in dict.fromkeys(details) if d and d != reason]
    if details:
        reason += f" ({'; '.join(details)})"
    return reason, "\n".join(rest)


def _precheck(path: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoError(f"{path}: file not found") from None
    except OSError as e:
        raise VideoError(f"{path}: {e.strerror}") from None
    if not os.path.isfile(path):
        raise VideoError(f"{path}: not a file")
    if st.st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoError(f"{path}: permission denied")


def _open(path: str, width: int = -1, height: int = -1, num_threads: int = 1):
    """A decord VideoReader, or VideoError naming the path and decord's reason."""
    decord = _decord()
    with _OPEN_LOCK:
        failure = None
        with _capture_stderr() as box:
            try:
                vr = decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height,
                                        num_threads=num_threads)
            except (RuntimeError, decord.DECORDError, AssertionError, ValueError) as e:
                failure = e
    if failure is None:
        if box[0]:
            os.write(2, box[0].encode())  # warnings of a video that opened: pass them on
        return vr
    if isinstance(failure, AssertionError):  # decord asserts a positive frame count
        raise VideoError(f"{path}: no video frames ({decord_reason(failure)})") from None
    # "Error reading <path>..." says nothing: decord logged the reason to stderr
    own = "" if str(failure).startswith("Error reading ") else decord_reason(failure)
    reason, rest = _open_reason(box[0], own)
    if rest:
        os.write(2, (rest + "\n").encode())
    raise VideoError(f"{path}: {reason}") from None


def _frame_shape(vr, path: str) -> tuple[int, int]:
    try:
        first = vr.next()
    except StopIteration:
        raise VideoError(f"{path}: no decodable frames") from None
    except Exception as e:  # DECORDError and friends
        raise VideoError(f"{path}: {decord_reason(e)}") from None
    shape = first.shape
    return int(shape[0]), int(shape[1])


def probe(path, num_threads: int = 1) -> tuple[int, int, int, float]:
    """(num_frames, height, width, fps) as decord sees the video (decodes the first frame)."""
    path = os.fspath(path)
    _precheck(path)
    vr = _open(path, num_threads=num_threads)
    h, w = _frame_shape(vr, path)
    try:
        fps = float(vr.get_avg_fps())
    except Exception as e:
        raise VideoError(f"{path}: {decord_reason(e)}") from None
    return len(vr), h, w, fps


def decode_clips(path, T: int, clips: int, short_side: int, max_long_side: int = 0,
                 num_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Decode `clips` clips of T frames, resized while decoding: (frames, indices).

    frames: (clips, T, H, W, 3) uint8 RGB; indices: (clips, T) int64 source frames.
    Each needed frame is decoded once, however many clips share it.
    """
    path = os.fspath(path)
    _precheck(path)
    vr = _open(path, num_threads=num_threads)
    h, w = _frame_shape(vr, path)
    h2, w2 = resize_shape(h, w, short_side, max_long_side)
    if (h2, w2) != (h, w):
        vr = _open(path, width=w2, height=h2, num_threads=num_threads)
    indices = sample_indices(len(vr), T, clips)
    unique, inverse = np.unique(indices.ravel(), return_inverse=True)
    try:
        batch = vr.get_batch(unique.tolist())
    except Exception as e:  # DECORDError, or IndexError when the container overstates its length
        raise VideoError(f"{path}: {decord_reason(e)}") from None
    batch = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
    if batch.shape != (len(unique), h2, w2, 3):
        raise VideoError(f"{path}: decord returned frames of shape {batch.shape[1:]}, "
                         f"expected {(h2, w2, 3)}")
    frames = batch[inverse.reshape(indices.shape)]
    return np.ascontiguousarray(frames, dtype=np.uint8), indices

