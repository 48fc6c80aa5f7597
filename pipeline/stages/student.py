"""The `student` and `baseline` stages: the lightweight model on the original (dark) clips.

Each time the student sees a train clip it draws one of the clip's V seeded views
(`ViewDataset`), applies that view's geometry to the original clip, and gets the
teacher's logits for exactly that view from `soft-labels/logits.h5`. The teacher
model itself is never loaded: distillation costs one array lookup per clip.
Each epoch also draws one of the video's cached temporal positions. Validation is
the validation split's original clips at view 0 (the test split is read by
`evaluate` alone); inputs are standardised with the train clips' original-stream
statistics (or the pretrained source's), which travel in meta.json.

`baseline` is the same student (model, seed, data order, views, schedule) trained
with alpha = 0, reading no logits, so it never depends on the teacher; a student
variant with alpha = 0 ends with bit-identical weights (on the CPU). The two
together say what distillation adds. The training itself is
`classifiers.train_classifier`, shared with the teacher.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..datasets.clips import ViewDataset, clips_index, read_logits
from ..datasets.shards import ClipDataset, ShardError
from ..names import LOGITS_FILE
from ..training.classifiers import class_names, train_classifier, view_datasets
from ..training.distill import make_loss_fn

# logits.h5 attrs that must equal the config's view settings when soft-labels wrote them
VIEW_ATTRS = ("views", "view_seed", "crop", "min_scale")


def load_soft_labels(path: Path, data_cfg, num_clips: int, classes: list[str]) -> np.ndarray:
    """The (N, V, K) float32 logits, checked against the clip index and the view settings."""
    logits, attrs = read_logits(path)
    if "classes" in attrs and json.loads(attrs["classes"]) != list(classes):
        raise ShardError(f"{path}: made for other classes than the clip index lists; "
                         f"rerun `dlkdd soft-labels`")
    want = {"views": data_cfg.views, "view_seed": data_cfg.view_seed, "crop": data_cfg.crop,
            "min_scale": data_cfg.min_scale}
    for key in VIEW_ATTRS:
        if key == "views" or key in attrs:  # `views` is required; the others are checked when present
            got = attrs.get(key)
            if got is None or not np.isclose(float(got), float(want[key])):
                raise ShardError(f"{path}: made for data.{key} = {got}, but data.{key} = {want[key]}; "
                                 f"rerun `dlkdd soft-labels`")
    if logits.ndim != 3 or logits.shape[1] != data_cfg.views:
        raise ShardError(f"{path}: logits of shape {logits.shape}, expected (N, {data_cfg.views}, K)")
    if logits.shape[0] != num_clips:
        raise ShardError(f"{path}: logits for {logits.shape[0]} clips, but the clip index lists {num_clips}; "
                         f"rerun `dlkdd soft-labels`")
    if logits.shape[2] != len(classes):
        raise ShardError(f"{path}: logits for {logits.shape[2]} classes, but the clips have {len(classes)}")
    return np.ascontiguousarray(logits, dtype=np.float32)


def student_datasets(ctx, logits: np.ndarray | None = None) -> tuple[ViewDataset, ViewDataset]:
    """(train: original clips, one clip and view drawn per (seed, epoch, video) [+ that view's teacher
    logits], val: the validation split's original clips at view 0); both standardised alike."""
    return view_datasets(ctx, "original", ctx.cfg.student.seed, logits)


def _train_student(ctx, alpha: float, logits: np.ndarray | None, desc: str, extra: dict) -> dict:
    s = ctx.cfg.student
    about = f", alpha {alpha:g}, T {s.temperature:g}" if logits is not None else ", plain CE"
    loss_fn = make_loss_fn(alpha, s.temperature if alpha > 0 else 1.0,  # T is unused at alpha = 0
                           label_smoothing=s.label_smoothing)
    summary = train_classifier(ctx, s, "original", desc, logits=logits, loss_fn=loss_fn, about=about,
                               extra=extra)
    best = s.keep == "best"  # model.pt holds the best epoch's weights then, else the last
    return {"top1": summary["best_top1" if best else "last_top1"],
            "top5": summary["best_top5" if best else "last_top5"],
            "alpha": extra["alpha"], "temperature": extra["temperature"], **summary}


def run_student(ctx) -> dict:
    """Distil: original clips in, the cached teacher logits of the drawn view as soft targets."""
    s = ctx.cfg.student
    path = ctx.dir_of("soft-labels") / LOGITS_FILE
    every = ClipDataset.from_index(clips_index(ctx.dir_of("enhance")))  # logits rows are global clip ids
    logits = load_soft_labels(path, ctx.cfg.data, len(every), class_names(every))
    train_ids = ClipDataset.from_index(clips_index(ctx.dir_of("enhance")), "train").clip_ids
    if s.alpha > 0 and not np.isfinite(logits[train_ids]).all():  # test rows are NaN by design
        raise ShardError(f"{path}: holds NaN or infinite logits; rerun `dlkdd soft-labels`")
    return _train_student(ctx, s.alpha, logits, "student",
                          {"alpha": s.alpha, "temperature": s.temperature, "variant": ctx.out.name})


def run_baseline(ctx) -> dict:
    """The same student with alpha = 0 (plain cross-entropy); reads no logits."""
    # Nothing here may depend on student.alpha or student.temperature: they are not baseline params.
    return _train_student(ctx, 0.0, None, "baseline",
                          {"alpha": 0.0, "temperature": None, "variant": ctx.out.name})
