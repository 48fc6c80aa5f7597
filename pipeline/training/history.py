"""A run's history: one metrics.jsonl row per epoch, the log line printed for it, and the summary
`train` returns. Accuracies (top1, top5) are percentages, as in the papers' tables.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..engine.atomic import atomic_path
from .ddp import DdpGroup


def epoch_row(epoch: int, stats: dict, val: dict, ddp: DdpGroup, seconds: float) -> dict:
    """One metrics.jsonl row from this rank's train and validation sums, summed over the ranks."""
    loss_sum, correct, n, secs, v_loss, v1, v5, vn = ddp.sum(
        stats["loss_sum"], stats["correct"], stats["n"], stats["seconds"],
        val["loss_sum"], val["c1"], val["c5"], val["n"])
    vn = max(1, vn)
    return {"epoch": epoch + 1, "lr": stats["lr"], "train_loss": loss_sum / max(1, n),
            "train_acc": 100.0 * correct / max(1, n), "val_loss": v_loss / vn,
            "val_top1": 100.0 * v1 / vn, "val_top5": 100.0 * v5 / vn, "seconds": seconds,
            "clips_per_s": n / max(1e-9, secs / ddp.world)}  # mean of per-rank seconds


def epoch_line(desc: str, row: dict, epochs: int) -> str:
    """One epoch's figures on one line (the log of a run is these lines)."""
    return (f"{desc} epoch {row['epoch']}/{epochs}  "
            f"train loss {row['train_loss']:.4f} acc {row['train_acc']:.1f}%  "
            f"val top1 {row['val_top1']:.1f}% top5 {row['val_top5']:.1f}%  "
            f"lr {row['lr']:.2e}  {row['clips_per_s']:.1f} clips/s")


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


def summarize_history(history: list[dict], epochs: int, epochs_run: int, resumed_from: int | None) -> dict:
    """What `train` returns: the best and the last epoch's validation figures, time and throughput."""
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
