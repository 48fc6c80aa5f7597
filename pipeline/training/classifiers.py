"""What the `teacher`, `student` and `baseline` stages share: one way to train a video classifier.

Each draws one seeded view per train clip per epoch (`ViewDataset`: the finite set
of views `soft-labels` caches logits for; its items are uint8 windows, the views are made
on the training device by the same `views.make_views` as soft-labels'), validates on the
validation split's centre view (view 0), starts from a seeded initialisation, trains with `loop.train` and
describes the result in `meta.json`. The stages differ only in the clips they read
("enhanced" or "original"), their config section and their loss.
"""
from __future__ import annotations

from ...errors import StageError
from ..config import normalize_mode
from ..datasets.clips import ViewDataset, clips_index, split_statistics
from ..datasets.shards import ClipDataset
from ..engine import ranks
from .checkpoints import write_meta
from .loop import train
from .weights import initial_model, input_normalization, recipe_warning


def view_datasets(ctx, which: str, seed: int, logits=None) -> tuple[ViewDataset, ViewDataset]:
    """(train set: one seeded clip and view per video per epoch, val set: the validation split at view 0).

    `which` is "enhanced" (teacher) or "original" (student); `logits` (N, V, K), rows by
    clip id, makes the train set yield the teacher's logits of the drawn view. Both sets
    standardise with the train statistics of `which` (their `stats`, for meta.json; None under
    data.normalize = none), which `train_classifier` replaces by the mode's choice for the model's
    pretrained source; the test split is read by `evaluate` alone.
    """
    index = clips_index(ctx.dir_of("enhance"))
    train_clips = ClipDataset.from_index(index, "train", which)
    val_clips = ClipDataset.from_index(index, "val", which)
    if len(train_clips) == 0:
        raise StageError(f"{index}: the train split has no clips")
    stats = split_statistics(index, which, ctx.cfg.data)
    train_set = ViewDataset(train_clips, ctx.cfg.data, seed=seed, logits=logits, per_video=True, stats=stats)
    val_set = ViewDataset(val_clips, ctx.cfg.data, view=0, stats=stats)
    return train_set, val_set


def class_names(clips: ClipDataset) -> list[str]:
    """The index's class names, or "0".."K-1" when it lists none."""
    if getattr(clips, "classes", None):
        return list(clips.classes)
    return [str(k) for k in range(max(clips.labels, default=-1) + 1)]


def model_statistics(ctx, init, own: dict | None) -> dict | None:
    """What the model `init` starts is standardised with under data.normalize (`input_normalization`):
    `own`, its stream's train statistics, the pretrained source's (they travel with its weights), the
    original stream's (source, random weights), or None."""
    mode = ctx.cfg.data.normalize
    original = split_statistics(clips_index(ctx.dir_of("enhance")), "original", ctx.cfg.data) \
        if normalize_mode(mode) == "source" else None
    return input_normalization(init, own, mode, original)


def train_classifier(ctx, train_cfg, which: str, desc: str, *, logits=None, loss_fn=None,
                     about: str = "", extra: dict | None = None) -> dict:
    """Train `train_cfg.model` on the `which` clips into ctx.out (model.pt, meta.json); returns the
    stage summary: model, cost, clip counts and `train`'s summary. `about` adds to the opening line."""
    cfg = ctx.cfg
    train_set, val_set = view_datasets(ctx, which, train_cfg.seed, logits)
    classes = class_names(train_set.clips)
    # seeded from train_cfg.seed: baseline and student, built from the same settings, start identical
    model, init = initial_model(train_cfg, classes, cfg, ctx.cache, ctx.console)
    warning = recipe_warning(init, train_cfg)
    if warning and ranks.is_main():
        ctx.console.print(f"  [yellow]warning:[/] {desc}: {warning}", highlight=False)
    # before training, so a mode the source has no statistics for stops with nothing written (the
    # datasets' view_maker reads them when the views are made, on the device)
    train_set.stats = val_set.stats = model_statistics(ctx, init, train_set.stats)
    ctx.console.print(f"  {desc} {train_cfg.model}: {len(train_set)} train videos ({which}, {len(train_set.clips)} "
                      f"clips, {cfg.data.views} views{about}), {len(val_set)} validation clips (view 0)",
                      markup=False, highlight=False)
    summary = train(model, train_set, val_set, train_cfg, ctx.out, ctx.graph.inspect(ctx.name).fingerprint,
                    loss_fn=loss_fn, device=ctx.device, console=ctx.console, desc=desc,
                    restart_on_corrupt=True)  # an unreadable checkpoint: train again
    meta = {}
    if ranks.is_main():
        meta = write_meta(ctx.out, model_name=train_cfg.model, num_classes=len(classes), classes=classes,
                          input=which, data_cfg=cfg.data, H=train_set.H, W=train_set.W,
                          model_kwargs=init.model_kwargs,
                          extra={**(extra or {}), "init": init.source,
                                 **({"normalize": train_set.stats} if train_set.stats else {})})
    return {"model": train_cfg.model, "params": meta.get("params"),
            "gflops_per_clip": meta.get("gflops_per_clip"), "train_clips": len(train_set),
            "val_clips": len(val_set), **summary}
