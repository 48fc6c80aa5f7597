"""The `pretrain` stage: the teacher's and the student's architectures trained on normal-light footage.

The dark task alone gives a teacher nothing for the enhancer to unlock; a model that has
learnt the actions in daylight sees the enhanced clip as familiar input. This stage trains
each architecture (once when teacher and student share it) on the labelled dataset of
`[pretrain]`, from random weights, and keeps the result in `pretrain/<model>/` (model.pt,
meta.json with its classes), where `pretrained = "pretrain"` finds it.

The footage goes through the `enhance` stage's own machinery (decode, sample, resize,
HDF5 shards, resumable per shard) with the identity enhancer, into `pretrain/clips/`;
training is the shared loop with the same views as the task. Shards are kept while the
footage and the clip settings are unchanged, and each architecture resumes from its own
checkpoint, so changing one model name retrains only that architecture.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ... import models
from ...errors import StageError
from ..config import PRETRAIN_DATA_KEYS, Schedule, TrainConfig, pretrain_data
from ..datasets.clips import ViewDataset, split_statistics
from ..datasets.shards import ClipDataset
from ..datasets.splits import dataset_root
from ..engine.fingerprint import code_digests, hash_json
from ..enhancers.build import make_enhancer, save_enhancer
from ..names import CLIP_INDEX, ENHANCER_FILE
from ..training.checkpoints import write_meta
from ..training.classifiers import class_names
from ..training.loop import train
from .enhancing.make import make_clips

CLIPS = "clips"
CLIP_CODE = "dlkdd.pipeline.stages.enhancing.make:make_clips"  # the clips are made by the enhance stage's work


def architectures(cfg) -> list[str]:
    """The models to pretrain: the teacher's and the student's, each once."""
    return list(dict.fromkeys([cfg.teacher.model, cfg.student.model]))


def train_config(cfg, model: str) -> TrainConfig:
    """`[pretrain]`'s training keys as the TrainConfig the shared loop reads, for `model`, from random."""
    schedule = {f.name: getattr(cfg.pretrain, f.name) for f in dataclasses.fields(Schedule)}
    return TrainConfig(model=model, pretrained="", **schedule)


def cache_clips(ctx) -> Path:
    """Decode the footage into `pretrain/clips/` shards (kept when unchanged); returns index.json.

    The shards are kept under a fingerprint of the clip settings, the videos and the enhance
    stage's code only, so new training settings keep them."""
    insp = ctx.graph.inspect(ctx.name)
    clip_params = {k: v for k, v in insp.params.items()
                   if k.startswith(("data.", "enhance.")) or k in PRETRAIN_DATA_KEYS}
    fingerprint = hash_json([clip_params, insp.inputs, code_digests(CLIP_CODE), insp.versions])
    out = ctx.out / CLIPS
    out.mkdir(parents=True, exist_ok=True)
    day = pretrain_data(ctx.cfg)
    save_enhancer(make_enhancer(day.enhancer), out / ENHANCER_FILE, day.enhancer)  # identity: no enhancer
    ctx.console.print(f"  decoding the normal-light footage of {day.data.root}")
    make_clips(day.data, day.enhance, dataset_root(day), out, out / ENHANCER_FILE, fingerprint, ctx.device,
               ctx.console, ctx.options)
    return out / CLIP_INDEX


def _arch_fingerprint(insp, model: str) -> str:
    """The stage's fingerprint without the other architecture's name: a checkpoint of `model`
    survives a change of the other model."""
    params = {k: v for k, v in insp.params.items() if k not in ("teacher.model", "student.model")}
    return hash_json([params, model, insp.inputs, insp.code, insp.versions])


def run_stage(ctx) -> dict:
    cfg = ctx.cfg
    if not cfg.pretrain.root:
        raise StageError("pretrain.root is empty: point it at labelled normal-light footage "
                         "(--set pretrain.root=DIR), or start the models elsewhere (pretrained = \"\")")
    index = cache_clips(ctx)
    train_clips = ClipDataset.from_index(index, "train", "original")
    val_clips = ClipDataset.from_index(index, "val", "original")
    if len(train_clips) == 0:
        raise StageError(f"{index}: the normal-light train split has no clips")
    classes = class_names(train_clips)
    # Trained from random weights: standardised with the footage's own train statistics under
    # data.normalize = stream and source alike (its meta.json carries them: `source` standardises the
    # task's two streams with them), none under none (pixel / 255).
    stats = split_statistics(index, "original", cfg.data)
    train_set = ViewDataset(train_clips, cfg.data, seed=cfg.pretrain.seed, per_video=True, stats=stats)
    val_set = ViewDataset(val_clips, cfg.data, view=0, stats=stats)
    insp = ctx.graph.inspect(ctx.name)
    summary = {"classes": classes, "train_clips": len(train_clips), "val_clips": len(val_clips), "models": {}}
    for name in architectures(cfg):
        tcfg = train_config(cfg, name)
        torch.manual_seed(tcfg.seed)
        model = models.build(name, len(classes))
        ctx.console.print(f"  pretrain {name}: {len(train_clips)} normal-light train clips, "
                          f"{len(val_clips)} validation clips (view 0)", markup=False, highlight=False)
        out = ctx.out / name
        result = train(model, train_set, val_set, tcfg, out, _arch_fingerprint(insp, name), device=ctx.device,
                       console=ctx.console, desc=f"pretrain {name}", restart_on_corrupt=True)
        extra = {"source": str(cfg.pretrain.root), **({"normalize": stats} if stats else {})}
        write_meta(out, model_name=name, num_classes=len(classes), classes=classes, input="normal-light",
                   data_cfg=cfg.data, H=train_clips.shape[1], W=train_clips.shape[2], extra=extra)
        summary["models"][name] = {k: result.get(k) for k in ("last_top1", "best_top1", "epochs", "seconds")}
    return summary
