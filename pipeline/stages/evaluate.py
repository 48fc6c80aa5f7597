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
Accuracies are percentages over videos. This is the one module that reads the test split.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no global backend state, safe off the main thread
from matplotlib.ticker import MaxNLocator
from torch.utils.data import Subset

from ...errors import StageError
from ..config import normalize_mode
from ..datasets.clips import CropsDataset, clips_index, split_statistics
from ..datasets.shards import ClipDataset
from ..datasets.views import multi_view_crops, test_views
from ..engine import atomic
from ..names import CONFUSION_PNG, CURVES_PNG, METRICS, RESULTS_JSON, RESULTS_MD
from ..training.checkpoints import load_trained
from ..training.device import autocast, fast_kernels, resolve_device
from ..training.ensemble import load_teacher
from ..training.history import read_metrics
from ..training.loaders import make_loader, view_maker_of

RESTAT = "teacher_on_original_restat"  # the teacher on original clips, re-standardised as the original stream
ROWS = ("teacher", "teacher_on_original", RESTAT, "baseline", "student")
# (row, the stage whose model it scores, the input it is fed (None: the one the model was trained on),
# the statistics it is standardised with: None the model's own (meta.json), "original" the original stream's)
PLAN = (("teacher", "teacher", None, None), ("teacher_on_original", "teacher", "original", None),
        (RESTAT, "teacher", "original", "original"),
        ("baseline", "baseline", "original", None), ("student", "student", "original", None))
# what the two teacher-on-original rows standardise with (results.json "inference_statistics")
STATISTICS = {"teacher_on_original": "teacher's", RESTAT: "original stream's"}
MODEL_STAGES = ("teacher", "baseline", "student")
ACCURACIES = ("top1", "top5", "top1_multi", "top5_multi")
COLUMNS = ("Model", "Method", "Training input", "Inference input", "Top-1", "Top-5",
           "Top-1 (multi)", "Top-5 (multi)", "Params (M)", "GFLOPs/clip")


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


def write_results(results: dict, model_dirs: dict[str, Path], out: Path) -> None:
    """results.json, the training curves of the models in `model_dirs`, the student's confusion
    matrix and results.md."""
    atomic.write_json(out / RESULTS_JSON, results)
    curves = {name: read_metrics(folder / METRICS, upto=10 ** 9) for name, folder in model_dirs.items()}
    plot_curves(curves, out / CURVES_PNG)
    plot_confusion(np.array(results["student"]["confusion"]), results["classes"], out / CONFUSION_PNG,
                   f"student ({results['student']['model']}), multi-view, original input")
    atomic.write_bytes(out / RESULTS_MD, results_markdown(results).encode())


# ----------------------------------------------------------------------------------- the report

def _method(row: str, results: dict) -> str:
    if row.startswith("teacher"):
        return "teacher"
    if row == "baseline":
        return "baseline (CE)"
    p = results.get("student_params") or {}
    alpha, T = p.get("alpha"), p.get("temperature")
    if alpha is None or T is None:
        return "DL-KDD"
    return f"DL-KDD (alpha={alpha:g}, T={T:g})"


def _num(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def shown_rows(results: dict) -> list[str]:
    """The rows of `results` the report shows: a row with another's scores ("same_as") is that row."""
    return [row for row in ROWS if results.get(row) and "same_as" not in results[row]]


def _inference_input(row: str, results: dict) -> str:
    """The input cell; the teacher-on-original rows also name their statistics when both are shown."""
    which = results[row]["inference_input"]
    return f"{which} ({STATISTICS[row]} statistics)" if row in STATISTICS and RESTAT in shown_rows(results) else which


def format_table(results: dict) -> str:
    """The markdown table in the form of the paper's Table 1 (one row per evaluated model/input)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] * 4 + ["---:"] * 6) + "|"]
    for row in shown_rows(results):
        r = results[row]
        params = None if r.get("params") is None else r["params"] / 1e6
        cells = [r["model"], _method(row, results), r["train_input"], _inference_input(row, results),
                 _num(r["top1"]), _num(r["top5"]), _num(r["top1_multi"]), _num(r["top5_multi"]),
                 _num(params, 3), _num(r.get("gflops_per_clip"), 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _per_class_table(results: dict) -> str:
    rows = shown_rows(results)
    lines = ["| Class | Videos | " + " | ".join(rows) + " |", "|---|---:|" + "---:|" * len(rows)]
    counts = np.array(results["student"]["confusion"]).sum(axis=1) if "student" in results else None
    for k, name in enumerate(results["classes"]):
        n = "" if counts is None else str(int(counts[k]))
        lines.append(f"| {name} | {n} | " + " | ".join(_num(results[r]["per_class"][k], 1) for r in rows) + " |")
    return "\n".join(lines)


def _confusion_table(confusion: list[list[int]], classes: list[str]) -> str:
    lines = ["| true \\ predicted | " + " | ".join(classes) + " |", "|---|" + "---:|" * len(classes)]
    for name, counts in zip(classes, confusion):
        lines.append(f"| {name} | " + " | ".join(str(c) for c in counts) + " |")
    return "\n".join(lines)


def _teacher_on_original_notes(results: dict) -> list[str]:
    if RESTAT in shown_rows(results):
        return ["- **teacher on original, teacher's statistics**: the same teacher fed the original dark clips "
                "standardised with the statistics it was trained with (`data.normalize = stream`: the enhanced "
                "stream's); the drop from the row above is the domain gap plus the mismatch between the dark "
                "clips and those statistics.",
                "- **teacher on original, original stream's statistics**: the same clips standardised with the "
                "original stream's train statistics (`clips/index.json`) instead: the domain gap alone, that "
                "the enhancer bridges."]
    return ["- **teacher on original**: the same teacher fed the original dark clips; the statistics it was "
            "trained with are the original stream's too (one set for both streams: `data.normalize = source` "
            "or `none`, or a teacher trained on original clips), so the drop from the row above is the domain "
            "gap alone, that the enhancer bridges (results.json's `teacher_on_original_restat` is this row)."]


def results_markdown(results: dict) -> str:
    """report/results.md: the Table 1 rows, per-class accuracy, the confusion matrix, the curves."""
    p = results.get("student_params") or {}
    teacher = results.get("teacher", {})
    student = results.get("student", {})
    parts = [
        "# DL-KDD results (test split)",
        "",
        format_table(results),
        "",
        f"{results['videos']} test videos, {len(results['classes'])} classes. Top-1/Top-5: one clip, centre "
        f"crop; (multi): {results.get('crops', '?')} crops x every cached clip, probabilities averaged per "
        f"video. Student variant `{p.get('variant', '?')}`.",
        "",
        "## Per-class accuracy",
        "",
        "Top-1 (%) per class, multi-view.",
        "",
        _per_class_table(results),
        "",
        "## Confusion matrix (student, multi-view)",
        "",
        _confusion_table(student.get("confusion", []), results["classes"]),
        "",
        f"![confusion matrix]({CONFUSION_PNG})",
        "",
        "## Training curves",
        "",
        f"![validation top-1 and training loss per epoch]({CURVES_PNG})",
        "",
        "Validation during training (the curves, and `keep = best`) is the validation split, carved from "
        "the train split and never trained on, at view 0 (single clip, centre crop); the tables above are "
        "the test split, read by this stage alone.",
        "",
        "## Notes",
        "",
        f"- **teacher**: {teacher.get('model', '?')} trained and evaluated on enhanced clips (the cache's "
        "low-light enhancer, Zero-DCE by default); at inference it needs the enhancer too.",
        *_teacher_on_original_notes(results),
        f"- **baseline (CE)**: the student architecture ({student.get('model', '?')}) trained on original "
        "clips with cross-entropy only (alpha = 0), same seed, views and schedule as the student.",
        f"- **DL-KDD**: the student trained on original clips with loss (1 - alpha) CE + alpha T^2 KL "
        f"against the teacher's cached soft labels (alpha = {p.get('alpha')}, T = {p.get('temperature')}); "
        "it runs on original video alone, with no enhancement cost.",
        "- GFLOPs/clip count 2 x multiply-adds of one network input; the enhancer's cost is not included.",
        "",
    ]
    return "\n".join(parts)


# ----------------------------------------------------------------------------------- plots

def save_figure(fig, path: Path) -> None:
    """A matplotlib Figure as a PNG, written atomically."""
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")


def plot_curves(curves: dict[str, list[dict]], path: Path) -> None:
    """Validation top-1 and training loss per epoch, one line per trained model."""
    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    for name, rows in curves.items():
        if not rows:
            continue
        epochs = [r["epoch"] for r in rows]
        ax1.plot(epochs, [r.get("val_top1") for r in rows], marker="o", label=name)
        ax2.plot(epochs, [r.get("train_loss") for r in rows], marker="o", label=name)
    ax1.set(xlabel="epoch", ylabel="val top-1 (%)", title="validation top-1 (view 0)")
    ax2.set(xlabel="epoch", ylabel="train loss", title="training loss")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    save_figure(fig, path)


def plot_confusion(confusion: np.ndarray, classes: list[str], path: Path, title: str) -> None:
    K = len(classes)
    side = max(4.0, 0.5 * K + 2)
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    ax.imshow(confusion, cmap="Blues", vmin=0)
    ax.set_xticks(range(K), classes, rotation=45, ha="right")
    ax.set_yticks(range(K), classes)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    top = confusion.max() if confusion.size else 0
    for i in range(K):
        for j in range(K):
            ax.text(j, i, str(int(confusion[i, j])), ha="center", va="center",
                    color="white" if top and confusion[i, j] > top / 2 else "black", fontsize=8)
    save_figure(fig, path)
