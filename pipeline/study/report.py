"""A study's report from its per-seed scores: `report/study.json` (shape below), `study.md`
(mean +- sd, the paired difference's intervals, the train-minus-validation gap), `study.png`, and
with more than one arm `ablation.json` and its table (`-val` twins for `--split val`).

    {"seeds": [...], "rows": [{"seed": s, "teacher": t, "baseline": b, "student": d}, ...],
     "difference": {"mean": m, "ci95": [lo, hi]}}
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..engine import atomic
from ..stages.evaluate import save_figure
from .arms import ARM_TEXT, Arm
from .stats import mean_sd, paired_bootstrap, paired_difference

MODELS = ("teacher", "baseline", "student")
STUDY_JSON, STUDY_MD, STUDY_PNG, ABLATION_JSON = "study.json", "study.md", "study.png", "ablation.json"
SPLIT_TEXT = {"test": "test", "val": "validation"}


SCOPE_TEXT = {"student": "the student and the baseline are reseeded; everything upstream is one draw",
              "teacher": "the teacher, its soft labels, the student and the baseline are reseeded; pretraining, "
                         "the enhancer and the views are one draw",
              "chain": "the whole chain is reseeded: pretraining, the enhancer fit, the views, the teacher, "
                       "its soft labels, the student and the baseline"}


def report_names(split: str, scope: str = "student") -> tuple[str, str, str, str]:
    """study.json, study.md, study.png, ablation.json (test), their -val twins, and -chain before
    either for a whole-chain study (study-chain.json, study-chain-val.json, ...)."""
    suffix = ("-chain" if scope == "chain" else "") + ("" if split == "test" else f"-{split}")
    return tuple(n.replace(".", f"{suffix}.", 1) for n in (STUDY_JSON, STUDY_MD, STUDY_PNG, ABLATION_JSON))


def write_report(out: Path, results: list[dict], arms: tuple[Arm, ...], command: str, split: str,
                 scope: str = "student") -> dict:
    """Write the report files of `results` (every arm's seeds) into `out`; study.json's content."""
    first = [r for r in results if r["arm"] == arms[0].name]
    study = {**summarize_study(first), "scope": scope}
    study_json, study_md, study_png, ablation_json = report_names(split, scope)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / study_json, study)
    text = study_markdown(study, first, command, split, scope)
    if len(arms) > 1:
        ablation = summarize_arms(results, [a.name for a in arms])
        atomic.write_json(out / ablation_json, ablation)
        text += ablation_markdown(ablation, arms, split)
    atomic.write_bytes(out / study_md, text.encode())
    plot_study(study, out / study_png, split)
    return study


def summarize_study(results: list[dict]) -> dict:
    """study.json: seeds, per-seed rows and the paired difference (of the first arm)."""
    results = sorted(results, key=lambda r: r["seed"])
    rows = [{"seed": r["seed"], **{m: round(r["top1"][m], 4) for m in MODELS}} for r in results]
    return {"seeds": [r["seed"] for r in rows], "rows": rows,
            "difference": paired_difference([r["baseline"] for r in rows], [r["student"] for r in rows])}


def summarize_arms(results: list[dict], arms: list[str]) -> dict:
    """ablation.json: per arm, mean +- sd of each model and the student's paired differences (by
    seed) against the arm's own baseline and against the first arm's (DL-KDD) student."""
    by = {(r["arm"], r["seed"]): r for r in results}
    seeds = sorted({r["seed"] for r in results})
    dlkdd = [by[(arms[0], s)]["top1"]["student"] for s in seeds]
    out = {"seeds": seeds, "arms": []}
    for arm in arms:
        top = {m: [by[(arm, s)]["top1"][m] for s in seeds] for m in MODELS}
        row = {"arm": arm, **{m: dict(zip(("mean", "sd"), map(lambda v: round(v, 4), mean_sd(top[m]))))
                              for m in MODELS},
               "student_vs_baseline": paired_difference(top["baseline"], top["student"]),
               "student_vs_dlkdd_student": paired_difference(dlkdd, top["student"]),
               "rows": [{"seed": s, **{m: round(top[m][k], 4) for m in MODELS}} for k, s in enumerate(seeds)]}
        out["arms"].append(row)
    return out


def study_markdown(study: dict, results: list[dict], command: str, split: str = "test",
                   scope: str = "student") -> str:
    """study.md: the per-seed table with mean +- sd, the paired difference's t-interval and
    bootstrap, and the train-minus-validation gaps."""
    results = sorted(results, key=lambda r: r["seed"])
    rows = study["rows"]
    word = SPLIT_TEXT[split]
    lines = [f"# Study: {len(rows)} seed(s), {word} top-1 (multi-view, %)", "",
             f"Command: `{command}`", "", f"Per seed, {SCOPE_TEXT[scope]}.", ""]
    if split != "test":
        lines += [f"Scored on the {word} split (videos carved from the train split, trained on by no model): "
                  "for choosing settings. Report the chosen setting with a study on the test split.", ""]
    lines += ["| seed | teacher | baseline | DL-KDD student | student - baseline |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['teacher']:.2f} | {r['baseline']:.2f} | {r['student']:.2f} | "
                     f"{r['student'] - r['baseline']:+.2f} |")
    stats = {m: mean_sd([r[m] for r in rows]) for m in MODELS}
    lines.append("| mean +- sd | " + " | ".join(f"{stats[m][0]:.2f} +- {stats[m][1]:.2f}" for m in MODELS)
                 + f" | {study['difference']['mean']:+.2f} |")
    lo, hi = study["difference"]["ci95"]
    lines += ["", f"**Paired difference (student - baseline, by seed)**: {study['difference']['mean']:+.2f} "
              f"points, 95 % t-interval over {len(rows)} seeds " +
              (f"[{lo:+.2f}, {hi:+.2f}]" if lo is not None else "(needs >= 2 seeds)") + "."]
    return "\n".join(lines + _bootstrap_lines(results, word) + _gap_lines(results))


def _bootstrap_lines(results: list[dict], word: str) -> list[str]:
    hits = {m: np.array([r["hits"][m] for r in results]) for m in MODELS}
    boot = paired_bootstrap(hits["baseline"], hits["student"])
    return ["", f"**Paired bootstrap over the {boot['videos']} {word} videos** ({boot['resamples']} "
            f"resamples, the same videos for both models and every seed): mean difference "
            f"{boot['mean']:+.2f} points, 95 % interval [{boot['ci95'][0]:+.2f}, {boot['ci95'][1]:+.2f}], "
            f"share of resamples with difference <= 0: {boot['p_le_0']:.3f}. "
            f"One {word} video is {100.0 / max(1, boot['videos']):.2f} points."]


def _gap_lines(results: list[dict]) -> list[str]:
    lines = ["", "## Train-minus-validation gap", "",
             "Training top-1 (on the drawn training views, during the epoch) minus validation top-1 "
             "(centre view), at each model's kept epoch; large gaps mean memorisation.", "",
             "| model | gap mean +- sd (points) | per seed |", "| --- | ---: | --- |"]
    for m in MODELS:
        gaps = [r["gap"][m] for r in results if r["gap"][m] is not None]
        if gaps:
            g_mean, g_sd = mean_sd(gaps)
            lines.append(f"| {m} | {g_mean:.1f} +- {g_sd:.1f} | " + ", ".join(f"{g:.1f}" for g in gaps) + " |")
    return lines + [""]


def ablation_markdown(ablation: dict, arms: tuple[Arm, ...], split: str = "test") -> str:
    """The ablation table appended to study.md: one row per arm, differences paired by seed."""
    def ci(d: dict) -> str:
        lo, hi = d["ci95"]
        return f"{d['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]" if lo is not None else f"{d['mean']:+.2f}"
    lines = ["## Ablation: where the gain comes from", "",
             f"Same seeds ({', '.join(map(str, ablation['seeds']))}) and {SPLIT_TEXT[split]} videos for every row; "
             f"{SPLIT_TEXT[split]} top-1 "
             "(multi-view, %) mean +- sd over seeds; differences are paired by seed with their 95 % "
             "t-interval.", "",
             "| arm | overrides | teacher | baseline | student | student - baseline | student - DL-KDD student |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    overrides = {a.name: " ".join(a.overrides) or "(config as given)" for a in arms}
    for row in ablation["arms"]:
        a = row["arm"]
        cells = [f"{row[m]['mean']:.2f} +- {row[m]['sd']:.2f}" for m in MODELS]
        vs_d = "-" if a == ablation["arms"][0]["arm"] else ci(row["student_vs_dlkdd_student"])
        lines.append(f"| {ARM_TEXT.get(a, a)} | `{overrides[a]}` | " + " | ".join(cells)
                     + f" | {ci(row['student_vs_baseline'])} | {vs_d} |")
    lines.append("")
    return "\n".join(lines)


def plot_study(study: dict, path: Path, split: str = "test") -> None:
    """Each seed's test top-1 per model (dots, lines pair a seed), the mean with +- 1 sd."""
    rows = study["rows"]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for r in rows:
        ax.plot(range(len(MODELS)), [r[m] for m in MODELS], color="0.8", lw=0.8, zorder=1)
    for k, m in enumerate(MODELS):
        vals = [r[m] for r in rows]
        ax.scatter([k] * len(vals), vals, s=18, zorder=2)
        mean, sd = mean_sd(vals)
        ax.errorbar([k + 0.15], [mean], yerr=[sd], fmt="o", color="black", capsize=4, zorder=3)
    ax.set_xticks(range(len(MODELS)), ["teacher", "baseline", "DL-KDD student"])
    ax.set_ylabel(f"{SPLIT_TEXT[split]} top-1, multi-view (%)")
    d = study["difference"]
    ci = d["ci95"]
    ax.set_title(f"{len(rows)} seeds; student - baseline {d['mean']:+.1f}"
                 + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci[0] is not None else ""), fontsize=10)
    ax.grid(alpha=0.3)
    save_figure(fig, path)
