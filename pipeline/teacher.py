"""The `teacher` stage: train the teacher on the enhanced clips, seeded views as augmentation.

Training draws one seeded view per clip per epoch (`ViewDataset`), the same
finite set of views `soft-labels` caches logits for, so the teacher is trained
on exactly the inputs it will later label. Validation is the test split's
centre view (view 0). `view_datasets` and `build_model` are shared with the
student stage, which trains the same way on the original clips.
"""
from __future__ import annotations

import os

import torch

from .checkpoints import write_meta
from .data import Normalized, ViewDataset, clips_index
from .shards import ClipDataset
from .stages import StageError
from .train import train
from .weights import initial_model, input_normalization


def view_datasets(ctx, which: str, seed: int, logits=None) -> tuple[ViewDataset, ViewDataset]:
    """(train set: one seeded view per clip per epoch, val set: the test split at view 0).

    `which` is "enhanced" (teacher) or "original" (student); `logits` (N, V, K), rows by
    clip id, makes the train set yield the teacher's logits of the drawn view.
    """
    index = clips_index(ctx.dir_of("enhance"))
    train_clips = ClipDataset.from_index(index, "train", which)
    val_clips = ClipDataset.from_index(index, "test", which)
    if len(train_clips) == 0:
        raise StageError(f"{index}: the train split has no clips")
    train_set = ViewDataset(train_clips, ctx.cfg.data, seed=seed, logits=logits)
    val_set = ViewDataset(val_clips, ctx.cfg.data, view=0)
    return train_set, val_set


def class_names(clips: ClipDataset) -> list[str]:
    """The index's class names, or "0".."K-1" when it lists none."""
    if getattr(clips, "classes", None):
        return list(clips.classes)
    return [str(k) for k in range(max(clips.labels, default=-1) + 1)]


def build_model(ctx, train_cfg, classes: list[str]):
    """(model, init): `train_cfg.model` seeded from `train_cfg.seed`, starting from `train_cfg.pretrained`."""
    return initial_model(train_cfg, classes, ctx.cfg, ctx.cache, ctx.console)


def is_main_process() -> bool:
    """Rank 0 under torchrun (or no torchrun): the one process that writes shared files."""
    return int(os.environ.get("RANK", "0")) == 0


def run_stage(ctx) -> dict:
    cfg = ctx.cfg
    train_set, val_set = view_datasets(ctx, "enhanced", cfg.teacher.seed)
    classes = class_names(train_set.clips)
    model, init = build_model(ctx, cfg.teacher, classes)
    stats = input_normalization(init, data_stats=None)
    if stats:  # the pretrained source's statistics travel with the weights
        train_set, val_set = Normalized(train_set, stats), Normalized(val_set, stats)
    fingerprint = ctx.graph.inspect(ctx.name).fingerprint
    ctx.console.print(f"  teacher {cfg.teacher.model}: {len(train_set)} train clips (enhanced, "
                      f"{cfg.data.views} views), {len(val_set)} test clips (view 0)")
    summary = train(model, train_set, val_set, cfg.teacher, ctx.out, fingerprint, device=ctx.device,
                    console=ctx.console, desc="teacher", restart_on_corrupt=True)
    meta = {}
    if is_main_process():
        meta = write_meta(ctx.out, model_name=cfg.teacher.model, num_classes=len(classes), classes=classes,
                          input="enhanced", data_cfg=cfg.data, H=train_set.H, W=train_set.W,
                          model_kwargs=init.model_kwargs,
                          extra={"init": init.source, **({"normalize": stats} if stats else {})})
    return {"model": cfg.teacher.model, "params": meta.get("params"),
            "gflops_per_clip": meta.get("gflops_per_clip"), "train_clips": len(train_set),
            "val_clips": len(val_set), **summary}
