"""The training data path against the raw read of the clips, on one core, side by side in one run.

(a) raw read: every clip's uint8 pixels read from the HDF5 shards (`ClipDataset[i]`), in the
    epoch's shuffled order: what no data path can beat;
(b) new path: the train loader as `dlkdd teacher` builds it (`loaders.train_loader`, uint8 windows
    and boxes, `num_workers = 0` on the one core) plus the views made after it on the CPU device
    (`loaders.input_fn` -> `views.make_views`): float (B, 3, T, crop, crop), standardised;
(b0) the same before issue 22's second round, kept here as the baseline: every item drew its view
    afresh (`views._drawn_view.__wrapped__`, ~60 us a call) where `view_params` now memoises it;
(c) old path (0.3.0), kept here as the reference and nowhere in the package: the dataset made each
    item's float view on the CPU (`apply_view` + `normalize` per clip) and the loader collated floats;
(d) the new loader alone (uint8 windows and boxes, no views): the CPU's share when the views run
    on a GPU; (d0) the same with (b0)'s items.

Every pass is epoch 0 (the same views), so the memo is warm as it is from the second epoch a
training run draws the same (clip, view) pairs.

Prints clips/s of each, the ratios (b)/(a) (goal >= 0.5), (b0)/(a), (c)/(a) and (d)/(a), and the profile
of one batch on the one core: `make_views` and its parts (the uint8 -> float copy with its permute,
`F.interpolate`, the flips, the multiply-add, the rest), the loader's per-item parts (read, view,
window, collate), and the floors that bound (b): one float32 pass over the views, torch's
channels-last resize with the transposes it needs, the uint8 resize and how far off it is. The cache
is synthetic shards written by the project's shard writer at the size users train: 16 frames of
128x128 (the bundled sample's square frames at short side 128), crop 112, 4 views, min_scale 0.7,
batch 8. Run: `python benchmarks/loader.py [--clips N] [--rounds R] [--width W]`.
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
from torch.utils.data import DataLoader, Dataset, default_collate

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import interleaved, verdict  # noqa: E402

from dlkdd.pipeline.config import Config, TrainConfig  # noqa: E402
from dlkdd.pipeline.datasets.clips import ViewDataset, draw_view  # noqa: E402
from dlkdd.pipeline.datasets.shards import ClipDataset, write_shard  # noqa: E402
from dlkdd.pipeline.datasets.views import (  # noqa: E402
    _affine,
    _drawn_view,
    apply_view,
    make_views,
    normalize,
    view_params,
    window,
)
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


class DrawnViews(ViewDataset):
    """(b0)'s item: `ViewDataset`'s (x, y, (clip id, view)) with the view drawn afresh, as before
    `view_params` memoised it."""

    def __getitem__(self, i: int):
        v = self.view_of(i)
        i = self.clip_of(i)
        clip, y, _ = self.clips[i]
        cid = self.clips.clip_ids[i]
        box = _drawn_view.__wrapped__(int(self.cfg.view_seed), float(self.cfg.min_scale), int(cid), v, self.H, self.W)
        return window(clip, box), y, torch.tensor([cid, v])


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


def profile(batch, clips, loader, item_set, d, T: int, rounds: int) -> dict[str, float]:
    """ms per clip of one batch's views, split by operation, of the loader's per-item work, and of the
    floors that bound (b); plus the uint8 resize's error in grey levels."""
    px, rows = batch.pixels, batch.boxes.tolist()
    c, B = d.crop, len(rows)
    scale, bias = _affine(STATS, px.device)
    boxes = [px[k, :, y0:y0 + bh, x0:x0 + bw] for k, (y0, x0, bh, bw, _) in enumerate(rows)]
    planes = [torch.empty(3, T, bh, bw) for _, _, bh, bw, _ in rows]
    for box, x in zip(boxes, planes):
        x.copy_(box.permute(3, 0, 1, 2))
    sized = [F.interpolate(x.view(1, 3 * T, *x.shape[2:]), size=(c, c), mode="bilinear", align_corners=False)
             .view(3, T, c, c) for x in planes]
    out = make_views(px, batch.boxes, c, STATS)
    dest = torch.empty_like(out)
    # torch's channels-last resize with the 3 x T planes as channels: its input and output layouts
    wide = [x.view(1, 3 * T, *x.shape[2:]).contiguous(memory_format=torch.channels_last) for x in planes]
    wide_out = [F.interpolate(x, size=(c, c), mode="bilinear", align_corners=False) for x in wide]
    u8 = [box.permute(0, 3, 1, 2) for box in boxes]  # (T, 3, h, w), channels last: the AVX2 uint8 kernel
    order = [i for _, i in loader.sampler][:B]
    items = [item_set[i] for i in order]
    cids = [clips.clip_ids[i] for i in order]
    pixels = [clips[i][0] for i in order]
    views = [view_params(cid, 1, *clips.shape[1:], d) for cid in cids]

    def flip():
        for x, row in zip(sized, rows):
            if row[4]:
                x.flip(-1)

    def affine():
        for k, x in enumerate(sized):
            torch.mul(x, scale, out=dest[k]).add_(bias)

    parts = {
        "views": lambda: make_views(px, batch.boxes, c, STATS),
        "copy": lambda: [x.copy_(box.permute(3, 0, 1, 2)) for box, x in zip(boxes, planes)],
        "resize": lambda: [F.interpolate(x.view(1, 3 * T, *x.shape[2:]), size=(c, c), mode="bilinear",
                                         align_corners=False) for x in planes],
        "flip": flip,
        "affine": affine,
        "pass": lambda: dest.copy_(out),
        "read": lambda: [clips[i] for i in order],
        "view": lambda: [view_params(cid, 1, *clips.shape[1:], d) for cid in cids],
        "drawn": lambda: [_drawn_view.__wrapped__(d.view_seed, d.min_scale, cid, 1, *clips.shape[1:]) for cid in cids],
        "draw": lambda: [draw_view(0, 0, cid, d.views) for cid in cids],
        "window": lambda: [window(clip, view) for clip, view in zip(pixels, views)],
        "collate": lambda: default_collate(items),
        "wide_resize": lambda: [F.interpolate(x, size=(c, c), mode="bilinear", align_corners=False) for x in wide],
        "wide_in": lambda: [box.contiguous().view(1, T, box.shape[1], -1).contiguous(memory_format=torch.channels_last)
                            .float() for box in boxes],
        "wide_out": lambda: [dest[k].view(3 * T, c * c).copy_(y.permute(0, 2, 3, 1).reshape(c * c, 3 * T).t())
                             for k, y in enumerate(wide_out)],
        "uint8_resize": lambda: [F.interpolate(x, size=(c, c), mode="bilinear", align_corners=False) for x in u8],
    }
    times = interleaved(parts, rounds=max(5, rounds * 3))
    ms = {k: 1e3 * min(v) / B for k, v in times.items()}
    noise = [torch.randint(0, 256, x.shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(k))
             .contiguous(memory_format=torch.channels_last) for k, x in enumerate(u8)]  # smooth clips hide the error
    errors = [(F.interpolate(x, size=(c, c), mode="bilinear", align_corners=False).float()
               - F.interpolate(x.float(), size=(c, c), mode="bilinear", align_corners=False)).abs() for x in noise]
    ms["uint8_max_error"] = max(e.max().item() for e in errors)
    ms["uint8_share_over_half"] = sum((e > 0.5 + 1e-4).sum().item() for e in errors) / sum(e.numel() for e in errors)
    return ms


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
        before_set = DrawnViews(clips, d, seed=tcfg.seed, stats=STATS)
        old_set = OldViews(clips, d, tcfg.seed, STATS)
        loader = train_loader(new_set, tcfg, device)
        before_loader = train_loader(before_set, tcfg, device)
        to_input = input_fn(new_set, device)
        # the same order and views as (b): the epoch's shuffle of (b)'s sampler, as plain indices
        old_loader = DataLoader(old_set, batch_size=tcfg.batch_size, num_workers=0,
                                sampler=_Indices(loader.sampler))
        epoch = [0]

        def raw():
            begin_epoch(loader, epoch[0])
            for _, i in loader.sampler:
                clips[i]

        def through(which, views: bool):
            def run():
                begin_epoch(which, epoch[0])
                for x, _, _ in which:
                    if views:
                        to_input(x)
            return run

        def old():
            begin_epoch(loader, epoch[0])
            old_set.set_epoch(epoch[0])
            for _ in old_loader:
                pass

        variants = {"raw": raw, "new": through(loader, True), "before": through(before_loader, True), "old": old,
                    "loader": through(loader, False), "loader0": through(before_loader, False)}
        times = interleaved(variants, rounds=args.rounds)
        begin_epoch(loader, 0)
        batch = next(iter(loader))[0]
        ms = profile(batch, clips, loader, new_set, d, T, args.rounds)
        n = len(clips)
        rate = {k: n / min(v) for k, v in times.items()}
        ratio = {k: rate[k] / rate["raw"] for k in rate}
        med = {k: statistics.median(r / w for r, w in zip(times["raw"], times[k])) for k in times}
        sample = window(clips[0][0], view_params(0, 1, H, W, d))
        clips.close()

    print(f"{n} clips of {T}x{H}x{W}x3 uint8 ({T * H * W * 3 / 1e6:.2f} MB), window {tuple(sample.pixels.shape)}, "
          f"crop {d.crop}, V {d.views}, min_scale {d.min_scale}, batch {tcfg.batch_size}, num_workers 0, "
          f"{where}, torch threads {torch.get_num_threads()}, {args.rounds} interleaved rounds (best)")
    names = {"raw": "(a) raw uint8 read from the shards",
             "new": "(b) new path (loader + views on the device)",
             "before": "(b0) before: the same, views drawn afresh",
             "old": "(c) old path (float views per clip, 0.3.0)",
             "loader": "(d) new loader alone (views on a GPU)",
             "loader0": "(d0) before: loader alone, views drawn afresh"}
    for k, name in names.items():
        print(f"{name:47s} {rate[k]:8.1f} clips/s  ({1e3 / rate[k]:.2f} ms/clip)  ratio to (a) {ratio[k]:.2f} "
              f"(median over rounds {med[k]:.2f})")
    print(f"ratio (b)/(a): {ratio['new']:.2f}, goal >= 0.5: {verdict(ratio['new'], 0.5)}; before (b0)/(a): "
          f"{ratio['before']:.2f}; (b)/(b0): {rate['new'] / rate['before']:.2f}x; (d)/(a): {ratio['loader']:.2f}, "
          f"before (d0)/(a): {ratio['loader0']:.2f}")
    rest = ms["views"] - ms["copy"] - ms["resize"] - ms["flip"] - ms["affine"]
    print(f"profile, ms/clip of one batch: make_views {ms['views']:.2f} = uint8->float copy with permute "
          f"{ms['copy']:.2f} + F.interpolate {ms['resize']:.2f} + flips {ms['flip']:.2f} + multiply-add "
          f"{ms['affine']:.2f} + the rest (slicing, allocation, Python) {rest:.2f}")
    print(f"  loader per item: read {ms['read']:.2f}, view_params {ms['view']:.3f} (drawn afresh {ms['drawn']:.3f}), "
          f"draw_view {ms['draw']:.3f}, window {ms['window']:.3f}, default_collate {ms['collate']:.2f}")
    budget = 2e3 / rate["raw"] - 1e3 / rate["loader"]
    print(f"  floors: views may cost {budget:.2f} ms/clip for (b)/(a) = 0.5 beside this loader; one float32 pass over "
          f"the views (a copy) {ms['pass']:.2f}; channels-last resize (3T planes as channels) {ms['wide_resize']:.2f}"
          f" + the transposes it needs: in {ms['wide_in']:.2f}, out {ms['wide_out']:.2f}; uint8 resize "
          f"{ms['uint8_resize']:.2f}, off by up to {ms['uint8_max_error']:.2f} grey levels "
          f"(random pixels; {100 * ms['uint8_share_over_half']:.0f}% of values by more than 0.5)")
    print("runs (s): " + "; ".join(f"{k} " + ", ".join(f"{t:.2f}" for t in v) for k, v in times.items()))


if __name__ == "__main__":
    t0 = time.perf_counter()
    main()
    print(f"total {time.perf_counter() - t0:.0f} s")
