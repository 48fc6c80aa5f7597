"""Cached soft labels vs online distillation: one student epoch each, side by side, in one run.

(a) cached: the student reads the teacher's logits of the drawn view from `logits.h5`
    (what `dlkdd student` does);
(b) online: every step also reads the enhanced clip, cuts the same view and runs the
    teacher forward (eval, no_grad) on it.
Both start from the same student weights and see the same clips, order and views.
Also prints the one-time cost of caching (the soft-labels pass) and the largest
|cached - online| logit difference on the views of the epoch (should be ~0).

Sizes are the sample's defaults: teacher r2plus1d_small, student r3d_tiny, T=16,
crop 56, V=4, batch 16, 64 synthetic train clips at 64x64. Random teacher weights
(speed does not depend on them). Run: `python benchmarks/distill.py [--clips N]`.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from dlkdd import models  # noqa: E402
from dlkdd.pipeline.config import Config  # noqa: E402
from dlkdd.pipeline.datasets.clips import ViewDataset, clips_index, draw_view, read_logits  # noqa: E402
from dlkdd.pipeline.datasets.shards import ClipDataset  # noqa: E402
from dlkdd.pipeline.datasets.views import apply_view, view_params  # noqa: E402
from dlkdd.pipeline.stages.soft_labels import teacher_logits, write_logits  # noqa: E402
from dlkdd.pipeline.training.distill import distillation_loss, make_loss_fn  # noqa: E402
from dlkdd.pipeline.training.loaders import EpochDataset, EpochSampler  # noqa: E402
from dlkdd.pipeline.training.loop import train_one_epoch  # noqa: E402
from dlkdd.pipeline.training.optim import lr_at, make_optimizer  # noqa: E402


def _cachefix():
    spec = importlib.util.spec_from_file_location("cachefix", ROOT / "tests" / "cachefix.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class OnlineViews(Dataset):
    """(original view, y, (enhanced view, cached logits of that view)): what online distillation reads."""

    def __init__(self, clips: ClipDataset, data_cfg, seed: int, logits: np.ndarray):
        self.clips, self.cfg, self.seed, self.logits = clips, data_cfg, seed, logits
        _, self.H, self.W = clips.shape
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int):
        (orig, enh), y, _ = self.clips[i]
        cid = self.clips.clip_ids[i]
        v = draw_view(self.seed, self.epoch, cid, self.cfg.views)  # the draw ViewDataset makes
        view = view_params(cid, v, self.H, self.W, self.cfg)
        return (apply_view(orig, view, self.cfg.crop), y,
                (apply_view(enh, view, self.cfg.crop), torch.from_numpy(self.logits[cid, v])))


def one_epoch(student, dataset, cfg, loss_fn) -> float:
    """Seconds for one training epoch through the shared loop (data loading included)."""
    s = cfg.student
    loader = DataLoader(EpochDataset(dataset, s.seed), batch_size=s.batch_size,
                        sampler=EpochSampler(dataset, s.seed), num_workers=0)
    loader.dataset.set_epoch(0)
    optimizer = make_optimizer(student, s)
    t0 = time.perf_counter()
    train_one_epoch(student, loader, optimizer, loss_fn, step=0,
                    lr_fn=lambda step: lr_at(step, len(loader), 0, s.lr), device=torch.device("cpu"),
                    scaler=torch.amp.GradScaler("cuda", enabled=False), dtype=None, grad_clip=s.grad_clip,
                    desc="bench")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64, help="train clips in the synthetic cache")
    ap.add_argument("--rounds", type=int, default=2, choices=(1, 2),
                    help="epochs of each kind, interleaved (the best is reported)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = Config()  # the sample's defaults: T=16, crop 56, V=4, batch 16, r2plus1d_small -> r3d_tiny
    d, s = cfg.data, cfg.student
    classes = 4
    with tempfile.TemporaryDirectory() as tmp:
        clips_dir = Path(tmp) / "clips"
        _cachefix().make_clip_cache(clips_dir, classes=classes, train_per_class=max(1, args.clips // classes),
                                    test_per_class=0, T=d.frames, H=d.short_side, W=d.short_side,
                                    shard_size=cfg.enhance.shard_size)
        index = clips_index(clips_dir)
        enhanced = ClipDataset.from_index(index, None, "enhanced")
        n = len(enhanced)
        print(f"{n} clips, T={d.frames}, {d.short_side}x{d.short_side} -> crop {d.crop}, V={d.views}, "
              f"batch {s.batch_size}, teacher {cfg.teacher.model}, student {s.model}, "
              f"torch threads {torch.get_num_threads()}")

        torch.manual_seed(1)
        teacher = models.build(cfg.teacher.model, classes).eval()
        t0 = time.perf_counter()  # the soft-labels pass, as the stage runs it
        path = Path(tmp) / "logits.h5"
        write_logits(path, teacher_logits(teacher, enhanced, d, max(1, s.batch_size // d.views)),
                     n, d.views, classes, {"views": d.views})
        cache_s = time.perf_counter() - t0
        logits, _ = read_logits(path)

        torch.manual_seed(s.seed)
        init = models.build(s.model, classes).state_dict()
        student = models.build(s.model, classes)
        warm = torch.rand(s.batch_size, 3, d.frames, d.crop, d.crop)  # first calls allocate, pick kernels
        student.train()
        student(warm).sum().backward()
        with torch.no_grad():
            teacher(warm)

        cached_set = ViewDataset(ClipDataset.from_index(index, "train", "original"), d, seed=s.seed, logits=logits)
        online_set = OnlineViews(ClipDataset.from_index(index, "train", "both"), d, s.seed, logits)
        diffs, teacher_s = [], [0.0]

        def online_loss(z_s, y, extra):
            x_t, cached_rows = extra
            t = time.perf_counter()
            with torch.no_grad():
                z_t = teacher(x_t)
            teacher_s[0] += time.perf_counter() - t
            diffs.append((z_t - cached_rows).abs().max().item())
            return distillation_loss(z_s, y, z_t, s.alpha, s.temperature)

        times = {"cached": [], "online": []}
        for kind in ("cached", "online", "cached", "online")[:args.rounds * 2]:  # interleaved: load drifts
            student.load_state_dict(init)
            times[kind].append(one_epoch(student, cached_set, cfg, make_loss_fn(s.alpha, s.temperature))
                               if kind == "cached" else one_epoch(student, online_set, cfg, online_loss))
        cached_s, online_s = min(times["cached"]), min(times["online"])

    print(f"soft-labels pass (once, all {n} clips x {d.views} views): {cache_s:7.2f} s")
    show = lambda ts: ", ".join(f"{t:.2f}" for t in ts)  # noqa: E731
    print(f"(a) student epoch, cached logits:      {cached_s:7.2f} s  ({n / cached_s:.1f} clips/s; "
          f"runs {show(times['cached'])})")
    print(f"(b) student epoch, online teacher:     {online_s:7.2f} s  ({n / online_s:.1f} clips/s; "
          f"runs {show(times['online'])}; teacher forward {teacher_s[0] / len(times['online']):.2f} s/epoch)")
    print(f"ratio online / cached: {online_s / cached_s:.2f}x; caching pays for itself after "
          f"{cache_s / max(1e-9, online_s - cached_s):.1f} student epochs")
    print(f"max |cached - online| teacher logit on the epoch's views: {max(diffs):.3g}")


if __name__ == "__main__":
    main()
