"""The shared training loop on a tiny model and a tiny synthetic, separable dataset (CPU, seconds)."""
from __future__ import annotations

import dataclasses
import io
import json
import os
import socket

import pytest
import torch
from rich.console import Console
from torch import nn

from dlkdd.pipeline.config import TrainConfig
from dlkdd.pipeline.training.checkpoints import CheckpointError
from dlkdd.pipeline.training.loop import evaluate, topk_correct, train
from dlkdd.pipeline.training.optim import lr_at

K = 3
KEYS = {"epoch", "lr", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "seconds", "clips_per_s"}


class Clips(torch.utils.data.Dataset):
    """n clips (3, 4, 8, 8); class c is brighter in channel c. Adds fresh noise per item (exercises RNG seeding)."""

    def __init__(self, n=24, seed=0, flip=False, fail_at_epoch=None):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % K
        self.x = torch.randn(n, 3, 4, 8, 8, generator=g) * 0.5
        for i, c in enumerate(self.y):
            self.x[i, c] += 1.0
        if flip:  # labels that disagree with the features: val accuracy falls as training improves
            self.y = (self.y + 1) % K
        self.fail_at_epoch, self.epochs = fail_at_epoch, []

    def set_epoch(self, epoch):
        if epoch == self.fail_at_epoch:
            raise KeyboardInterrupt  # a Ctrl-C (or kill) between epochs
        self.epochs.append(epoch)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        x = self.x[i] + 0.05 * torch.randn(self.x[i].shape)
        return x, int(self.y[i]), torch.full((K,), float(i))


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.BatchNorm3d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(4, K))


def config(**kw):
    base = dict(epochs=4, batch_size=8, lr=0.05, warmup_epochs=1.0, grad_clip=1.0, num_workers=0)
    return TrainConfig(**{**base, **kw})


def quiet():
    return Console(quiet=True)


def captured():
    return Console(file=io.StringIO(), width=200)


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_learns_and_logs_one_metrics_line_per_epoch(tmp_path):
    cfg = config(epochs=6)
    model = tiny_model()
    console = captured()
    summary = train(model, Clips(), Clips(12, seed=1), cfg, tmp_path, "fp", console=console)
    rows = metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4, 5, 6] and all(set(r) == KEYS for r in rows)
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    assert rows[-1]["val_top1"] > 100 / K + 10 and rows[-1]["val_top5"] == 100.0  # top-5 is top-K here
    assert summary["epochs_run"] == 6 and summary["resumed_from"] is None
    assert summary["last_top1"] == rows[-1]["val_top1"]
    assert "epoch 6/6" in console.file.getvalue()
    final = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert final["fingerprint"] == "fp" and final["epoch"] == 6 and final["config"]["epochs"] == 6
    assert all(torch.equal(final["model"][k], v) for k, v in model.state_dict().items())
    # already finished: a rerun trains nothing and says so
    again = train(tiny_model(1), Clips(), Clips(12, seed=1), cfg, tmp_path, "fp", console=console)
    assert again["epochs_run"] == 0 and again["last_top1"] == summary["last_top1"]
    assert "nothing to do" in console.file.getvalue()


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_after_interrupt_gives_identical_weights(tmp_path, workers):
    cfg = config(epochs=4, num_workers=workers)
    val = Clips(6, seed=1)
    a = tiny_model()
    train(a, Clips(), val, cfg, tmp_path / "a", "fp", console=quiet())

    with pytest.raises(KeyboardInterrupt):
        train(tiny_model(), Clips(fail_at_epoch=2), val, cfg, tmp_path / "b", "fp", console=quiet())
    ckpt = torch.load(tmp_path / "b" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 2 and len(metrics(tmp_path / "b")) == 2
    assert not (tmp_path / "b" / "model.pt").exists()

    b, console, data = tiny_model(seed=7), captured(), Clips()
    summary = train(b, data, val, cfg, tmp_path / "b", "fp", console=console)
    assert "resuming from epoch 2/4" in console.file.getvalue()
    assert summary["resumed_from"] == 2 and summary["epochs_run"] == 2
    if workers == 0:
        assert data.epochs == [2, 3]
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    rows = metrics(tmp_path / "b")
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["val_top1"] for r in rows] == [r["val_top1"] for r in metrics(tmp_path / "a")]


def test_metrics_lines_after_the_checkpoint_are_dropped_on_resume(tmp_path):
    cfg = config(epochs=2)
    train(tiny_model(), Clips(), Clips(6), cfg, tmp_path, "fp", console=quiet())
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    ckpt["epoch"] = 1  # as if the run died after writing metrics for epoch 2 but before its checkpoint
    torch.save(ckpt, tmp_path / "checkpoint.pt")
    (tmp_path / "model.pt").unlink()
    summary = train(tiny_model(), Clips(), Clips(6), cfg, tmp_path, "fp", console=quiet())
    assert summary["resumed_from"] == 1
    assert [r["epoch"] for r in metrics(tmp_path)] == [1, 2]


def test_changed_fingerprint_starts_over(tmp_path):
    cfg = config(epochs=2)
    train(tiny_model(), Clips(), Clips(6), cfg, tmp_path, "old", console=quiet())
    console = captured()
    summary = train(tiny_model(), Clips(), Clips(6), cfg, tmp_path, "new", console=console)
    assert "starting over" in console.file.getvalue()
    assert summary["resumed_from"] is None and summary["epochs_run"] == 2
    assert len(metrics(tmp_path)) == 2
    assert torch.load(tmp_path / "model.pt", weights_only=True)["fingerprint"] == "new"


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    cfg = config(epochs=1)
    train(tiny_model(), Clips(), Clips(6), cfg, tmp_path, "fp", console=quiet())
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(CheckpointError) as e:
        train(tiny_model(), Clips(), Clips(6), cfg, tmp_path, "fp", console=quiet())
    message = str(e.value)
    assert str(path) in message and "unreadable checkpoint" in message and "\n" not in message
    console = captured()
    summary = train(tiny_model(), Clips(), Clips(6), cfg, tmp_path, "fp", console=console,
                    restart_on_corrupt=True)
    assert "starting over" in console.file.getvalue() and summary["epochs_run"] == 1


def test_keep_best_writes_best_and_model_holds_the_best_epoch(tmp_path):
    cfg = config(epochs=4, keep="best", optimizer="sgd", lr=0.05)
    train(tiny_model(), Clips(), Clips(12, flip=True), cfg, tmp_path, "fp", console=quiet())
    ckpt = torch.load(tmp_path / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "config", "fingerprint", "best"} <= set(ckpt)
    assert ckpt["epoch"] == 4 and ckpt["config"] == dataclasses.asdict(cfg)
    rows = metrics(tmp_path)
    best_epoch = max(rows, key=lambda r: r["val_top1"])["epoch"]
    best = torch.load(tmp_path / "best.pt", map_location="cpu", weights_only=True)
    final = torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    assert best["epoch"] == final["epoch"] == ckpt["best"]["epoch"] == best_epoch
    assert final["metrics"]["epoch"] == best_epoch
    assert all(torch.equal(final["model"][k], v) for k, v in best["model"].items())
    assert best_epoch < 4  # flipped val labels: the last epoch is not the best one...
    assert not all(torch.equal(final["model"][k], v) for k, v in ckpt["model"].items())  # ...so weights differ


def test_warmup_then_cosine():
    total, warmup, peak = 100, 20, 0.1
    lrs = [lr_at(s, total, warmup, peak) for s in range(total)]
    assert all(a < b for a, b in zip(lrs[:warmup], lrs[1:warmup]))
    assert max(lrs) == pytest.approx(peak) and lrs[warmup - 1] == pytest.approx(peak)
    assert all(a >= b for a, b in zip(lrs[warmup:], lrs[warmup + 1:]))
    assert lrs[-1] < 1e-3 * peak
    assert lr_at(0, 10, 0, peak) == pytest.approx(peak)  # no warm-up


def test_lr_in_metrics_rises_peaks_and_decays(tmp_path):
    cfg = config(epochs=5, warmup_epochs=2.0, lr=0.01)  # 3 steps per epoch
    train(tiny_model(), Clips(), Clips(6), cfg, tmp_path, "fp", console=quiet())
    lrs = [r["lr"] for r in metrics(tmp_path)]
    assert lrs[0] < lrs[1] == pytest.approx(0.01)
    assert lrs[1] > lrs[2] > lrs[3] > lrs[4] and lrs[4] < 0.1 * 0.01


def test_loss_fn_gets_batched_extra(tmp_path):
    seen = []

    def loss_fn(logits, y, extra):
        assert extra.shape == (len(y), K)
        assert torch.equal(extra[:, 0].long() % K, y)  # extra of item i is i; label of item i is i % K
        seen.append(len(y))
        return nn.functional.cross_entropy(logits, y)

    train(tiny_model(), Clips(20), Clips(6), config(epochs=1), tmp_path, "fp", loss_fn=loss_fn, console=quiet())
    assert seen == [8, 8, 4]  # drop_last=False


class EpochTagged(Clips):
    """extra = the epoch the dataset was last told (how view wrappers draw their views)."""

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, i):
        return self.x[i], int(self.y[i]), torch.tensor(self.epoch)


@pytest.mark.parametrize("workers", [0, 2])
def test_set_epoch_reaches_persistent_workers(tmp_path, workers):
    tags = []

    def loss_fn(logits, y, extra):
        tags.extend(extra.tolist())
        return nn.functional.cross_entropy(logits, y)

    cfg = config(epochs=3, num_workers=workers)
    train(tiny_model(), EpochTagged(16), Clips(6), cfg, tmp_path, "fp", loss_fn=loss_fn, console=quiet())
    assert tags == [0] * 16 + [1] * 16 + [2] * 16


def test_evaluate_and_topk():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    assert topk_correct(logits, torch.tensor([1, 2]), (1, 2, 5)) == [1, 2, 2]
    out = evaluate(tiny_model(), Clips(10), batch_size=4)
    assert out["logits"].shape == (10, K) and torch.equal(out["labels"], Clips(10).y)
    assert out["top5"] == 100.0  # K <= 5 classes: the true one is always among the top 5
    hits = (out["logits"].argmax(dim=1) == out["labels"]).float().mean().item()
    assert out["top1"] == pytest.approx(100.0 * hits)  # the accuracy of the logits it returns
    assert out["loss"] == pytest.approx(nn.functional.cross_entropy(out["logits"], out["labels"]).item(), rel=1e-5)


def _ddp_worker(rank, world, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world),
                      RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    model = tiny_model()
    summary = train(model, Clips(), Clips(7, seed=1), config(epochs=2), out, "fp", console=quiet())
    torch.save({"summary": summary, "model": model.state_dict()}, out / f"rank{rank}.pt")


def test_ddp_two_processes_gloo(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # spawn, not fork: a child forked from a process whose OpenMP pool already ran can hang in its first
    # torch call (seen: rank 0 stuck in torch.set_num_threads for 10 min, a full suite run on a fresh clone)
    torch.multiprocessing.start_processes(_ddp_worker, args=(2, port, tmp_path), nprocs=2, start_method="spawn")
    rows = metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1, 2]
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["summary"]["last_top1"] == r1["summary"]["last_top1"] == rows[-1]["val_top1"]  # all-reduced
    final = torch.load(tmp_path / "model.pt", weights_only=True)["model"]
    for k, v in final.items():  # replicas in step, BatchNorm statistics included
        assert torch.equal(v, r0["model"][k]) and torch.equal(v, r1["model"][k]), k
