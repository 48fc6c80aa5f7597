"""The `evaluate` stage: the paper's Table 1 for this cache, plus per-class accuracy and plots.

Five rows, all on the TEST split:

- `teacher`                     the teacher on enhanced clips (what it was trained on)
- `teacher_on_original`         the same teacher on the original dark clips, standardised with the teacher's
                                own statistics (data.normalize = stream: the enhanced stream's): the domain
                                gap plus a statistics mismatch
- `teacher_on_original_restat`  the same, re-standardised with the original stream's statistics: the domain
                                gap alone. Where both statistics are one (source, none) its scores are the
                                row above's ("same_as"), and the report shows one row
- `baseline`                    the student architecture trained with cross-entropy only (alpha = 0)
- `student`                     the distilled student, on original clips (no enhancer at inference)

Single-view: clip 0 of each test video, view 0 (the centre crop). Multi-view: every
cached test clip of a video x `evaluate.crops` spatial crops (boxes of side
`evaluate.crop_scale` x the short side, spread along the long side, so they differ
even on square clips), softmax probabilities averaged per video (ARID's protocol).
Each model's inputs are standardised with its meta.json "normalize" statistics (the restat row's with
the original stream's: `original_statistics`). The loaders ship
uint8 clips and the crops' boxes; the crops are made on the device (`views.make_views`, as in training).
Accuracies are percentages over videos. This is the one module that reads the test split;
`results_page` writes what it found.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Subset

from ...errors import StageError
from ..config import normalize_mode
from ..datasets.clips import CropsDataset, clips_index, split_statistics
from ..datasets.shards import ClipDataset
from ..datasets.views import multi_view_crops, test_views
from ..training.checkpoints import load_trained
from ..training.device import autocast, fast_kernels, resolve_device
from ..training.ensemble import load_teacher
from ..training.loaders import make_loader, view_maker_of
from .results_page import RESTAT, ROWS, STATISTICS, write_results

# (row, the stage whose model it scores, the input it is fed (None: the one the model was trained on),
# the statistics it is standardised with: None the model's own (meta.json), "original" the original stream's)
PLAN = (("teacher", "teacher", None, None), ("teacher_on_original", "teacher", "original", None),
        (RESTAT, "teacher", "original", "original"),
        ("baseline", "baseline", "original", None), ("student", "student", "original", None))
MODEL_STAGES = ("teacher", "baseline", "student")
ACCURACIES = ("top1", "top5", "top1_multi", "top5_multi")


@dataclass
class TestSplit:
    """The test clips of the cache and how they group into videos."""
    videos: list[str]  # video names, in first-seen index order
    labels: np.ndarray  # (V,) label per video
    clip_video: np.ndarray  # (N,) video number of each test clip, in index order
    single: np.ndarray  # (V,) position (in the test clips) of each video's clip 0


def test_split(index_path: Path, split: str = "test") -> TestSplit:
    """Group the index's clips of `split` (test, or val for `study --split val`) by video;
    clip 0 (or the first listed) is the single view."""
    index = json.loads(Path(index_path).read_text())
    rows = [c for c in index["clips"] if c["split"] == split]
    if not rows:
        raise StageError(f"{index_path}: the {split} split has no clips")
    order: dict[str, int] = {}
    labels, clip_video, single = [], [], {}
    for pos, c in enumerate(rows):
        v = order.setdefault(c["video"], len(order))
        if v == len(labels):
            labels.append(int(c["label"]))
        clip_video.append(v)
        if c.get("clip", 0) == 0:
            single.setdefault(v, pos)
    for pos, v in enumerate(clip_video):  # a video without a clip 0: its first listed clip
        single.setdefault(v, pos)
    return TestSplit(list(order), np.array(labels, dtype=np.int64), np.array(clip_video, dtype=np.int64),
                     np.array([single[v] for v in range(len(order))], dtype=np.int64))


def _probabilities(model, data, batch_size: int, device, num_workers) -> list[torch.Tensor]:
    """Softmax probabilities (n, crops, K) per batch of a CropsDataset (or a Subset of one)."""
    device = resolve_device(device)
    fast_kernels(device)
    model.eval()
    views = view_maker_of(data)
    out = []
    for x, _, _ in make_loader(data, batch_size, device, num_workers, persistent=False):
        x = views(x, device)  # (n, crops, 3, T, crop, crop), made on the device
        n, c = x.shape[:2]
        with autocast(device):
            logits = model(x.flatten(0, 1))
        out.append(torch.softmax(logits.float(), dim=1).reshape(n, c, -1).cpu())
    return out


@torch.inference_mode()
def crop_probabilities(model, clips: ClipDataset, crop: int, crops: int, batch_size: int,
                       device, stats: dict | None = None, scale: float = 1.0, num_workers="auto") -> np.ndarray:
    """Softmax probabilities (N, crops, K) of every clip at each of its `crops` spatial crops."""
    data = CropsDataset(clips, crop, crops, stats=stats, scale=scale)
    # batch_size counts network inputs (clips x crops) per forward pass.
    out = _probabilities(model, data, max(1, batch_size // crops), device, num_workers)
    return torch.cat(out).numpy() if out else np.zeros((0, crops, 0), np.float32)


@torch.inference_mode()
def centre_probabilities(model, clips: ClipDataset, positions: np.ndarray, crop: int, batch_size: int,
                         device, stats: dict | None = None, num_workers="auto") -> np.ndarray:
    """Softmax probabilities (len(positions), K) of the given clips at view 0 (the centre square)."""
    data = Subset(CropsDataset(clips, crop, 1, stats=stats), [int(i) for i in positions])
    return torch.cat(_probabilities(model, data, batch_size, device, num_workers))[:, 0].numpy()


def topk_hits(probs: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """(V,) bool: is the label among the k most probable classes (k capped at the class count)."""
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return (top == labels[:, None]).any(axis=1)


def score(single: np.ndarray, multi: np.ndarray, labels: np.ndarray, K: int) -> dict:
    """Accuracies (percent), per-class top-1 and the confusion matrix from per-video probabilities."""
    pct = lambda hits: 100.0 * float(hits.mean()) if len(hits) else 0.0  # noqa: E731
    pred = multi.argmax(axis=1)
    confusion = np.zeros((K, K), dtype=np.int64)
    np.add.at(confusion, (labels, pred), 1)
    per_class = [100.0 * float(confusion[k, k]) / float(confusion[k].sum()) if confusion[k].sum() else None
                 for k in range(K)]
    return {"top1": pct(topk_hits(single, labels, 1)), "top5": pct(topk_hits(single, labels, 5)),
            "top1_multi": pct(topk_hits(multi, labels, 1)), "top5_multi": pct(topk_hits(multi, labels, 5)),
            "per_class": per_class, "confusion": confusion.tolist()}


def evaluate_model(model, clips: ClipDataset, split: TestSplit, crop: int, crops: int, batch_size: int,
                   device, stats: dict | None = None, scale: float = 1.0, num_workers="auto") -> dict:
    """Single-view and multi-view scores of one model on one input (original or enhanced);
    `stats` is the model's meta.json "normalize", `scale` the multi-view crops' share of the short side."""
    probs = crop_probabilities(model, clips, crop, crops, batch_size, device, stats, scale,
                               num_workers)  # (N, crops, K)
    K = probs.shape[2]
    centre = multi_view_crops(*clips.shape[1:], 1)[0]
    views = test_views(*clips.shape[1:], crops, scale)
    if centre in views:  # odd crop counts at scale 1 include view 0: reuse it instead of a second pass
        single = probs[split.single, views.index(centre)]
    else:
        single = centre_probabilities(model, clips, split.single, crop, batch_size, device, stats, num_workers)
    V = len(split.videos)
    multi = np.zeros((V, K), dtype=np.float64)
    np.add.at(multi, split.clip_video, probs.sum(axis=1))
    multi /= np.bincount(split.clip_video, minlength=V)[:, None] * probs.shape[1]
    return {**score(single, multi, split.labels, K), "video_hits": multi.argmax(axis=1) == split.labels,
            "video_probs": multi}


# ----------------------------------------------------------------------------------- the stage

def _check_classes(meta: dict, classes: list[str], where: Path) -> None:
    if classes and list(meta["classes"]) != list(classes):
        raise StageError(f"{where}: trained for classes {meta['classes']}, but the clip cache has {classes}; "
                         f"retrain it")


def run_stage(ctx) -> dict:
    """The engine's call: the folders of the stages it reads, and the report folder it writes."""
    folders = {name: ctx.dir_of(name) for name in ("enhance", *MODEL_STAGES)}
    return evaluate_cache(ctx.cfg, folders, ctx.out, ctx.device, ctx.console)


def evaluate_cache(cfg, folders: dict[str, Path], out: Path, device, console) -> dict:
    """Score every row on the test split; write results.json, results.md and the plots into `out`.
    `folders`: the clip cache ("enhance") and each model's folder. Returns the stage summary."""
    results = score_rows(cfg, folders, device, console)
    write_results(results, {name: folders[name] for name in MODEL_STAGES}, out)
    summary = {"videos": results["videos"]}
    for row in ROWS:
        summary[row] = {k: results[row][k] for k in ACCURACIES}
    return summary


def score_rows(cfg, folders: dict[str, Path], device, console) -> dict:
    """results.json's content: each row's scores and model facts, the classes and the counts."""
    index = clips_index(folders["enhance"])
    split = test_split(index)
    inputs = {w: ClipDataset.from_index(index, "test", w) for w in ("enhanced", "original")}
    classes = list(inputs["original"].classes)
    crops = cfg.evaluate.crops
    results: dict = {}
    student_meta: dict = {}
    used: dict = {}  # row -> the statistics it was standardised with
    try:
        for row, stage, which, stats_of, model, meta in _models_in_turn(folders, classes, device):
            if stage == "student":
                student_meta = meta
            stats = used[row] = meta.get("normalize") if stats_of is None else original_statistics(cfg, index, meta)
            if row == RESTAT and stats == used.get("teacher_on_original"):  # source, none: one set, one score
                results[row] = {**results["teacher_on_original"], "same_as": "teacher_on_original",
                                "inference_statistics": STATISTICS[row]}
                continue
            console.print(f"  evaluate {row}: {meta['model']} on {which} test clips "
                          f"({len(split.videos)} videos, {len(inputs[which])} clips x {crops} crops"
                          + (f", {STATISTICS[row]} statistics" if row in STATISTICS else "") + ")",
                          markup=False, highlight=False)
            scores = evaluate_model(model, inputs[which], split, meta.get("crop", cfg.data.crop), crops,
                                    cfg.evaluate.batch_size, device, stats, cfg.evaluate.crop_scale,
                                    cfg.evaluate.num_workers)
            results[row] = _row_result(stage, which, meta, scores)
            if row in STATISTICS:
                results[row]["inference_statistics"] = STATISTICS[row]
    finally:
        for x in inputs.values():
            x.close()
    return {**results, "classes": classes, "videos": len(split.videos), "clips": len(inputs["original"]),
            "crops": crops, "student_params": _student_params(cfg.student, folders["student"].name, student_meta)}


def original_statistics(cfg, index_path: Path, meta: dict) -> dict | None:
    """The statistics the original stream is standardised with: under data.normalize = stream its own
    train clips' (clips/index.json); under source and none one set serves every stream, the one in the
    model's `meta` (the teacher's: the source's, or none)."""
    if normalize_mode(cfg.data.normalize) == "stream":
        return split_statistics(index_path, "original", cfg.data)
    return meta.get("normalize")


def _models_in_turn(folders: dict[str, Path], classes: list[str], device):
    """(row, stage, input, statistics, model, meta) for each row of `PLAN`, each model loaded once,
    one at a time."""
    current = None
    for row, stage, which, stats_of in PLAN:
        if current is None or current[0] != stage:
            current = None  # one model in memory at a time
            load = load_teacher if stage == "teacher" else load_trained  # an ensemble teacher: its mean logits
            model, meta = load(folders[stage], str(resolve_device(device)))
            _check_classes(meta, classes, folders[stage])
            current = (stage, model, meta)
        _, model, meta = current
        yield row, stage, which or meta.get("input", "enhanced"), stats_of, model, meta  # teacher: its own stream


def _row_result(stage: str, which: str, meta: dict, scores: dict) -> dict:
    train_input = meta.get("input", "enhanced" if stage == "teacher" else "original")
    if stage == "student":
        train_input += " (+ teacher soft labels)"
    return {**{k: scores[k] for k in ACCURACIES},
            "params": meta.get("params"), "gflops_per_clip": meta.get("gflops_per_clip"),
            "model": meta["model"], "train_input": train_input, "inference_input": which,
            "per_class": scores["per_class"], "confusion": scores["confusion"]}


def _student_params(student_cfg, folder_name: str, meta: dict) -> dict:
    s = student_cfg
    return {"alpha": meta.get("alpha", s.alpha), "temperature": meta.get("temperature", s.temperature),
            "variant": meta.get("variant", folder_name)}
