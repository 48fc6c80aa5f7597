"""The one training loop, shared by the teacher, the student and the baseline.

Shaped like torchvision's references/video_classification/train.py: `train_one_epoch`,
`evaluate`, and `train` (their `main`). Datasets yield `(x, y, extra)`; `loss_fn(logits,
y, extra)` sees the batched `extra` (the student's cached teacher logits, say). x is a float
tensor, or the uint8 `Windows` of the clip datasets, whose views are made on the device after
the copy (`loaders.model_input`). The train and validation loaders are built once per run. A run
resumes from its folder (`run_folder`), reseeds every epoch (`loaders`), and runs under
torchrun as DistributedDataParallel (`ddp`); only rank 0 writes or prints.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ...errors import first_line
from ..config import TrainConfig
from ..engine import failpoints
from ..engine.progress import make_console, progress_bar, say
from ..names import CHECKPOINT
from .checkpoints import CheckpointError
from .ddp import setup_distributed
from .device import amp_dtype, autocast, compiled, fast_kernels, resolve_device
from .history import epoch_line, epoch_row, summarize_history
from .loaders import begin_epoch, enter_epoch, input_fn, make_loader, train_loader, val_loader, val_share
from .optim import LrSchedule, make_optimizer
from .run_folder import NO_BEST, RunFolder


def cross_entropy(logits: torch.Tensor, y: torch.Tensor, extra=None) -> torch.Tensor:
    """The default loss: plain cross-entropy; `extra` is ignored."""
    return F.cross_entropy(logits.float(), y)


def topk_correct(logits: torch.Tensor, y: torch.Tensor, ks=(1, 5)) -> list[int]:
    """How many rows have their label among the top-k logits, for each k (k capped at the class count)."""
    kmax = min(max(ks), logits.shape[1])
    top = logits.topk(kmax, dim=1).indices
    hit = top.eq(y.view(-1, 1))
    return [int(hit[:, :min(k, kmax)].any(dim=1).sum()) for k in ks]


def to_device(obj, device: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------- one epoch

class _Meter:
    """Running train loss and accuracy, summed on the device (reading them syncs the GPU)."""

    def __init__(self, device):
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.seen, self.start, self.shown = 0, time.perf_counter(), 0.0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss_sum += loss.detach().double() * len(y)
        self.correct += (logits.detach().argmax(1) == y).sum()
        self.seen += len(y)

    def text(self, last: bool) -> str | None:
        """The progress bar's figures, at most four times a second (and after the `last` batch)."""
        now = time.perf_counter()
        if now - self.shown <= 0.25 and not last:
            return None
        self.shown = now
        return (f"loss {self.loss_sum.item() / self.seen:.3f}  acc {100.0 * self.correct.item() / self.seen:.1f}%  "
                f"{self.seen / (now - self.start):.1f} clips/s")

    def sums(self) -> dict:
        return {"loss_sum": self.loss_sum.item(), "correct": self.correct.item(), "n": self.seen,
                "seconds": time.perf_counter() - self.start}


def train_one_epoch(model, loader, optimizer, loss_fn, *, step: int, lr_fn: Callable[[int], float],
                    device, scaler, dtype, grad_clip: float, console=None, desc: str = "train",
                    to_input: Callable | None = None) -> tuple[dict, int]:
    """One pass over `loader`; sets the LR every step. Returns local sums and the next step number.
    A live bar (`desc`, running loss, accuracy, clips/s) shows on a terminal `console`. `to_input`
    makes a batch's x the model's input on `device` (default: `loaders.input_fn` of the loader's dataset)."""
    model.train()
    to_input = to_input or input_fn(loader.dataset, device)
    meter, lr = _Meter(device), lr_fn(step)
    with progress_bar(console, desc, len(loader)) as update:
        for batches, (x, y, extra) in enumerate(loader, 1):
            x, y, extra = to_input(x), to_device(y, device), to_device(extra, device)
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
            meter.add(loss, logits, y)
            update(batches, meter.text(last=batches == len(loader)))
            failpoints.reached("train:step")  # tests: a stop after an optimizer step
    return {**meter.sums(), "lr": lr}, step


# ---------------------------------------------------------------------------- evaluation

@torch.inference_mode()
def _evaluate_sums(model, loader, device, to_input: Callable | None = None) -> dict:
    """Loss and top-k sums of `model` over `loader`'s batches (its dataset's items in order)."""
    model.eval()
    device = torch.device(device)
    to_input = to_input or input_fn(loader.dataset, device)
    loss_sum, c1, c5, n = 0.0, 0, 0, 0
    all_logits, all_labels = [], []
    for x, y, _ in loader:
        x, y = to_input(x), to_device(y, device)
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


def evaluate(model, dataset, batch_size: int, device="cpu", num_workers=0) -> dict:
    """Cross-entropy, top-1 and top-5 (percent) over `dataset`, plus its logits (N, K) and labels (N,), in order."""
    loader = make_loader(dataset, batch_size, device, num_workers, persistent=False)
    s = _evaluate_sums(model, loader, device)
    n = max(1, s["n"])
    return {"loss": s["loss_sum"] / n, "top1": 100.0 * s["c1"] / n, "top5": 100.0 * s["c5"] / n,
            "logits": s["logits"], "labels": s["labels"]}


# ---------------------------------------------------------------------------- the trainer

@dataclasses.dataclass
class _Trainer:
    """The live training state an epoch updates, and what of it the checkpoint keeps."""
    model: torch.nn.Module
    net: torch.nn.Module  # `model`, or its DistributedDataParallel wrapper
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dtype: object  # the autocast dtype, None on the CPU
    best: dict  # {"top1", "epoch"} of the best validation so far
    step: int  # optimizer steps taken

    def record(self, row: dict) -> bool:
        """Whether the epoch of `row` improved on the best validation top-1 (it then becomes the best)."""
        if row["val_top1"] <= self.best["top1"]:
            return False
        self.best = {"top1": row["val_top1"], "epoch": row["epoch"]}
        return True

    def state_dict(self, schedule: LrSchedule) -> dict:
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": {"step": self.step, **schedule.lengths()}, "best": self.best}
        if self.scaler.is_enabled():
            state["scaler"] = self.scaler.state_dict()
        return state


def _restore_trainer(model, state: dict | None, cfg: TrainConfig, device: torch.device,
                     folder: RunFolder) -> _Trainer:
    """Model on its device, optimizer and grad scaler: fresh, or as the checkpoint `state` left them.
    `cfg.channels_last` stores its weights channels_last_3d, `cfg.compile` compiles the module a train
    step calls (speed only: the weights and the checkpoint are the model's own)."""
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last_3d)
    optimizer = make_optimizer(model, cfg)
    dtype = amp_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    best, step = NO_BEST, 0
    if state:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"{folder.path(CHECKPOINT)}: checkpoint does not fit this model "
                                  f"({first_line(e)})") from None
        if "scaler" in state and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        best, step = folder.best_so_far(state), state["scheduler"]["step"]
    net = folder.ddp.wrap(model, device)
    return _Trainer(model, compiled(net) if cfg.compile else net, optimizer, scaler, dtype, dict(best), step)


@contextlib.contextmanager
def _stops_explained(folder: RunFolder, desc: str):
    """A Ctrl-C, or a rank lost under torchrun, ends the run with one line saying what the rerun resumes
    from; the process group is left at the end."""
    with folder.ddp.session(desc, folder.kept):
        try:
            yield
        except KeyboardInterrupt:
            folder.say(f"{desc} interrupted: {folder.kept()}", "yellow")
            raise


# ---------------------------------------------------------------------------- train

def train(model: torch.nn.Module, train_set: Dataset, val_set: Dataset, cfg: TrainConfig, out_dir: Path,
          fingerprint: str, loss_fn: Callable | None = None, device="cpu", console=None,
          desc: str = "train", restart_on_corrupt: bool = False) -> dict:
    """Train `model` (initialised by the caller) for cfg.epochs, resuming from out_dir/checkpoint.pt if it
    belongs to the same `fingerprint`. Writes checkpoint.pt every epoch, metrics.jsonl, best.pt (keep=best)
    and finally model.pt. Returns a summary (see `summarize_history`)."""
    console = console or make_console()
    ddp, device = setup_distributed(resolve_device(device))
    verbose = ddp.main and not console.quiet  # rank 0 speaks, unless the console is quiet
    folder = RunFolder(Path(out_dir), fingerprint, cfg, ddp, _speaker(console, verbose))
    with _stops_explained(folder, desc):
        state = folder.resume_state(restart_on_corrupt)
        start_epoch = state["epoch"] if state else 0
        history = folder.restore_history(state)
        if state and start_epoch >= cfg.epochs and folder.load_final(model):
            folder.say(f"{desc}: already trained ({start_epoch}/{cfg.epochs} epochs); nothing to do")
            return summarize_history(history, cfg.epochs, 0, start_epoch)
        fast_kernels(device)
        t = _restore_trainer(model, state, cfg, device, folder)
        if state:
            folder.say(f"{desc}: resuming from epoch {start_epoch}/{cfg.epochs}")
        loader = train_loader(train_set, cfg, device, ddp.rank, ddp.world)
        val_batches = val_loader(val_share(val_set, ddp.rank, ddp.world), cfg, device)  # once per run
        schedule = LrSchedule.for_run(cfg, len(loader))
        train_input = input_fn(train_set, device, cfg.channels_last)
        val_input = input_fn(val_set, device, cfg.channels_last)
        for epoch in range(start_epoch, cfg.epochs):
            t0 = time.perf_counter()
            begin_epoch(loader, epoch)
            stats, t.step = train_one_epoch(
                t.net, loader, t.optimizer, loss_fn or cross_entropy, step=t.step, lr_fn=schedule, device=device,
                scaler=t.scaler, dtype=t.dtype, grad_clip=cfg.grad_clip, console=console if verbose else None,
                desc=f"{desc} {epoch + 1}/{cfg.epochs}", to_input=train_input)
            ddp.sync_buffers(model)
            enter_epoch(val_batches, epoch)
            val = _evaluate_sums(model, val_batches, device, val_input)
            history.append(epoch_row(epoch, stats, val, ddp, time.perf_counter() - t0))
            improved = t.record(history[-1])
            if ddp.main:
                folder.save_epoch(history, t.state_dict(schedule), save_best=improved and cfg.keep == "best")
            folder.say(epoch_line(desc, history[-1], cfg.epochs))
            failpoints.reached("train:epoch")  # tests: a stop after an epoch's checkpoint
        del loader, val_batches  # stops persistent workers now rather than at garbage collection
        folder.save_final(model, history)  # keep=best: the best epoch's weights
        return summarize_history(history, cfg.epochs, cfg.epochs - start_epoch, start_epoch if state else None)


def _speaker(console, verbose: bool) -> Callable[..., None]:
    """say(text, style=None) on `console`, or nothing on a quiet console and on ranks other than 0."""
    def speak(text: str, style: str | None = None) -> None:
        if verbose:
            say(console, text, style)
    return speak
