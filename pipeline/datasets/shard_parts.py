"""The clip cache as a resumable set of shards: which videos go in which shard, the part file
that marks a shard finished (`parts/shard-NNNNN.json`: its rows, errors, size and sha256 under
a fingerprint), the writer that turns finished videos into shards, and index.json assembled
from the parts.

A shard is written (to `*.tmp`, flushed and renamed) before its part file, so a part file
names a whole shard; a rerun keeps the shards whose part file carries its fingerprint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine import atomic, failpoints
from ..engine.digest import file_digest
from ..names import CLIP_ERRORS, CLIP_INDEX
from .moments import input_statistics


@dataclass(frozen=True)
class Job:
    """One video to turn into clips."""
    vid: int  # position in the dataset's video order (train, then validation, then test)
    path: str
    rel: str
    split: str
    label: int


def shard_plan(jobs: list[Job], shard_size: int, clips_per_video: int) -> list[list[Job]]:
    """Consecutive videos, as many per shard as fill `shard_size` clips (at least one)."""
    per = max(1, shard_size // clips_per_video)
    return [jobs[i:i + per] for i in range(0, len(jobs), per)]


def part_path(out: Path, i: int) -> Path:
    return out / "parts" / f"shard-{i:05d}.json"


def shard_name(i: int) -> str:
    return f"shard-{i:05d}.h5"


def part_is_done(out: Path, i: int, fingerprint: str) -> bool:
    """Shard i was finished under this fingerprint and is still byte for byte what was written."""
    try:
        part = json.loads(part_path(out, i).read_text())
    except (FileNotFoundError, ValueError):
        return False
    if part.get("fingerprint") != fingerprint or not isinstance(part.get("rows"), list):
        return False
    if not part["rows"]:
        return True
    shard = out / shard_name(i)
    # A shard damaged since (bit rot, a stray write) is redone, never kept: size, then content.
    return (shard.exists() and shard.stat().st_size == part.get("size")
            and file_digest(shard, checksum=True) == part.get("sha256"))


def remove_stale_shards(out: Path, keep: set[int], total: int) -> None:
    """Shards from another configuration (or beyond the plan) must not be mistaken for ours."""
    for p in [*out.glob("shard-*.h5"), *(out / "parts").glob("shard-*.json"), *out.glob("*.tmp"),
              *(out / "parts").glob("*.tmp")]:
        try:
            i = int(p.name.split("-")[1].split(".")[0])
        except (IndexError, ValueError):
            i = -1
        if i not in keep or i >= total or p.name.endswith(".tmp"):
            p.unlink(missing_ok=True)


class ShardWriter:
    """Collects finished videos and writes each shard (then its part file) once it is complete.

    A video's result is {"job", "original", "enhanced", "indices", "size", "moments"}, or
    {"job", "error": reason} for one that could not be read."""

    def __init__(self, out: Path, plan: list[list[Job]], fingerprint: str, compression: str):
        self.out, self.plan, self.fingerprint, self.compression = out, plan, fingerprint, compression
        self.written = 0  # shards finished by this run
        self.shard_of = {job.vid: i for i, jobs in enumerate(plan) for job in jobs}
        self.pending: dict[int, dict[int, dict]] = {}

    def add(self, result: dict) -> None:
        job = result["job"]
        i = self.shard_of[job.vid]
        bucket = self.pending.setdefault(i, {})
        bucket[job.vid] = result
        if len(bucket) == len(self.plan[i]):
            self.write(i, [bucket[j.vid] for j in self.plan[i]])
            del self.pending[i]

    def write(self, i: int, results: list[dict]) -> None:
        # deferred: h5py and torch; the enhance stage starts its cluster before this process loads torch
        from .shards import write_shard
        ok = [r for r in results if "error" not in r]
        rows, errors = _rows_and_errors(results)
        part = {"fingerprint": self.fingerprint, "rows": rows, "errors": errors}
        if ok:
            original = np.concatenate([r["original"] for r in ok])
            enhanced = np.concatenate([r["enhanced"] for r in ok])
            path = write_shard(self.out / shard_name(i), original, enhanced,
                               np.array([row["label"] for row in rows], dtype=np.int64),
                               [row["video"] for row in rows],
                               np.array([row["frames"] for row in rows], dtype=np.int32),
                               compression=self.compression)
            part.update(size=path.stat().st_size, sha256=file_digest(path, checksum=True))
        atomic.write_json(part_path(self.out, i), part)  # after the shard: the part file marks it whole
        self.written += 1
        failpoints.reached("enhance:shard")  # tests: a stop after a finished shard


def _rows_and_errors(results: list[dict]) -> tuple[list[dict], list[dict]]:
    """A part file's rows (one per clip, in shard row order) and errors (one per unreadable video)."""
    rows, errors = [], []
    for r in results:
        job = r["job"]
        if "error" in r:
            # named relative to the dataset root, as everything in the cache: a moved dataset
            # (or cache) leaves errors.json, and so every downstream stage, unchanged
            reason = r["error"]
            if reason.startswith(job.path):
                reason = job.rel + reason[len(job.path):]
            errors.append({"video": job.rel, "path": job.rel, "split": job.split, "reason": reason})
            continue
        for c, moments in enumerate(r["moments"]):
            rows.append({"video": job.rel, "split": job.split, "label": job.label, "clip": c,
                         "frames": r["indices"][c].tolist(), "source_size": r["size"],
                         "mean_original": round(sum(moments["original"][:3]) / 3, 5),
                         "mean_enhanced": round(sum(moments["enhanced"][:3]) / 3, 5),
                         "moments": moments})
    return rows, errors


def read_parts(out: Path, shards: int) -> tuple[list[dict], list[dict]]:
    """Every clip of the part files (numbered, with its shard and row) and every error, in shard order."""
    clips, errors = [], []
    for i in range(shards):
        part = json.loads(part_path(out, i).read_text())
        for row, item in enumerate(part["rows"]):
            clips.append({"id": len(clips), "shard": shard_name(i), "row": row, **item})
        errors += part["errors"]
    return clips, errors


def write_index(out: Path, clips: list[dict], errors: list[dict], classes: list[str], T: int,
                size: tuple[int, int], groups: dict | None = None) -> None:
    """index.json (the train clips' statistics, the groups and videos on each side of the validation
    carve-out; the clips' moments dropped) and errors.json."""
    stats = input_statistics(clips)
    for c in clips:
        del c["moments"]
    index = {"format_version": 1, "classes": classes, "T": T, "H": size[0], "W": size[1],
             "normalize": stats, "validation_groups": groups or {},
             "clips": clips}  # videos relative to the dataset root, which may move
    atomic.write_json(out / CLIP_INDEX, index)
    atomic.write_json(out / CLIP_ERRORS, errors)
