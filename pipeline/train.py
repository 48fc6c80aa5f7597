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
import errno
import json
import math
import os
import random
import re
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, get_worker_info

from .atomic import atomic_path
from .config import TrainConfig
from ..errors import UserError

CHECKPOINT, BEST, MODEL, METRICS = "checkpoint.pt", "best.pt", "model.pt", "metrics.jsonl"


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read or does not fit the model (one line)."""


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


def autocast(device: torch.device, dtype):
    return torch.autocast("cuda", dtype=dtype) if device.type == "cuda" else nullcontext()


def amp_dtype(device: torch.device):
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def save(obj: dict, path: Path) -> None:
    try:
        with atomic_path(path) as tmp:
            torch.save(obj, tmp)
    except RuntimeError as e:  # torch reports a failed write (a full disk, say) as RuntimeError
        full = shutil.disk_usage(Path(path).parent).free < (64 << 20)
        raise OSError(errno.ENOSPC if full else errno.EIO,
                      os.strerror(errno.ENOSPC) if full else f"cannot write ({_first_line(e)})",
                      str(path)) from None


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def _load_reason(e: BaseException) -> str:
    """Why torch.load failed, in a few words (torch's own text advises turning weights_only off)."""
    blocked = re.search(r"GLOBAL ([\w.]+)", str(e))
    if blocked:
        return f"it needs code execution to load (global {blocked.group(1)}), which weights_only refuses"
    return f"{type(e).__name__}: {_first_line(e)}"


def load_checkpoint(path: Path) -> dict:
    """torch.load with weights_only=True; any failure is one CheckpointError line naming the file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint missing") from None
    except Exception as e:  # truncated zip, bad pickle, disallowed global, I/O error...
        raise CheckpointError(f"{path}: unreadable checkpoint: {_load_reason(e)}") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path}: unreadable checkpoint (not a training checkpoint)")
    return state


# ---------------------------------------------------------------------------- one epoch

def train_one_epoch(model, loader, optimizer, loss_fn, *, step: int, lr_fn: Callable[[int], float],
                    device, scaler, dtype, grad_clip: float, progress: Progress | None, desc: str) -> tuple[dict, int]:
    """One pass over `loader`; sets the LR every step. Returns local sums and the next step number."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen, lr, last_shown = 0, lr_fn(step), 0.0
    task = progress.add_task(desc, total=len(loader), loss=0.0, acc=0.0, rate=0.0) if progress else None
    start = time.perf_counter()
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
        step += 1
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if task is not None:
            now = time.perf_counter()
            if now - last_shown > 0.25 or seen == len(loader.sampler):  # .item() syncs the GPU; not every step
                last_shown = now
                progress.update(task, advance=0, loss=loss_sum.item() / seen, acc=100.0 * correct.item() / seen,
                                rate=seen / (now - start))
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
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
        with autocast(device, amp_dtype(device)):
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
class _Dist:
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


def setup_distributed(device: torch.device) -> tuple[_Dist, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return _Dist(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return _Dist(dist.get_rank(), dist.get_world_size(), owned), device


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


def _say(console: Console, text: str, style: str | None = None) -> None:
    console.print(text, style=style, markup=False, highlight=False)


def _resume_state(out_dir: Path, fingerprint: str, restart_on_corrupt: bool, console: Console,
                  say: bool) -> dict | None:
    path = out_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = load_checkpoint(path)
    except CheckpointError as e:
        if not restart_on_corrupt:
            raise
        if say:
            _say(console, f"warning: {e}; starting over", "yellow")
        return None
    if state.get("fingerprint") != fingerprint:
        if say:
            _say(console, f"{path}: made with other settings or code (fingerprint differs); starting over")
        return None
    return state


def _best_record(out_dir: Path, state: dict) -> dict:
    """Best val top-1 so far. best.pt is written just before the checkpoint, so it can be one epoch ahead."""
    best = dict(state.get("best") or {"top1": -1.0, "epoch": 0})
    path = out_dir / BEST
    if path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved["metrics"]["val_top1"] > best["top1"]:
                best = {"top1": saved["metrics"]["val_top1"], "epoch": saved["epoch"]}
        except Exception:
            pass  # unreadable best.pt: the next improvement rewrites it
    return best


def _load_final(model, out_dir: Path, console: Console, say: bool) -> bool:
    """Load model.pt into `model`; False when it is missing, or unreadable (then rewritten from the checkpoint)."""
    path = out_dir / MODEL
    if not path.exists():
        return False
    try:
        model.load_state_dict(load_checkpoint(path)["model"])
        return True
    except CheckpointError as e:
        reason = str(e)
    except (RuntimeError, ValueError, KeyError) as e:
        reason = f"{path}: does not fit the model ({_first_line(e)})"
    if say:
        _say(console, f"warning: {reason}; rewriting it from {out_dir / CHECKPOINT}", "yellow")
    return False


def _finish(model, out_dir: Path, cfg: TrainConfig, fingerprint: str, history: list[dict],
            best: dict, rank: _Dist) -> None:
    """Write model.pt: the best epoch's weights (keep=best) or the last; the in-memory model matches it."""
    rank.barrier()  # best.pt is whole before any rank reads it
    epoch, weights = cfg.epochs, None
    if cfg.keep == "best" and (out_dir / BEST).exists():
        saved = load_checkpoint(out_dir / BEST)
        epoch, weights = saved["epoch"], saved["model"]
        model.load_state_dict(weights)
    if rank.main:
        row = next((r for r in history if r["epoch"] == epoch), history[-1] if history else {})
        save({"model": weights if weights is not None else model.state_dict(),
              "config": dataclasses.asdict(cfg), "fingerprint": fingerprint, "epoch": epoch,
              "metrics": row}, out_dir / MODEL)
    rank.barrier()


# ---------------------------------------------------------------------------- the loop

def train(model: torch.nn.Module, train_set: Dataset, val_set: Dataset, cfg: TrainConfig, out_dir: Path,
          fingerprint: str, loss_fn: Callable | None = None, device="cpu", console: Console | None = None,
          desc: str = "train", restart_on_corrupt: bool = False) -> dict:
    """Train `model` (initialised by the caller) for cfg.epochs, resuming from out_dir/checkpoint.pt if it
    belongs to the same `fingerprint`. Writes checkpoint.pt every epoch, metrics.jsonl, best.pt (keep=best)
    and finally model.pt. Returns a summary (see `summarize`)."""
    out_dir = Path(out_dir)
    loss_fn = loss_fn or cross_entropy
    console = console or Console(stderr=True)
    device = torch.device("cuda" if device == "auto" and torch.cuda.is_available()
                          else "cpu" if device == "auto" else device)
    rank, device = setup_distributed(device)
    try:
        return _train(model, train_set, val_set, cfg, out_dir, fingerprint, loss_fn, device, console,
                      desc, restart_on_corrupt, rank)
    except KeyboardInterrupt:
        if rank.main and not console.quiet:
            _say(console, f"{desc} interrupted: {_kept(out_dir, cfg.epochs, fingerprint)}", "yellow")
        raise
    finally:
        if rank.owned:
            dist.destroy_process_group()


def _kept(out_dir: Path, epochs: int, fingerprint: str) -> str:
    """What an interrupted run leaves for the next one to resume from."""
    try:
        state = load_checkpoint(out_dir / CHECKPOINT)
    except CheckpointError:
        state = None
    if state is None or state.get("fingerprint") != fingerprint:
        return "no epoch had finished; the rerun starts over"
    return f"checkpoint of epoch {state['epoch']}/{epochs} kept; the rerun resumes from it"


def _train(model, train_set, val_set, cfg, out_dir, fingerprint, loss_fn, device, console, desc,
           restart_on_corrupt, rank: _Dist) -> dict:
    say = rank.main and not console.quiet
    state = _resume_state(out_dir, fingerprint, restart_on_corrupt, console, say)
    start_epoch = state["epoch"] if state else 0
    if rank.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        if state is None:  # a fresh start: nothing of an earlier run may survive next to the new one
            for name in (BEST, MODEL):
                (out_dir / name).unlink(missing_ok=True)
        history = read_metrics(out_dir / METRICS, upto=start_epoch)
        write_metrics(out_dir / METRICS, history)
    else:
        history = read_metrics(out_dir / METRICS, upto=start_epoch)
    rank.barrier()
    if state and start_epoch >= cfg.epochs and _load_final(model, out_dir, console, say):
        if say:
            _say(console, f"{desc}: already trained ({start_epoch}/{cfg.epochs} epochs); nothing to do")
        return summarize(history, cfg.epochs, 0, start_epoch)

    model.to(device)
    optimizer = make_optimizer(model, cfg)
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    best = {"top1": -1.0, "epoch": 0}
    if state:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{out_dir / CHECKPOINT}: checkpoint does not fit this model "
                                  f"({_first_line(e)})") from None
        if "scaler" in state and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        best = _best_record(out_dir, state)
        if say:
            _say(console, f"{desc}: resuming from epoch {start_epoch}/{cfg.epochs}")
    net = model
    if rank.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    data = EpochDataset(train_set, cfg.seed)
    sampler = EpochSampler(train_set, cfg.seed, rank.rank, rank.world)
    loader = DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, drop_last=False,
                        num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                        pin_memory=device.type == "cuda",
                        generator=torch.Generator().manual_seed(cfg.seed))  # keeps the global RNG untouched
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    step = state["scheduler"]["step"] if state else 0
    val_part = Subset(val_set, range(rank.rank, len(val_set), rank.world)) if rank.world > 1 else val_set

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]:.3f}  acc {task.fields[acc]:.1f}%  "
                                   "{task.fields[rate]:.1f} clips/s"),
                        TimeRemainingColumn(), console=console, transient=True,
                        disable=not (say and (console.is_terminal or console.is_jupyter)))
    with progress:
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            seed_everything(derive_seed(cfg.seed, epoch, _MAIN))
            data.set_epoch(epoch)
            sampler.set_epoch(epoch)
            stats, step = train_one_epoch(
                net, loader, optimizer, loss_fn, step=step,
                lr_fn=lambda s: lr_at(s, total_steps, warmup_steps, cfg.lr), device=device, scaler=scaler,
                dtype=dtype, grad_clip=cfg.grad_clip, progress=progress,
                desc=f"{desc} {epoch + 1}/{cfg.epochs}")
            rank.sync_buffers(model)
            val = _evaluate_sums(model, val_part, cfg.batch_size, device, cfg.num_workers)
            loss_sum, correct, n, secs, v_loss, v1, v5, vn = rank.sum(
                stats["loss_sum"], stats["correct"], stats["n"], stats["seconds"],
                val["loss_sum"], val["c1"], val["c5"], val["n"])
            vn = max(1, vn)
            row = {"epoch": epoch + 1, "lr": stats["lr"], "train_loss": loss_sum / max(1, n),
                   "train_acc": 100.0 * correct / max(1, n), "val_loss": v_loss / vn,
                   "val_top1": 100.0 * v1 / vn, "val_top5": 100.0 * v5 / vn,
                   "seconds": time.perf_counter() - t0,
                   "clips_per_s": n / max(1e-9, secs / rank.world)}  # mean of per-rank seconds
            history.append(row)
            improved = row["val_top1"] > best["top1"]
            if improved:
                best = {"top1": row["val_top1"], "epoch": row["epoch"]}
            if rank.main:  # metrics and best.pt first: a crash before the checkpoint makes them be redone
                write_metrics(out_dir / METRICS, history)
                if improved and cfg.keep == "best":
                    save({"model": model.state_dict(), "epoch": row["epoch"], "metrics": row}, out_dir / BEST)
                ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": {"step": step, "total_steps": total_steps, "warmup_steps": warmup_steps},
                        "epoch": epoch + 1, "config": dataclasses.asdict(cfg), "fingerprint": fingerprint,
                        "best": best}
                if scaler.is_enabled():
                    ckpt["scaler"] = scaler.state_dict()
                save(ckpt, out_dir / CHECKPOINT)
            if say:
                _say(console, f"{desc} epoch {row['epoch']}/{cfg.epochs}  "
                              f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.1f}%  "
                              f"val top1 {row['val_top1']:.1f}% top5 {row['val_top5']:.1f}%  "
                              f"lr {row['lr']:.2e}  {row['clips_per_s']:.1f} clips/s")
    del loader  # stops persistent workers now rather than at garbage collection
    _finish(model, out_dir, cfg, fingerprint, history, best, rank)
    return summarize(history, cfg.epochs, cfg.epochs - start_epoch, start_epoch if state else None)
