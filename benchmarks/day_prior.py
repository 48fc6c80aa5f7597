"""Is the sample's normal-light set (data/sample/day) a useful prior for its dark set?

Trains a model on the day clips, then on the (gamma-enhanced or raw) dark clips from
that start or from scratch, and prints test top-1 on the dark test split for each,
over several seeds. A scratch check of the dataset (not the pipeline's stages):
16 frames per video (one uniform clip), 32x32, per-stream mean/std normalisation,
random flips and shifts, AdamW with cosine decay.

    python benchmarks/day_prior.py [--device cuda] [--seeds 0,1,2] [--model r3d_tiny] [--raw]
"""
from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dlkdd.models import build
from dlkdd.pipeline.config import DataConfig
from dlkdd.pipeline.datasets.decode import decode_clips
from dlkdd.pipeline.datasets.splits import read_dataset

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
GAMMA = 2.5


def load(root: Path, split: str, frames: int, size: int):
    """(clips uint8 (N, T, H, W, 3), labels) of one split."""
    index = read_dataset(DataConfig(), root)
    entries = index.train if split == "train" else index.test
    with ThreadPoolExecutor(8) as pool:
        clips = list(pool.map(lambda e: decode_clips(e.path, frames, 1, size)[0][0], entries))
    return np.stack(clips), np.array([e.label for e in entries])


def to_tensor(clips: np.ndarray, enhance: bool) -> torch.Tensor:
    x = torch.from_numpy(clips).float().div(255).permute(0, 4, 1, 2, 3)  # N, C, T, H, W
    return x.pow(1 / GAMMA) if enhance else x


def normalise(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    mean = ref.mean(dim=(0, 2, 3, 4), keepdim=True)
    std = ref.std(dim=(0, 2, 3, 4), keepdim=True)
    return (x - mean) / std


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    flip = torch.rand(len(x), generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None, None].to(x.device), x.flip(-1), x)
    dy, dx = torch.randint(-3, 4, (2,), generator=gen).tolist()
    return torch.roll(x, (dy, dx), dims=(-2, -1))


def fit(model, x, y, epochs: int, seed: int, lr: float = 3e-3, batch: int = 8) -> None:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((len(x) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(augment(x[idx], gen)), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()


@torch.no_grad()
def top1(model, x, y) -> float:
    model.eval()
    pred = torch.cat([model(x[i:i + 64]).argmax(1) for i in range(0, len(x), 64)])
    return 100.0 * (pred == y).float().mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=SAMPLE)
    ap.add_argument("--model", default="r3d_tiny")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--raw", action="store_true", help="also train on the raw (unenhanced) dark clips")
    args = ap.parse_args()
    dev = torch.device(args.device)
    start = time.perf_counter()
    day_tr, day_te = load(args.root / "day", "train", 16, 32), load(args.root / "day", "test", 16, 32)
    dark_tr, dark_te = load(args.root, "train", 16, 32), load(args.root, "test", 16, 32)
    print(f"decoded in {time.perf_counter() - start:.1f} s: day {len(day_tr[1])}/{len(day_te[1])}, "
          f"dark {len(dark_tr[1])}/{len(dark_te[1])} train/test")
    lab = lambda s: torch.from_numpy(s[1]).to(dev)  # noqa: E731
    dayx = to_tensor(day_tr[0], False)
    day = (normalise(dayx, dayx).to(dev), lab(day_tr),
           normalise(to_tensor(day_te[0], False), dayx).to(dev), lab(day_te))
    dark = {}
    inputs = ((True, "dark-enh"), (False, "dark-raw")) if args.raw else ((True, "dark-enh"),)
    for enh, _ in inputs:
        ref = to_tensor(dark_tr[0], enh)
        dark[enh] = (normalise(ref, ref).to(dev), lab(dark_tr), normalise(to_tensor(dark_te[0], enh), ref).to(dev),
                     lab(dark_te))
    rows = {"day->day test": [], "day->dark-enh zero-shot": []}
    for _, name in inputs:
        rows.update({f"scratch {name}": [], f"day+ft {name}": []})
    for seed in [int(s) for s in args.seeds.split(",")]:
        torch.manual_seed(seed)
        pre = build(args.model, 6, dropout=0.3).to(dev)
        fit(pre, day[0], day[1], args.epochs, seed, batch=args.batch)
        rows["day->day test"].append(top1(pre, day[2], day[3]))
        rows["day->dark-enh zero-shot"].append(top1(pre, dark[True][2], dark[True][3]))
        state = {k: v.clone() for k, v in pre.state_dict().items()}
        for enh, name in inputs:
            xtr, ytr, xte, yte = dark[enh]
            torch.manual_seed(seed)
            scratch = build(args.model, 6, dropout=0.3).to(dev)
            fit(scratch, xtr, ytr, args.epochs, seed, batch=args.batch)
            rows[f"scratch {name}"].append(top1(scratch, xte, yte))
            tuned = build(args.model, 6, dropout=0.3).to(dev)
            tuned.load_state_dict(state)
            fit(tuned, xtr, ytr, args.epochs, seed, lr=1e-3, batch=args.batch)
            rows[f"day+ft {name}"].append(top1(tuned, xte, yte))
        print(f"seed {seed} done at {time.perf_counter() - start:.0f} s", flush=True)
    print(f"\n{args.model}, {args.epochs} epochs, batch {args.batch}, seeds {args.seeds}: test top-1 % (mean +- sd)")
    for name, vals in rows.items():
        print(f"  {name:26s} {np.mean(vals):5.1f} +- {np.std(vals, ddof=1) if len(vals) > 1 else 0:4.1f}  "
              f"{[round(v, 1) for v in vals]}")


if __name__ == "__main__":
    main()
