"""The clip cache: HDF5 shards of original and enhanced uint8 clips.

One shard holds N clips of one shape (T, H, W, 3): datasets `original` and
`enhanced` (N, T, H, W, 3) uint8 with one chunk per clip and a fletcher32
checksum per chunk, so reading a clip is one chunk read and a flipped bit is
an error, never silently wrong pixels. `label` (N,) int64, `video` (N,) UTF-8
strings, `frames` (N, T) int32 source frame indices. A shard is written to a
temporary sibling and renamed, so it is whole or absent.

Readers (`ClipDataset`) open shards lazily, one handle per process: h5py
handles must not cross a fork or a pickle into a DataLoader worker.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ...errors import UserError, first_line
from ..engine import atomic

FORMAT_VERSION = 1
CLIP_DATASETS = ("original", "enhanced")
WHICH = ("original", "enhanced", "both")


class ShardError(UserError, RuntimeError):
    """A shard is missing, unreadable or corrupt (one line naming the file)."""


def _compression_kwargs(compression: str) -> dict:
    if compression == "none":
        return {}
    if compression == "lz4":
        try:
            import hdf5plugin  # deferred: optional (the lz4 extra), needed only for lz4 shards
        except ImportError:
            raise ShardError("enhance.compression = lz4 needs the hdf5plugin package "
                             "(pip install hdf5plugin), or use compression = none") from None
        return dict(hdf5plugin.LZ4())
    raise ValueError(f"compression {compression!r}: expected none or lz4")


def _check_arrays(original, enhanced, labels, videos, frames):
    original, enhanced = np.asarray(original), np.asarray(enhanced)
    if original.ndim != 5 or original.shape[-1] != 3:
        raise ValueError(f"original: expected (N, T, H, W, 3), got {original.shape}")
    if enhanced.shape != original.shape:
        raise ValueError(f"enhanced {enhanced.shape} and original {original.shape} differ in shape")
    for name, a in (("original", original), ("enhanced", enhanced)):
        if a.dtype != np.uint8:
            raise ValueError(f"{name}: expected uint8, got {a.dtype}")
    n, t = original.shape[:2]
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    frames = np.asarray(frames)
    videos = [str(v) for v in videos]
    if labels.shape != (n,) or len(videos) != n:
        raise ValueError(f"{n} clips but {labels.shape[0]} labels and {len(videos)} videos")
    if frames.shape != (n, t):
        raise ValueError(f"frames: expected ({n}, {t}), got {frames.shape}")
    return original, enhanced, labels, videos, frames.astype(np.int32)


def write_shard(path, original, enhanced, labels, videos, frames, compression: str = "none") -> Path:
    """Write one shard atomically; the same arrays always give the same bytes."""
    original, enhanced, labels, videos, frames = _check_arrays(original, enhanced, labels, videos, frames)
    filters = _compression_kwargs(compression)
    path = Path(path)
    n, t, h, w, _ = original.shape
    # No timestamps and no creation-order tracking: the bytes depend on the data only.
    common = dict(track_times=False, track_order=False)
    with atomic.atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
            f.attrs["format_version"] = FORMAT_VERSION
            for name, data in (("original", original), ("enhanced", enhanced)):
                f.create_dataset(name, data=data, chunks=(1, t, h, w, 3) if n else None,
                                 fletcher32=bool(n), **filters, **common)
            f.create_dataset("label", data=labels, **common)
            f.create_dataset("video", data=np.array(videos, dtype=object),
                             dtype=h5py.string_dtype("utf-8"), **common)
            f.create_dataset("frames", data=frames, **common)
    return path


def _open(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise ShardError(f"{path}: shard missing") from None
    except OSError as e:
        raise ShardError(f"{path}: not a readable HDF5 shard: {first_line(e)}") from None


def _read_row(f: h5py.File, path, row: int, which: str) -> np.ndarray:
    try:
        dset = f[which]
    except KeyError:
        raise ShardError(f"{path}: no dataset {which!r}") from None
    if not 0 <= row < dset.shape[0]:
        raise ShardError(f"{path}: clip {row} out of range (shard holds {dset.shape[0]})")
    try:
        return dset[row]
    except OSError as e:
        raise ShardError(f"{path}: clip {row}: {which}: checksum mismatch / unreadable: "
                         f"{first_line(e)}") from None


def read_clip(path, row: int, which: str = "original"):
    """One clip (T, H, W, 3) uint8; `which="both"` gives (original, enhanced)."""
    if which not in WHICH:
        raise ValueError(f"which={which!r}: expected one of {', '.join(WHICH)}")
    with _open(Path(path)) as f:
        if which == "both":
            return tuple(_read_row(f, path, row, name) for name in CLIP_DATASETS)
        return _read_row(f, path, row, which)


def read_meta(path) -> dict:
    """The small datasets of a shard: label, video, frames, and the clip shape (T, H, W)."""
    path = Path(path)
    with _open(path) as f:
        try:
            return {
                "label": f["label"][()],
                "video": [v.decode() if isinstance(v, bytes) else v for v in f["video"][()]],
                "frames": f["frames"][()],
                "shape": tuple(f["original"].shape[1:4]),
                "format_version": int(f.attrs.get("format_version", 0)),
            }
        except (KeyError, OSError) as e:
            raise ShardError(f"{path}: unreadable metadata: {first_line(e)}") from None


def verify_shard(path) -> list[str]:
    """Read every chunk of a shard; one line per problem (empty list = sound)."""
    path = Path(path)
    try:
        f = _open(path)
    except ShardError as e:
        return [str(e)]
    problems = []
    with f:
        version = f.attrs.get("format_version")
        if version != FORMAT_VERSION:
            problems.append(f"{path}: format_version {version!r}, expected {FORMAT_VERSION}")
        missing = [k for k in (*CLIP_DATASETS, "label", "video", "frames") if k not in f]
        if missing:
            return problems + [f"{path}: missing datasets {', '.join(missing)}"]
        n = f["original"].shape[0]
        if f["enhanced"].shape != f["original"].shape:
            problems.append(f"{path}: enhanced {f['enhanced'].shape} != original {f['original'].shape}")
        for name in ("label", "video", "frames"):
            if f[name].shape[0] != n:
                problems.append(f"{path}: {name} has {f[name].shape[0]} rows, expected {n}")
            try:
                f[name][()]
            except OSError as e:
                problems.append(f"{path}: {name}: unreadable: {first_line(e)}")
        for name in CLIP_DATASETS:
            for row in range(f[name].shape[0]):
                try:
                    _read_row(f, path, row, name)
                except ShardError as e:
                    problems.append(str(e))
    return problems


class ClipDataset(Dataset):
    """Clips addressed by (shard path, row), in the given order.

    `__getitem__(i)` returns `(clip, label, i)`: clip is a uint8 tensor
    (T, H, W, 3); with `which="both"` the pair (original, enhanced).
    Shards are opened on first access in each process, never in __init__.
    """

    def __init__(self, rows: Sequence[tuple], labels: Sequence[int], which: str = "original",
                 clip_ids: Sequence[int] | None = None):
        if which not in WHICH:
            raise ValueError(f"which={which!r}: expected one of {', '.join(WHICH)}")
        self.rows = [(str(p), int(r)) for p, r in rows]
        self.labels = [int(y) for y in labels]
        if len(self.labels) != len(self.rows):
            raise ValueError(f"{len(self.rows)} clips but {len(self.labels)} labels")
        self.clip_ids = list(range(len(self.rows))) if clip_ids is None else [int(c) for c in clip_ids]
        if len(self.clip_ids) != len(self.rows):
            raise ValueError(f"{len(self.rows)} clips but {len(self.clip_ids)} clip ids")
        self.which = which
        self._files: dict[str, h5py.File] = {}
        self._pid = os.getpid()

    @classmethod
    def from_index(cls, index_json_path, split: str | None = None,
                   which: str = "original") -> ClipDataset:
        """The clips of `split` (all if None) listed in `clips/index.json`, in index order."""
        index_json_path = Path(index_json_path)
        try:
            index = json.loads(index_json_path.read_text())
        except FileNotFoundError:
            raise ShardError(f"{index_json_path}: clip index missing") from None
        except json.JSONDecodeError as e:
            raise ShardError(f"{index_json_path}: not valid JSON: {e}") from None
        if index.get("format_version") != FORMAT_VERSION:
            raise ShardError(f"{index_json_path}: format_version {index.get('format_version')!r}, "
                             f"expected {FORMAT_VERSION}")
        root = index_json_path.parent
        clips = [c for c in index["clips"] if split is None or c["split"] == split]
        ds = cls([(root / c["shard"], c["row"]) for c in clips], [c["label"] for c in clips],
                 which=which, clip_ids=[c["id"] for c in clips])
        ds.classes = list(index.get("classes", []))
        ds.videos = [c["video"] for c in clips]
        ds.shape = tuple(index[k] for k in ("T", "H", "W") if k in index)
        return ds

    def __len__(self) -> int:
        return len(self.rows)

    def _file(self, path: str) -> h5py.File:
        if self._pid != os.getpid():  # handles inherited over fork belong to the parent
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(path)
        if f is None:
            f = self._files[path] = _open(Path(path))
        return f

    def __getitem__(self, i: int):
        path, row = self.rows[i]
        f = self._file(path)
        if self.which == "both":
            clip = tuple(_read_row(f, path, row, name) for name in CLIP_DATASETS)
        else:
            clip = _read_row(f, path, row, self.which)
        if self.which == "both":
            clip = tuple(torch.from_numpy(c) for c in clip)
        else:
            clip = torch.from_numpy(clip)
        return clip, self.labels[i], i

    def close(self) -> None:
        if self._pid == os.getpid():
            for f in self._files.values():
                f.close()
        self._files = {}

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._pid = os.getpid()
