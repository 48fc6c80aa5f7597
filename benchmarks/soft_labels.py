"""Soft labels from the clip cache vs the teacher run per clip from decoded video, side by side.

(a) ours: `soft-labels` reads each cached enhanced clip once, cuts all V views and
    runs B clips x V views through the teacher in one batched pass.
(b) baseline: for each video, decode with decord, resize, enhance (gamma), cut each
    view and run the teacher on one clip at a time, as an online-distillation
    loop would every epoch.
Both label the same clips with the same randomly initialised teacher of the
sample's default size, so the logits must agree; the script prints clips/s of
each, the ratio and max |a - b|.

    python benchmarks/soft_labels.py [--videos 24] [--batch 32] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dlkdd import models  # noqa: E402
from dlkdd.pipeline.config import DataConfig, EnhancerConfig  # noqa: E402
from dlkdd.pipeline.datasets.decode import decode_clips  # noqa: E402
from dlkdd.pipeline.datasets.shards import ClipDataset, write_shard  # noqa: E402
from dlkdd.pipeline.datasets.splits import read_dataset  # noqa: E402
from dlkdd.pipeline.datasets.views import apply_view, clip_views  # noqa: E402
from dlkdd.pipeline.enhancers.apply import enhance_frames  # noqa: E402
from dlkdd.pipeline.enhancers.build import make_enhancer  # noqa: E402
from dlkdd.pipeline.stages.soft_labels import teacher_logits  # noqa: E402

SAMPLE = ROOT / "data" / "sample"
MODEL = "r2plus1d_small"


def videos(n: int, work: Path) -> tuple[list[tuple[str, int]], list[str], str]:
    """The first n videos (train then test) of data/sample, or of a freshly generated sample."""
    root, source = SAMPLE, "data/sample"
    if not (SAMPLE / "splits" / "train.txt").exists():
        from dlkdd.pipeline.datasets.sample import make_sample
        root, source = work / "sample", "generated"
        t0 = time.perf_counter()
        make_sample(root, classes=6, videos_per_class=max(2, math.ceil(n / 6)), test_per_class=1,
                    day_videos_per_class=0)
        source += f" in {time.perf_counter() - t0:.1f} s"
    index = read_dataset(DataConfig(), root)
    entries = [*index.entries("train"), *index.entries("test")]
    step = max(1, len(entries) // n)  # spread over the classes, not the first class only
    chosen = entries[::step][:n]
    return [(e.path, e.label) for e in chosen], list(index.classes), f"{source}: {root}"


def decode_enhanced(path: str, cfg: DataConfig, gamma) -> tuple[np.ndarray, np.ndarray]:
    """One clip of a video as the enhance stage makes it: (original, enhanced) (T, H, W, 3) uint8."""
    frames, indices = decode_clips(path, cfg.frames, 1, cfg.short_side, cfg.max_long_side)
    original = frames[0]
    return original, enhance_frames(gamma, original), indices[0]


def build_cache(vids, classes, cfg: DataConfig, gamma, out: Path) -> Path:
    """One shard plus index.json, as `dlkdd enhance` would write for these videos."""
    rows = [decode_enhanced(path, cfg, gamma) for path, _ in vids]
    shape = rows[0][0].shape
    keep = [i for i, r in enumerate(rows) if r[0].shape == shape]  # one clip size per cache
    write_shard(out / "shard-00000.h5", np.stack([rows[i][0] for i in keep]),
                np.stack([rows[i][1] for i in keep]), [vids[i][1] for i in keep],
                [vids[i][0] for i in keep], np.stack([rows[i][2] for i in keep]))
    T, H, W, _ = shape
    index = {"format_version": 1, "classes": classes, "T": T, "H": H, "W": W, "root": "benchmark",
             "clips": [{"id": j, "video": vids[i][0], "split": "train", "label": vids[i][1],
                        "shard": "shard-00000.h5", "row": j, "clip": 0} for j, i in enumerate(keep)]}
    (out / "index.json").write_text(json.dumps(index))
    return out / "index.json"


def ours(model, index: Path, cfg: DataConfig, batch: int) -> tuple[np.ndarray, float]:
    clips = ClipDataset.from_index(index, None, "enhanced")
    t0 = time.perf_counter()
    logits = np.concatenate([z for _, z in teacher_logits(model, clips, cfg, batch)])
    seconds = time.perf_counter() - t0
    clips.close()
    return logits, seconds


@torch.inference_mode()
def baseline(model, vids, cfg: DataConfig, gamma) -> tuple[np.ndarray, float, float]:
    out, decode_s = [], 0.0
    t0 = time.perf_counter()
    for cid, (path, _) in enumerate(vids):
        t1 = time.perf_counter()
        _, enhanced, _ = decode_enhanced(path, cfg, gamma)
        decode_s += time.perf_counter() - t1
        H, W = enhanced.shape[1:3]
        out.append([model(apply_view(enhanced, v, cfg.crop)[None])[0].numpy()
                    for v in clip_views(cid, H, W, cfg)])
    return np.array(out, dtype=np.float32), time.perf_counter() - t0, decode_s


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=24, help="videos to label (one clip each)")
    ap.add_argument("--batch", type=int, default=32, help="clips per batched forward pass (ours)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = DataConfig(frames=16, short_side=64, crop=56, views=4)
    gamma = make_enhancer(EnhancerConfig(kind="gamma"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        vids, classes, source = videos(args.videos, work)
        t0 = time.perf_counter()
        index = build_cache(vids, classes, cfg, gamma, work / "clips")
        cache_s = time.perf_counter() - t0
        vids = [(c["video"], c["label"]) for c in json.loads(index.read_text())["clips"]]
        torch.manual_seed(0)
        model = models.build(MODEL, len(classes)).eval()
        with torch.inference_mode():  # first-call allocations out of both timings
            model(torch.zeros(2, 3, cfg.frames, cfg.crop, cfg.crop))
        a, a_s = ours(model, index, cfg, args.batch)
        b, b_s, decode_s = baseline(model, vids, cfg, gamma)
    n, V = len(vids), cfg.views
    print(f"videos: {n} ({source}); teacher {MODEL} random init, {len(classes)} classes; "
          f"T={cfg.frames} crop={cfg.crop} V={V}; torch threads {torch.get_num_threads()}")
    print(f"cache build (decode + gamma + shard write, done once by `enhance`): {cache_s:.2f} s")
    print(f"(a) ours, cached clips, batched all-views pass (batch {args.batch}): "
          f"{a_s:.2f} s = {n / a_s:.2f} clips/s ({n * V / a_s:.1f} clip-views/s)")
    print(f"(b) baseline, decode + enhance + per-clip forward:          "
          f"{b_s:.2f} s = {n / b_s:.2f} clips/s ({n * V / b_s:.1f} clip-views/s; decode+enhance {decode_s:.2f} s)")
    print(f"ratio (a)/(b) clips/s: {b_s / a_s:.2f}x")
    print(f"max |a - b| of the logits: {float(np.abs(a - b).max()):.2e} (shape {a.shape})")


if __name__ == "__main__":
    main()
