"""The training data path against the raw read of the clips, on one core, side by side in one run.

(a) raw read: every clip's uint8 pixels read from the HDF5 shards (`ClipDataset[i]`), in the
    epoch's shuffled order: what no data path can beat;
(b) new path: the train loader as `dlkdd teacher` builds it (`loaders.train_loader`, uint8 windows
    and boxes, `num_workers = 0` on the one core) plus the views made after it on the CPU device
    (`loaders.input_fn` -> `views.make_views`): float (B, 3, T, crop, crop), standardised;
(c) old path (0.3.0), kept here as the reference and nowhere in the package: the dataset made each
    item's float view on the CPU (`apply_view` + `normalize` per clip) and the loader collated floats;
(d) the new loader alone (uint8 windows and boxes, no views): the CPU's share when the views run
    on a GPU.

Prints clips/s of each, the ratios (b)/(a) (goal >= 0.5), (c)/(a) and (d)/(a), and where (b)'s time goes
(`make_views` alone, and `F.interpolate` alone: the resize every view needs). The cache is synthetic
shards written by the project's shard writer at the size users train: 16 frames of 128x128 (the
bundled sample's square frames at short side 128), crop 112, 4 views, min_scale 0.7, batch 8.
Run: `python benchmarks/loader.py [--clips N] [--rounds R] [--width W]`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import interleaved, verdict  # noqa: E402

from dlkdd.pipeline.config import Config, TrainConfig  # noqa: E402
from dlkdd.pipeline.datasets.clips import ViewDataset, draw_view  # noqa: E402
from dlkdd.pipeline.datasets.shards import ClipDataset, write_shard  # noqa: E402
from dlkdd.pipeline.datasets.views import apply_view, make_views, normalize, view_params, window  # noqa: E402
from dlkdd.pipeline.training.loaders import begin_epoch, input_fn, train_loader  # noqa: E402

STATS = {"mean": [0.09, 0.1, 0.08], "std": [0.06, 0.065, 0.055]}  # dark clips' order of magnitude


def write_cache(folder: Path, clips: int, T: int, H: int, W: int, shard_size: int = 256) -> ClipDataset:
    """Shards of smooth dark synthetic clips (content does not change the speed: no compression)."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(0, clips, shard_size):
        n = min(shard_size, clips - s)
        coarse = rng.integers(0, 60, (n, T, H // 8 + 1, W // 8 + 1, 3), dtype=np.uint8)
        pixels = np.ascontiguousarray(np.repeat(np.repeat(coarse, 8, 2), 8, 3)[:, :, :H, :W])
        path = folder / f"shard-{s // shard_size:05d}.h5"
        write_shard(path, pixels, pixels, np.arange(n) % 4, [f"v{s + i}" for i in range(n)],
                    np.tile(np.arange(T, dtype=np.int32), (n, 1)))
        rows += [(path, r) for r in range(n)]
    data = ClipDataset(rows, [i % 4 for i in range(clips)], "enhanced")
    data.shape, data.videos = (T, H, W), [f"v{i}" for i in range(clips)]
    return data


class OldViews(Dataset):
    """0.3.0's ViewDataset item (one clip per item): the float view made on the CPU, per clip."""

    def __init__(self, clips: ClipDataset, data_cfg, seed: int, stats: dict):
        self.clips, self.cfg, self.seed, self.stats = clips, data_cfg, seed, stats
        _, self.H, self.W = clips.shape
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        clip, y, _ = self.clips[i]
        cid = self.clips.clip_ids[i]
        v = draw_view(self.seed, self.epoch, cid, self.cfg.views)
        x = normalize(apply_view(clip, view_params(cid, v, self.H, self.W, self.cfg), self.cfg.crop), self.stats)
        return x, y, torch.tensor([cid, v])


class _Indices:
    """The indices of an EpochSampler's (epoch, index) pairs, in its order."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __iter__(self):
        return (i for _, i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


def one_core() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        where = f"CPU {cpu}"
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        where = "one thread (no affinity)"
    torch.set_num_threads(1)
    return where


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=512, help="clips in the synthetic cache (256 per shard)")
    ap.add_argument("--rounds", type=int, default=3, help="passes of each kind, interleaved (best reported)")
    ap.add_argument("--width", type=int, default=128, help="frame width (128: square; 170: ARID's 4:3)")
    args = ap.parse_args()
    where = one_core()
    cfg = Config()
    d = cfg.data
    d.frames, d.short_side, d.crop, d.views, d.min_scale = 16, 128, 112, 4, 0.7
    T, H, W = d.frames, d.short_side, args.width
    tcfg = TrainConfig(batch_size=8, num_workers=0, seed=0)
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        clips = write_cache(Path(tmp), args.clips, T, H, W)
        new_set = ViewDataset(clips, d, seed=tcfg.seed, stats=STATS)  # items: clips, as (a) reads them
        old_set = OldViews(clips, d, tcfg.seed, STATS)
        loader = train_loader(new_set, tcfg, device)
        to_input = input_fn(new_set, device)
        # the same order and views as (b): the epoch's shuffle of (b)'s sampler, as plain indices
        old_loader = DataLoader(old_set, batch_size=tcfg.batch_size, num_workers=0,
                                sampler=_Indices(loader.sampler))
        epoch = [0]

        def raw():
            begin_epoch(loader, epoch[0])
            for _, i in loader.sampler:
                clips[i]

        def new():
            begin_epoch(loader, epoch[0])
            for x, _, _ in loader:
                to_input(x)

        def shipped():
            begin_epoch(loader, epoch[0])
            for _ in loader:
                pass

        def old():
            begin_epoch(loader, epoch[0])
            old_set.set_epoch(epoch[0])
            for _ in old_loader:
                pass

        # where (b)'s time goes: one batch's views, and the resize alone (the floor of any float path)
        begin_epoch(loader, 0)
        batch = next(iter(loader))[0]
        boxes = batch.boxes.tolist()
        planes = [torch.rand(1, 3 * T, b[2], b[3]) for b in boxes]

        def views_only():
            make_views(batch.pixels, batch.boxes, d.crop, STATS)

        def resize_only():
            for p in planes:
                F.interpolate(p, size=(d.crop, d.crop), mode="bilinear", align_corners=False)

        times = interleaved({"raw": raw, "new": new, "old": old, "loader": shipped}, rounds=args.rounds)
        parts = interleaved({"views": views_only, "resize": resize_only}, rounds=max(5, args.rounds * 3))
        n, b = len(clips), len(boxes)
        rate = {k: n / min(v) for k, v in times.items()}
        per_round = {k: [times[k][r] for r in range(args.rounds)] for k in times}
        new_ratio, old_ratio = rate["new"] / rate["raw"], rate["old"] / rate["raw"]
        med = statistics.median(r / w for r, w in zip(per_round["raw"], per_round["new"]))
        ms = {k: 1e3 * min(v) / b for k, v in parts.items()}
        sample = window(clips[0][0], view_params(0, 1, H, W, d))
        clips.close()

    print(f"{n} clips of {T}x{H}x{W}x3 uint8 ({T * H * W * 3 / 1e6:.2f} MB), window {tuple(sample.pixels.shape)}, "
          f"crop {d.crop}, V {d.views}, min_scale {d.min_scale}, batch {tcfg.batch_size}, num_workers 0, "
          f"{where}, torch threads {torch.get_num_threads()}, {args.rounds} interleaved rounds (best)")
    print(f"(a) raw uint8 read from the shards:         {rate['raw']:8.1f} clips/s  ({1e3 / rate['raw']:.2f} ms/clip)")
    print(f"(b) new path (loader + views on the device): {rate['new']:8.1f} clips/s  ({1e3 / rate['new']:.2f} ms/clip)")
    print(f"(c) old path (float views per clip, 0.3.0):  {rate['old']:8.1f} clips/s  ({1e3 / rate['old']:.2f} ms/clip)")
    print(f"(d) new loader alone (views on a GPU):      {rate['loader']:8.1f} clips/s  "
          f"({1e3 / rate['loader']:.2f} ms/clip)")
    print(f"ratio (b)/(a): {new_ratio:.2f} (median over rounds {med:.2f}; goal >= 0.5: "
          f"{verdict(new_ratio, 0.5)});  ratio (c)/(a): {old_ratio:.2f};  (b)/(c): {rate['new'] / rate['old']:.2f}x;  "
          f"ratio (d)/(a): {rate['loader'] / rate['raw']:.2f}")
    print(f"(b)'s views: make_views {ms['views']:.2f} ms/clip, of which F.interpolate alone {ms['resize']:.2f} ms/clip")
    print("runs (s): " + "; ".join(f"{k} " + ", ".join(f"{t:.2f}" for t in v) for k, v in times.items()))


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
