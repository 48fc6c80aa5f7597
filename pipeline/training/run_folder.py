"""What a training run keeps in its folder, and how a rerun picks it up: checkpoint.pt after every
epoch, metrics.jsonl, best.pt (keep=best) and, at the end, model.pt. Only rank 0 writes.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from ..config import TrainConfig
from ..engine import signals
from ..names import BEST, CHECKPOINT, METRICS, MODEL
from .checkpoints import CheckpointError, load_checkpoint, load_weights_into, save_checkpoint
from .ddp import DdpGroup
from .history import read_metrics, write_metrics

NO_BEST = {"top1": -1.0, "epoch": 0}  # before the first validation


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """`out_dir` of one `train` call, whose files belong to the settings `fingerprint` names."""
    out_dir: Path
    fingerprint: str
    cfg: TrainConfig
    ddp: DdpGroup
    say: Callable[..., None]  # say(text, style=None): a warning on rank 0's console

    def path(self, name: str) -> Path:
        return self.out_dir / name

    def resume_state(self, restart_on_corrupt: bool) -> dict | None:
        """The checkpoint to resume from: None when absent, made with another fingerprint, or unreadable
        (with restart_on_corrupt; without it, unreadable is a CheckpointError)."""
        path = self.path(CHECKPOINT)
        if not path.exists():
            return None
        try:
            state = load_checkpoint(path)
        except CheckpointError as e:
            if not restart_on_corrupt:
                raise
            self.say(f"warning: {e}; starting over", "yellow")
            return None
        if state.get("fingerprint") != self.fingerprint:
            self.say(f"{path}: made with other settings or code (fingerprint differs); starting over")
            return None
        return state

    def restore_history(self, state: dict | None) -> list[dict]:
        """metrics.jsonl rows of the epochs the checkpoint holds; a fresh start clears the last run's files."""
        history = read_metrics(self.path(METRICS), upto=state["epoch"] if state else 0)
        if self.ddp.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if state is None:  # a fresh start: nothing of an earlier run may survive next to the new one
                for name in (BEST, MODEL):
                    self.path(name).unlink(missing_ok=True)
            write_metrics(self.path(METRICS), history)
        self.ddp.barrier()
        return history

    def best_so_far(self, state: dict) -> dict:
        """Best val top-1 so far. best.pt is written just before the checkpoint, so it can be one epoch ahead."""
        best = dict(state.get("best") or NO_BEST)
        try:
            saved = load_checkpoint(self.path(BEST))
            if saved["metrics"]["val_top1"] > best["top1"]:
                best = {"top1": saved["metrics"]["val_top1"], "epoch": saved["epoch"]}
        except (CheckpointError, KeyError, TypeError):
            pass  # missing or unreadable best.pt: the next improvement rewrites it
        return best

    def load_final(self, model: torch.nn.Module) -> bool:
        """Load model.pt into `model`; False when it is missing, or unreadable (then rewritten from the checkpoint)."""
        path = self.path(MODEL)
        if not path.exists():
            return False
        try:
            load_weights_into(model, path, load_checkpoint(path)["model"])
            return True
        except CheckpointError as e:
            self.say(f"warning: {e}; rewriting it from {self.path(CHECKPOINT)}", "yellow")
        return False

    def save_epoch(self, history: list[dict], trainer: dict, save_best: bool) -> None:
        """metrics.jsonl and best.pt first, then the checkpoint of `trainer` (its model, optimizer,
        scheduler, best and scaler states): a crash before the checkpoint makes them be redone."""
        row = history[-1]
        write_metrics(self.path(METRICS), history)
        if save_best:
            save_checkpoint({"model": trainer["model"], "epoch": row["epoch"], "metrics": row}, self.path(BEST))
        ckpt = {"model": trainer["model"], "optimizer": trainer["optimizer"], "scheduler": trainer["scheduler"],
                "epoch": row["epoch"], "config": dataclasses.asdict(self.cfg), "fingerprint": self.fingerprint,
                "best": trainer["best"]}
        if "scaler" in trainer:
            ckpt["scaler"] = trainer["scaler"]
        with signals.deferred():  # a SIGTERM now waits for the epoch's checkpoint (< 1 s here)
            save_checkpoint(ckpt, self.path(CHECKPOINT))

    def save_final(self, model: torch.nn.Module, history: list[dict]) -> None:
        """Write model.pt: the best epoch's weights (keep=best) or the last; the in-memory model matches it."""
        self.ddp.barrier()  # best.pt is whole before any rank reads it
        epoch, weights = self.cfg.epochs, None
        if self.cfg.keep == "best" and self.path(BEST).exists():
            saved = load_checkpoint(self.path(BEST))
            epoch, weights = saved["epoch"], saved["model"]
            model.load_state_dict(weights)
        if self.ddp.main:
            row = next((r for r in history if r["epoch"] == epoch), history[-1] if history else {})
            save_checkpoint({"model": weights if weights is not None else model.state_dict(),
                             "config": dataclasses.asdict(self.cfg), "fingerprint": self.fingerprint,
                             "epoch": epoch, "metrics": row}, self.path(MODEL))
        self.ddp.barrier()

    def kept(self) -> str:
        """What an interrupted run leaves for the next one to resume from."""
        try:
            state = load_checkpoint(self.path(CHECKPOINT))
        except CheckpointError:
            state = None
        if state is None or state.get("fingerprint") != self.fingerprint:
            return "no epoch had finished; the rerun starts over"
        return f"checkpoint of epoch {state['epoch']}/{self.cfg.epochs} kept; the rerun resumes from it"
