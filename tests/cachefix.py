"""A tiny clip cache made from synthetic arrays (no videos): for stage tests downstream of enhance."""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from dlkdd.pipeline.datasets.moments import channel_moments, input_statistics
from dlkdd.pipeline.datasets.shards import write_shard


def make_clip_cache(clips_dir: Path, classes: int = 3, train_per_class: int = 6, test_per_class: int = 2,
                    T: int = 4, H: int = 20, W: int = 24, test_clips: int = 2, shard_size: int = 8,
                    seed: int = 0, val_per_class: int = 2, train_clips: int = 1) -> dict:
    """Write `clips_dir/shard-*.h5` and `index.json` as the enhance stage would (train, then
    validation, then test videos; validation and test videos have `test_clips` clips each).

    Each class has its own bright moving bar direction, so a model can learn it quickly.
    Returns the index dict.
    """
    rng = np.random.default_rng(seed)
    clips_dir = Path(clips_dir)
    clips_dir.mkdir(parents=True, exist_ok=True)
    rows = []  # (video, split, label, clip, original, enhanced, frames)
    for split, per, ncl in (("train", train_per_class, train_clips), ("val", val_per_class, test_clips),
                            ("test", test_per_class, test_clips)):
        for label in range(classes):
            for n in range(per):
                video = f"C{label}/C{label}_{split}_{n}.mp4"
                for c in range(ncl):
                    enh = rng.integers(0, 60, size=(T, H, W, 3)).astype(np.uint8)
                    for t in range(T):
                        pos = (t * (label + 1) + n + c) % W
                        enh[t, :, pos, :] = 230
                    orig = (enh // 8).astype(np.uint8)
                    rows.append((video, split, label, c, orig, enh, list(range(c, c + T))))
    clips = []
    for s in range(0, len(rows), shard_size):
        chunk = rows[s:s + shard_size]
        name = f"shard-{s // shard_size:05d}.h5"
        write_shard(clips_dir / name, np.stack([r[4] for r in chunk]), np.stack([r[5] for r in chunk]),
                    np.array([r[2] for r in chunk]), [r[0] for r in chunk],
                    np.array([r[6] for r in chunk], dtype=np.int32))
        for row, r in enumerate(chunk):
            clips.append({"id": len(clips), "video": r[0], "split": r[1], "label": r[2], "shard": name,
                          "row": row, "clip": r[3], "frames": r[6]})
    moments = [{"split": r[1], "moments": {"original": channel_moments(r[4]), "enhanced": channel_moments(r[5])}}
               for r in rows]
    index = {"format_version": 1, "classes": [f"C{k}" for k in range(classes)], "T": T, "H": H, "W": W,
             "root": "synthetic", "normalize": input_statistics(moments), "clips": clips}
    (clips_dir / "index.json").write_text(json.dumps(index))
    (clips_dir / "errors.json").write_text("[]")
    return index


def mark_all_fresh(graph) -> None:
    """Records for every stage of `graph` as a finished run would leave them (one small output each)."""
    for name in graph.stages:
        out = graph.out_dir(name)
        out.mkdir(parents=True, exist_ok=True)
        (out / "done.txt").write_text(name)
        graph.write_record(name, graph.inspect(name), time.time(), {})
