"""The one training loop, shared by the teacher and the student.

Flat like nanoGPT, shaped like torchvision's references/video_classification:
`train_one_epoch`, `evaluate`, and `train` (their `main`). What it adds:

- Resumable and reproducible: every epoch ends with an atomic `checkpoint.pt`;
  every source of randomness (global RNGs, shuffle order, worker RNGs, view
  draws via `dataset.set_epoch`) is reseeded from (seed, epoch) at the start of
  each epoch, so a run resumed at epoch k ends with the same weights as an
  uninterrupted one (bit-identical on the CPU).
- Datasets yield `(x, y, extra)`; `loss_fn(logits, y, extra)` sees the batched
  `extra` (the student's cached teacher logits, say).
- Runs under torchrun as DistributedDataParallel; only rank 0 writes or prints.

Accuracies (top1, top5) are percentages, as in the papers' tables.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import math
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, get_worker_info

from ...errors import UserError, first_line
from ..config import TrainConfig
from ..engine import ranks, signals
from ..engine.atomic import atomic_path
from ..engine.progress import make_console, progress_bar, say
from ..names import BEST, CHECKPOINT, METRICS, MODEL
from .checkpoints import CheckpointError, load_checkpoint, load_weights_into, save_checkpoint
from .device import amp_dtype, autocast, resolve_device


class LostRankError(UserError, RuntimeError):
    """Another torchrun rank died or stopped answering (one line: what was kept, how to resume)."""


# Seconds a collective may wait for the other ranks before this one gives up: a rank that dies
# without closing its sockets (a lost node) must not hold the others until the job's time limit.
DDP_TIMEOUT = float(os.environ.get("DLKDD_DDP_TIMEOUT", "45"))


# ---------------------------------------------------------------------------- seeding

def derive_seed(*parts: int) -> int:
    """A 32-bit seed mixed from integers (seed, epoch, stream, ...); nearby inputs give unrelated seeds."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


_MAIN, _WORKER, _SHUFFLE = 0, 1, 2  # independent seed streams per (seed, epoch)


class EpochDataset(Dataset):
    """Wraps a dataset so it is indexed by (epoch, i).

    The epoch travels with every index, so each process, including persistent
    DataLoader workers that hold a stale copy of the dataset, enters the new
    epoch itself before its first item: it reseeds its RNGs from (seed, epoch,
    worker id) and calls the dataset's `set_epoch`. Worker RNGs therefore do
    not depend on how many epochs the workers have lived through.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed
        self._entered = None  # (pid, epoch) of the last epoch this process entered

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self._entered = (os.getpid(), epoch)

    def __getitem__(self, key):
        epoch, i = key
        if self._entered != (os.getpid(), epoch):
            info = get_worker_info()
            if info is not None:
                seed_everything(derive_seed(self.seed, epoch, _WORKER, info.id))
            self.set_epoch(epoch)
        return self.dataset[i]


class EpochSampler(Sampler):
    """Yields (epoch, index); the order depends only on (seed, epoch), never on earlier epochs."""

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.epoch = len(dataset), seed, 0
        self.shard = (DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                         seed=seed, drop_last=False) if world > 1 else None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.shard is not None:
            self.shard.set_epoch(epoch)

    def __iter__(self):
        if self.shard is not None:
            order = list(self.shard)
        else:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, _SHUFFLE))
            order = torch.randperm(self.n, generator=g).tolist()
        return iter([(self.epoch, i) for i in order])

    def __len__(self) -> int:
        return len(self.shard) if self.shard is not None else self.n


# ---------------------------------------------------------------------------- pieces

def lr_at(step: int, total_steps: int, warmup_steps: int, peak: float) -> float:
    """Linear warm-up to `peak` over `warmup_steps`, then cosine decay to zero at `total_steps`."""
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return peak * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, extra=None) -> torch.Tensor:
    """The default loss: plain cross-entropy; `extra` is ignored."""
    return F.cross_entropy(logits.float(), y)


def topk_correct(logits: torch.Tensor, y: torch.Tensor, ks=(1, 5)) -> list[int]:
    """How many rows have their label among the top-k logits, for each k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(y.view(-1, 1))
    return [int(hit[:, :min(k, kmax)].any(dim=1).sum()) for k in ks]


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD; biases and norm-layer parameters (the 0-d and 1-d ones) get no weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r} (adamw | sgd)")


def to_device(obj, device: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------- one epoch

def train_one_epoch(model, loader, optimizer, loss_fn, *, step: int, lr_fn: Callable[[int], float],
                    device, scaler, dtype, grad_clip: float, console=None, desc: str = "train") -> tuple[dict, int]:
    """One pass over `loader`; sets the LR every step. Returns local sums and the next step number.
    A live bar (`desc`, running loss, accuracy, clips/s) shows on a terminal `console`."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen, lr, last_shown, batches = 0, lr_fn(step), 0.0, 0
    start = time.perf_counter()
    with progress_bar(console, desc, len(loader)) as update:
        for x, y, extra in loader:
            x, y, extra = to_device(x, device), to_device(y, device), to_device(extra, device)
            lr = lr_fn(step)
            for group in optimizer.param_groups:
                group["lr"] = lr
            with autocast(device, dtype):
                logits = model(x)
                loss = loss_fn(logits, y, extra)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            step, batches = step + 1, batches + 1
            loss_sum += loss.detach().double() * len(y)
            correct += (logits.detach().argmax(1) == y).sum()
            seen += len(y)
            now, text = time.perf_counter(), None
            if now - last_shown > 0.25 or batches == len(loader):  # .item() syncs the GPU; not every step
                last_shown = now
                text = (f"loss {loss_sum.item() / seen:.3f}  acc {100.0 * correct.item() / seen:.1f}%  "
                        f"{seen / (now - start):.1f} clips/s")
            update(batches, text)
    return {"loss_sum": loss_sum.item(), "correct": correct.item(), "n": seen, "lr": lr,
            "seconds": time.perf_counter() - start}, step


# ---------------------------------------------------------------------------- evaluation

@torch.inference_mode()
def _evaluate_sums(model, dataset, batch_size: int, device, num_workers: int = 0) -> dict:
    model.eval()
    device = torch.device(device)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    loss_sum, c1, c5, n = 0.0, 0, 0, 0
    all_logits, all_labels = [], []
    for x, y, _ in loader:
        x, y = to_device(x, device), to_device(y, device)
        with autocast(device):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        top1, top5 = topk_correct(logits, y, (1, 5))
        c1, c5, n = c1 + top1, c5 + top5, n + len(y)
        all_logits.append(logits.cpu())
        all_labels.append(y.cpu())
    logits = torch.cat(all_logits) if all_logits else torch.zeros(0, 0)
    labels = torch.cat(all_labels) if all_labels else torch.zeros(0, dtype=torch.int64)
    return {"loss_sum": loss_sum, "c1": c1, "c5": c5, "n": n, "logits": logits, "labels": labels}


def evaluate(model, dataset, batch_size: int, device="cpu", num_workers: int = 0) -> dict:
    """Cross-entropy, top-1 and top-5 (percent) over `dataset`, plus its logits (N, K) and labels (N,), in order."""
    s = _evaluate_sums(model, dataset, batch_size, device, num_workers)
    n = max(1, s["n"])
    return {"loss": s["loss_sum"] / n, "top1": 100.0 * s["c1"] / n, "top5": 100.0 * s["c5"] / n,
            "logits": s["logits"], "labels": s["labels"]}


# ---------------------------------------------------------------------------- distributed

@dataclasses.dataclass
class DdpGroup:
    """This process's place among the torchrun processes (rank 0 of 1 without torchrun)."""
    rank: int = 0
    world: int = 1
    owned: bool = False  # we called init_process_group, so we tear it down

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        """All-reduce (sum) a few numbers across ranks; identity when not distributed."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64,
                         device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics drift apart between DDP forwards),
        so the sharded validation measures the model rank 0 saves."""
        if self.world > 1:
            for b in model.buffers():
                dist.broadcast(b, 0)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group, if this process joined it."""
        if self.owned:
            dist.destroy_process_group()


def setup_distributed(device: torch.device) -> tuple[DdpGroup, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    if ranks.world_size() <= 1:
        return DdpGroup(), device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank())
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=DDP_TIMEOUT))
    return DdpGroup(dist.get_rank(), dist.get_world_size(), owned), device


def join_group(device: str) -> DdpGroup:
    """The torchrun process group for a stage the engine runs on every rank (see
    `engine.graph.execute_distributed`)."""
    return setup_distributed(torch.device(device))[0]


# ---------------------------------------------------------------------------- run bookkeeping

def read_metrics(path: Path, upto: int) -> list[dict]:
    """Lines of metrics.jsonl for epochs 1..upto (later ones belong to a run that did not checkpoint)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("epoch"), int) and row["epoch"] <= upto:
            rows.append(row)
    return rows


def write_metrics(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


def summarize(history: list[dict], epochs: int, epochs_run: int, resumed_from: int | None) -> dict:
    best = max(history, key=lambda r: r["val_top1"], default=None)  # first of equal maxima
    last = history[-1] if history else None
    return {
        "epochs": epochs,  # epochs of the finished run
        "epochs_run": epochs_run,  # epochs trained by this call
        "resumed_from": resumed_from,  # completed epochs found in the checkpoint (None: fresh start)
        "best_epoch": best and best["epoch"],
        "best_top1": best and best["val_top1"],
        "best_top5": best and best["val_top5"],
        "last_top1": last and last["val_top1"],
        "last_top5": last and last["val_top5"],
        "seconds": sum(r["seconds"] for r in history),
        "clips_per_s": sum(r["clips_per_s"] for r in history) / len(history) if history else 0.0,
    }


def epoch_line(desc: str, row: dict, epochs: int) -> str:
    """One epoch's figures on one line (the log of a run is these lines)."""
    return (f"{desc} epoch {row['epoch']}/{epochs}  "
            f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.1f}%  "
            f"val top1 {row['val_top1']:.1f}% top5 {row['val_top5']:.1f}%  "
            f"lr {row['lr']:.2e}  {row['clips_per_s']:.1f} clips/s")


@dataclasses.dataclass
class _Run:
    """What one `train` call resolved: its settings, where it writes, and its place among the ranks."""
    cfg: TrainConfig
    out_dir: Path
    fingerprint: str
    loss_fn: Callable
    device: torch.device
    console: object  # rich.console.Console
    desc: str
    restart_on_corrupt: bool
    ddp: DdpGroup

    @property
    def verbose(self) -> bool:
        """Whether this process speaks: rank 0, unless the console is quiet."""
        return self.ddp.main and not self.console.quiet

    def say(self, text: str, style: str | None = None) -> None:
        if self.verbose:
            say(self.console, text, style)

    def path(self, name: str) -> Path:
        return self.out_dir / name


@dataclasses.dataclass
class _Trainer:
    """The live training state an epoch updates."""
    model: torch.nn.Module
    net: torch.nn.Module  # `model`, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dtype: object  # the autocast dtype, None on the CPU
    best: dict  # {"top1", "epoch"} of the best validation so far
    step: int  # optimizer steps taken


# ---------------------------------------------------------------------------- restore

def _resume_state(run: _Run) -> dict | None:
    """The checkpoint to resume from: None when absent, made with another fingerprint, or unreadable
    (with restart_on_corrupt; without it, unreadable is a CheckpointError)."""
    path = run.path(CHECKPOINT)
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path)
    except CheckpointError as e:
        if not run.restart_on_corrupt:
            raise
        run.say(f"warning: {e}; starting over", "yellow")
        return None
    if state.get("fingerprint") != run.fingerprint:
        run.say(f"{path}: made with other settings or code (fingerprint differs); starting over")
        return None
    return state


def _restore_history(run: _Run, state: dict | None) -> list[dict]:
    """metrics.jsonl rows of the epochs the checkpoint holds; a fresh start clears the last run's files."""
    done = state["epoch"] if state else 0
    history = read_metrics(run.path(METRICS), upto=done)
    if run.ddp.main:
        run.out_dir.mkdir(parents=True, exist_ok=True)
        if state is None:  # a fresh start: nothing of an earlier run may survive next to the new one
            for name in (BEST, MODEL):
                run.path(name).unlink(missing_ok=True)
        write_metrics(run.path(METRICS), history)
    run.ddp.barrier()
    return history


def _best_record(out_dir: Path, state: dict) -> dict:
    """Best val top-1 so far. best.pt is written just before the checkpoint, so it can be one epoch ahead."""
    best = dict(state.get("best") or {"top1": -1.0, "epoch": 0})
    try:
        saved = load_checkpoint(out_dir / BEST)
        if saved["metrics"]["val_top1"] > best["top1"]:
            best = {"top1": saved["metrics"]["val_top1"], "epoch": saved["epoch"]}
    except (CheckpointError, KeyError, TypeError):
        pass  # missing or unreadable best.pt: the next improvement rewrites it
    return best


def _load_final(model, run: _Run) -> bool:
    """Load model.pt into `model`; False when it is missing, or unreadable (then rewritten from the checkpoint)."""
    path = run.path(MODEL)
    if not path.exists():
        return False
    try:
        load_weights_into(model, path, load_checkpoint(path)["model"])
        return True
    except CheckpointError as e:
        run.say(f"warning: {e}; rewriting it from {run.path(CHECKPOINT)}", "yellow")
    return False


def _restore_trainer(model, state: dict | None, run: _Run) -> _Trainer:
    """Model on its device, optimizer and grad scaler: fresh, or as the checkpoint left them."""
    model.to(run.device)
    optimizer = make_optimizer(model, run.cfg)
    dtype = amp_dtype(run.device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    best, step = {"top1": -1.0, "epoch": 0}, 0
    if state:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{run.path(CHECKPOINT)}: checkpoint does not fit this model "
                                  f"({first_line(e)})") from None
        if "scaler" in state and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        best, step = _best_record(run.out_dir, state), state["scheduler"]["step"]
        run.say(f"{run.desc}: resuming from epoch {state['epoch']}/{run.cfg.epochs}")
    net = model
    if run.ddp.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    return _Trainer(model, net, optimizer, scaler, dtype, best, step)


# ---------------------------------------------------------------------------- loader

def _train_loader(train_set: Dataset, run: _Run) -> DataLoader:
    """Batches of (epoch, index)-keyed items whose order and randomness depend only on (seed, epoch)."""
    cfg = run.cfg
    return DataLoader(EpochDataset(train_set, cfg.seed), batch_size=cfg.batch_size,
                      sampler=EpochSampler(train_set, cfg.seed, run.ddp.rank, run.ddp.world), drop_last=False,
                      num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                      pin_memory=run.device.type == "cuda",
                      generator=torch.Generator().manual_seed(cfg.seed))  # keeps the global RNG untouched


def _val_part(val_set: Dataset, ddp: DdpGroup) -> Dataset:
    """This rank's share of the validation set (all of it without torchrun)."""
    return Subset(val_set, range(ddp.rank, len(val_set), ddp.world)) if ddp.world > 1 else val_set


# ---------------------------------------------------------------------------- the epoch loop

def _epoch_row(epoch: int, stats: dict, val: dict, ddp: DdpGroup, seconds: float) -> dict:
    """One metrics.jsonl row, summed over the ranks."""
    loss_sum, correct, n, secs, v_loss, v1, v5, vn = ddp.sum(
        stats["loss_sum"], stats["correct"], stats["n"], stats["seconds"],
        val["loss_sum"], val["c1"], val["c5"], val["n"])
    vn = max(1, vn)
    return {"epoch": epoch + 1, "lr": stats["lr"], "train_loss": loss_sum / max(1, n),
            "train_acc": 100.0 * correct / max(1, n), "val_loss": v_loss / vn,
            "val_top1": 100.0 * v1 / vn, "val_top5": 100.0 * v5 / vn, "seconds": seconds,
            "clips_per_s": n / max(1e-9, secs / ddp.world)}  # mean of per-rank seconds


def _save_epoch(t: _Trainer, run: _Run, history: list[dict], improved: bool, schedule: dict) -> None:
    """Rank 0 writes metrics and best.pt first, then the checkpoint: a crash before the checkpoint
    makes them be redone."""
    row, cfg = history[-1], run.cfg
    write_metrics(run.path(METRICS), history)
    if improved and cfg.keep == "best":
        save_checkpoint({"model": t.model.state_dict(), "epoch": row["epoch"], "metrics": row}, run.path(BEST))
    ckpt = {"model": t.model.state_dict(), "optimizer": t.optimizer.state_dict(),
            "scheduler": {"step": t.step, **schedule}, "epoch": row["epoch"],
            "config": dataclasses.asdict(cfg), "fingerprint": run.fingerprint, "best": t.best}
    if t.scaler.is_enabled():
        ckpt["scaler"] = t.scaler.state_dict()
    with signals.deferred():  # a SIGTERM now waits for the epoch's checkpoint (< 1 s here)
        save_checkpoint(ckpt, run.path(CHECKPOINT))


def _epoch_loop(t: _Trainer, loader: DataLoader, val_set: Dataset, run: _Run, history: list[dict],
                start_epoch: int) -> None:
    """Epochs start_epoch..cfg.epochs-1: reseed, train, validate, record, checkpoint, print one line."""
    cfg = run.cfg
    schedule = {"total_steps": cfg.epochs * len(loader), "warmup_steps": round(cfg.warmup_epochs * len(loader))}
    val_part = _val_part(val_set, run.ddp)
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        seed_everything(derive_seed(cfg.seed, epoch, _MAIN))
        loader.dataset.set_epoch(epoch)
        loader.sampler.set_epoch(epoch)
        stats, t.step = train_one_epoch(
            t.net, loader, t.optimizer, run.loss_fn, step=t.step,
            lr_fn=lambda s: lr_at(s, schedule["total_steps"], schedule["warmup_steps"], cfg.lr),
            device=run.device, scaler=t.scaler, dtype=t.dtype, grad_clip=cfg.grad_clip,
            console=run.console if run.verbose else None, desc=f"{run.desc} {epoch + 1}/{cfg.epochs}")
        run.ddp.sync_buffers(t.model)
        val = _evaluate_sums(t.model, val_part, cfg.batch_size, run.device, cfg.num_workers)
        history.append(_epoch_row(epoch, stats, val, run.ddp, time.perf_counter() - t0))
        improved = history[-1]["val_top1"] > t.best["top1"]
        if improved:
            t.best = {"top1": history[-1]["val_top1"], "epoch": history[-1]["epoch"]}
        if run.ddp.main:
            _save_epoch(t, run, history, improved, schedule)
        run.say(epoch_line(run.desc, history[-1], cfg.epochs))


def _finish(model, run: _Run, history: list[dict]) -> None:
    """Write model.pt: the best epoch's weights (keep=best) or the last; the in-memory model matches it."""
    cfg = run.cfg
    run.ddp.barrier()  # best.pt is whole before any rank reads it
    epoch, weights = cfg.epochs, None
    if cfg.keep == "best" and run.path(BEST).exists():
        saved = load_checkpoint(run.path(BEST))
        epoch, weights = saved["epoch"], saved["model"]
        model.load_state_dict(weights)
    if run.ddp.main:
        row = next((r for r in history if r["epoch"] == epoch), history[-1] if history else {})
        save_checkpoint({"model": weights if weights is not None else model.state_dict(),
                         "config": dataclasses.asdict(cfg), "fingerprint": run.fingerprint, "epoch": epoch,
                         "metrics": row}, run.path(MODEL))
    run.ddp.barrier()


# ---------------------------------------------------------------------------- train

def train(model: torch.nn.Module, train_set: Dataset, val_set: Dataset, cfg: TrainConfig, out_dir: Path,
          fingerprint: str, loss_fn: Callable | None = None, device="cpu", console=None,
          desc: str = "train", restart_on_corrupt: bool = False) -> dict:
    """Train `model` (initialised by the caller) for cfg.epochs, resuming from out_dir/checkpoint.pt if it
    belongs to the same `fingerprint`. Writes checkpoint.pt every epoch, metrics.jsonl, best.pt (keep=best)
    and finally model.pt. Returns a summary (see `summarize`)."""
    console = console or make_console()
    ddp, device = setup_distributed(resolve_device(device))
    run = _Run(cfg, Path(out_dir), fingerprint, loss_fn or cross_entropy, device, console, desc,
               restart_on_corrupt, ddp)
    peer_lost = False
    try:
        return _train(model, train_set, val_set, run)
    except KeyboardInterrupt:
        run.say(f"{desc} interrupted: {_kept(run)}", "yellow")
        raise
    except RuntimeError as e:
        if ddp.world == 1 or not _is_peer_failure(e):
            raise
        peer_lost = True  # tearing the group down would wait on the dead rank
        signals.stopping()  # torchrun's SIGTERM to the survivors follows: this line is the one to print
        reason = re.sub(r"^\[[^\]]*\] ", "", first_line(e)).split(". ")[0]  # gloo: "[pair.cc:537] ..."
        raise LostRankError(f"{desc}: rank {ddp.rank} lost another rank of the torchrun job "
                            f"({reason}); {_kept(run)}") from None
    finally:
        if ddp.owned and not peer_lost:
            dist.destroy_process_group()


def _is_peer_failure(e: RuntimeError) -> bool:
    """A collective failed because another rank died (closed connection) or went silent (timeout)."""
    text = str(e)
    return isinstance(e, dist.DistError) or any(s in text for s in (
        "gloo", "Connection reset", "Connection closed", "NCCL", "Timed out", "timed out"))


def _kept(run: _Run) -> str:
    """What an interrupted run leaves for the next one to resume from."""
    try:
        state = load_checkpoint(run.path(CHECKPOINT))
    except CheckpointError:
        state = None
    if state is None or state.get("fingerprint") != run.fingerprint:
        return "no epoch had finished; the rerun starts over"
    return f"checkpoint of epoch {state['epoch']}/{run.cfg.epochs} kept; the rerun resumes from it"


def _train(model, train_set: Dataset, val_set: Dataset, run: _Run) -> dict:
    state = _resume_state(run)
    start_epoch = state["epoch"] if state else 0
    history = _restore_history(run, state)
    if state and start_epoch >= run.cfg.epochs and _load_final(model, run):
        run.say(f"{run.desc}: already trained ({start_epoch}/{run.cfg.epochs} epochs); nothing to do")
        return summarize(history, run.cfg.epochs, 0, start_epoch)
    trainer = _restore_trainer(model, state, run)
    loader = _train_loader(train_set, run)
    _epoch_loop(trainer, loader, val_set, run, history, start_epoch)
    del loader  # stops persistent workers now rather than at garbage collection
    _finish(model, run, history)
    return summarize(history, run.cfg.epochs, run.cfg.epochs - start_epoch, start_epoch if state else None)
