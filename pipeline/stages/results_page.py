"""The evaluate stage's report: results.json, results.md (the paper's Table 1 for this cache, per-class
accuracy, the confusion matrix) and the plots of the training curves and the student's confusion.

`evaluate` scores the rows; this module only writes what it was given, and reads no clips.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure  # no pyplot: no global backend state, safe off the main thread
from matplotlib.ticker import MaxNLocator

from ..engine import atomic
from ..names import CONFUSION_PNG, CURVES_PNG, METRICS, RESULTS_JSON, RESULTS_MD
from ..training.history import read_metrics

RESTAT = "teacher_on_original_restat"  # the teacher on original clips, re-standardised as the original stream
ROWS = ("teacher", "teacher_on_original", RESTAT, "baseline", "student")

# what the two teacher-on-original rows standardise with (results.json "inference_statistics")
STATISTICS = {"teacher_on_original": "teacher's", RESTAT: "original stream's"}
COLUMNS = ("Model", "Method", "Training input", "Inference input", "Top-1", "Top-5",
           "Top-1 (multi)", "Top-5 (multi)", "Params (M)", "GFLOPs/clip")


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
