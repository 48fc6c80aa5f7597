"""A study's report from its per-seed scores: `report/study.json` (shape below), `study.md`
(mean +- sd, the paired difference's intervals, the train-minus-validation gap), `study.png`, and
with more than one arm `ablation.json`, its table and its forest plot `ablation.png` (`-val` twins
for `--split val`, `-chain` for a whole-chain study).

    {"seeds": [...], "rows": [{"seed": s, "teacher": t, "baseline": b, "student": d}, ...],
     "difference": {"mean": m, "ci95": [lo, hi]},              # paired t-interval over seeds
     "difference_bootstrap2": {"mean", "ci95", "p_le_0", "resamples", "seeds", "videos"},  # the headline
     "difference_bootstrap": {... "videos"},                     # test videos only, given these seeds
     "scope": "student" | "teacher" | "chain",
     "teacher_margin": {...}}                                    # when the teacher is drawn per seed

The headline interval is the two-level bootstrap (`stats.two_level_bootstrap`: seeds, then the
test videos within each seed), which counts both the seed-to-seed variation and which videos the
split holds; the t-interval over seeds and the video bootstrap (conditional on the seeds) stand
beside it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..engine import atomic
from ..stages.results_page import save_figure
from .arms import ARM_TEXT, Arm
from .stats import mean_sd, paired_bootstrap, paired_difference, pearson, two_level_bootstrap

MODELS = ("teacher", "baseline", "student")
STUDY_JSON, STUDY_MD, STUDY_PNG, ABLATION_JSON, ABLATION_PNG = (
    "study.json", "study.md", "study.png", "ablation.json", "ablation.png")
DUAL_LIGHT = ("dlkdd", "teacher-original")  # the dual-light effect: the first arm minus the second
SPLIT_TEXT = {"test": "test", "val": "validation"}


SCOPE_TEXT = {"student": "the student and the baseline are reseeded; everything upstream is one draw",
              "teacher": "the teacher, its soft labels, the student and the baseline are reseeded; pretraining, "
                         "the enhancer and the views are one draw",
              "chain": "the whole chain is reseeded: pretraining, the enhancer fit, the views, the teacher, "
                       "its soft labels, the student and the baseline"}


def report_names(split: str, scope: str = "student") -> tuple[str, str, str, str, str]:
    """study.json, study.md, study.png, ablation.json, ablation.png (test), their -val twins, and
    -chain before either for a whole-chain study (study-chain.json, study-chain-val.json, ...)."""
    suffix = ("-chain" if scope == "chain" else "") + ("" if split == "test" else f"-{split}")
    return tuple(n.replace(".", f"{suffix}.", 1)
                 for n in (STUDY_JSON, STUDY_MD, STUDY_PNG, ABLATION_JSON, ABLATION_PNG))


def write_report(out: Path, results: list[dict], arms: tuple[Arm, ...], command: str, split: str,
                 scope: str = "student", arm_scopes: dict[str, str] | None = None) -> dict:
    """Write the report files of `results` (every arm's seeds) into `out`; study.json's content.

    arm_scopes: the scope each arm ran at (`arms.arm_scope`; the study's `scope` for arms not in it)."""
    scopes = {a.name: (arm_scopes or {}).get(a.name, scope) for a in arms}
    first = [r for r in results if r["arm"] == arms[0].name]
    study = {**summarize_study(first), "scope": scope}
    if scope != "student":
        study["teacher_margin"] = teacher_margin(study["rows"])
    study_json, study_md, study_png, ablation_json, ablation_png = report_names(split, scope)
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / study_json, study)
    parts = [study_markdown(study, first, command, split, scope)]
    margins = {arms[0].name: study["teacher_margin"]} if scope != "student" else {}
    if len(arms) > 1:
        ablation = summarize_arms(results, [a.name for a in arms], scopes)
        atomic.write_json(out / ablation_json, ablation)
        parts.append(ablation_markdown(ablation, arms, split, ablation_png))
        plot_forest(ablation, out / ablation_png, split)
        margins = {row["arm"]: row["teacher_margin"] for row in ablation["arms"] if "teacher_margin" in row}
    parts.append(margin_markdown(margins))
    atomic.write_bytes(out / study_md, "\n".join(p for p in parts if p).encode())
    plot_study(study, out / study_png, split)
    return study


def _rounded(boot: dict) -> dict:
    return {**boot, "mean": round(boot["mean"], 4), "ci95": [round(c, 4) for c in boot["ci95"]]}


def _hits(results: list[dict], model: str) -> np.ndarray:
    """(seeds, videos) 0/1 of `model`, the seeds in `results`' order."""
    return np.array([r["hits"][model] for r in results])


def summarize_study(results: list[dict]) -> dict:
    """study.json: seeds, per-seed rows and the paired difference (of the first arm): its t-interval
    over seeds, the two-level bootstrap (seeds, then videos) and the video bootstrap given the seeds."""
    results = sorted(results, key=lambda r: r["seed"])
    rows = [{"seed": r["seed"], **{m: round(r["top1"][m], 4) for m in MODELS}} for r in results]
    base, student = _hits(results, "baseline"), _hits(results, "student")
    return {"seeds": [r["seed"] for r in rows], "rows": rows,
            "difference": paired_difference([r["baseline"] for r in rows], [r["student"] for r in rows]),
            "difference_bootstrap2": _rounded(two_level_bootstrap(base, student)),
            "difference_bootstrap": _rounded(paired_bootstrap(base, student))}


def teacher_margin(rows: list[dict]) -> dict:
    """Per seed the teacher's margin over the baseline and the student's gain over it, and their
    Pearson correlation across seeds (None under 3 seeds or with a constant series)."""
    margin = [round(r["teacher"] - r["baseline"], 4) for r in rows]
    gain = [round(r["student"] - r["baseline"], 4) for r in rows]
    r = pearson(margin, gain)
    return {"seeds": [row["seed"] for row in rows], "teacher_minus_baseline": margin,
            "student_minus_baseline": gain, "pearson_r": None if r is None else round(r, 4), "n": len(rows)}


def summarize_arms(results: list[dict], arms: list[str], scopes: dict[str, str] | None = None) -> dict:
    """ablation.json: per arm, mean +- sd of each model and the student's paired differences (by
    seed) against the arm's own baseline and against the first arm's (DL-KDD) student, each with its
    t-interval and its two-level bootstrap; the scope it ran at and whether its teacher was drawn per
    seed (then the teacher's margin against the student's gain); and, when the teacher-original arm
    ran, the dual-light effect (DL-KDD student minus teacher-original student)."""
    scopes = scopes or {}
    by = {(r["arm"], r["seed"]): r for r in results}
    seeds = sorted({r["seed"] for r in results})
    dlkdd = [by[(arms[0], s)]["top1"]["student"] for s in seeds]
    dlkdd_hits = _hits([by[(arms[0], s)] for s in seeds], "student")
    out = {"seeds": seeds, "arms": []}
    for arm in arms:
        top = {m: [by[(arm, s)]["top1"][m] for s in seeds] for m in MODELS}
        hits = {m: _hits([by[(arm, s)] for s in seeds], m) for m in ("baseline", "student")}
        scope = scopes.get(arm, "student")
        rows = [{"seed": s, **{m: round(top[m][k], 4) for m in MODELS}} for k, s in enumerate(seeds)]
        row = {"arm": arm, **{m: dict(zip(("mean", "sd"), map(lambda v: round(v, 4), mean_sd(top[m]))))
                              for m in MODELS},
               "student_vs_baseline": paired_difference(top["baseline"], top["student"]),
               "student_vs_dlkdd_student": paired_difference(dlkdd, top["student"]),
               "student_vs_baseline_bootstrap2": _rounded(two_level_bootstrap(hits["baseline"], hits["student"])),
               "student_vs_dlkdd_student_bootstrap2": _rounded(two_level_bootstrap(dlkdd_hits, hits["student"])),
               "scope": scope, "teacher_per_seed": scope != "student", "rows": rows}
        if scope != "student":
            row["teacher_margin"] = teacher_margin(rows)
        out["arms"].append(row)
    if set(DUAL_LIGHT) <= set(arms) and arms[0] == DUAL_LIGHT[0]:
        out["dual_light_effect"] = dual_light_effect(by, seeds, scopes)
    return out


def dual_light_effect(by: dict, seeds: list[int], scopes: dict[str, str]) -> dict:
    """The student with the enhanced-input teacher (the DL-KDD arm) minus the student with the
    original-input teacher (arm teacher-original), paired by seed: t-interval and two-level bootstrap."""
    enhanced, original = ([by[(arm, s)] for s in seeds] for arm in DUAL_LIGHT)
    diff = paired_difference([r["top1"]["student"] for r in original], [r["top1"]["student"] for r in enhanced])
    return {**diff, "bootstrap2": _rounded(two_level_bootstrap(_hits(original, "student"), _hits(enhanced, "student"))),
            "minuend": DUAL_LIGHT[0], "subtrahend": DUAL_LIGHT[1],
            "teacher_per_seed": {arm: scopes.get(arm, "student") != "student" for arm in DUAL_LIGHT}}


def _interval(lo: float | None, hi: float | None) -> str:
    return f"[{lo:+.2f}, {hi:+.2f}]" if lo is not None else "(needs >= 2 seeds)"


def study_markdown(study: dict, results: list[dict], command: str, split: str = "test",
                   scope: str = "student") -> str:
    """study.md: the headline two-level bootstrap, the per-seed table with mean +- sd, the paired
    difference's t-interval and video bootstrap, and the train-minus-validation gaps."""
    results = sorted(results, key=lambda r: r["seed"])
    rows = study["rows"]
    word = SPLIT_TEXT[split]
    lines = [f"# Study: {len(rows)} seed(s), {word} top-1 (multi-view, %)", "",
             f"Command: `{command}`", "", f"Per seed, {SCOPE_TEXT[scope]}.", ""]
    if split != "test":
        lines += [f"Scored on the {word} split (videos carved from the train split, trained on by no model): "
                  "for choosing settings. Report the chosen setting with a study on the test split.", ""]
    lines += _headline_lines(study["difference_bootstrap2"], word)
    lines += ["| seed | teacher | baseline | DL-KDD student | student - baseline |",
              "| ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['teacher']:.2f} | {r['baseline']:.2f} | {r['student']:.2f} | "
                     f"{r['student'] - r['baseline']:+.2f} |")
    stats = {m: mean_sd([r[m] for r in rows]) for m in MODELS}
    lines.append("| mean +- sd | " + " | ".join(f"{stats[m][0]:.2f} +- {stats[m][1]:.2f}" for m in MODELS)
                 + f" | {study['difference']['mean']:+.2f} |")
    lines += ["", f"**Paired difference (student - baseline, by seed)**: {study['difference']['mean']:+.2f} "
              f"points, 95 % t-interval over {len(rows)} seeds {_interval(*study['difference']['ci95'])}."]
    return "\n".join(lines + _bootstrap_lines(study["difference_bootstrap"], word) + _gap_lines(results))


def _headline_lines(boot: dict, word: str) -> list[str]:
    lo, hi = boot["ci95"]
    one = " With one seed the seed-to-seed variation is not measured." if boot["seeds"] < 2 else ""
    return [f"**Student - baseline: {boot['mean']:+.2f} points, 95 % two-level bootstrap interval "
            f"[{lo:+.2f}, {hi:+.2f}]** ({boot['resamples']} resamples: the {boot['seeds']} seed(s) drawn with "
            f"replacement, then the {boot['videos']} {word} videos with replacement within each drawn seed, the "
            f"same videos for both models; share of resamples with difference <= 0: {boot['p_le_0']:.3f}). "
            f"It counts both the seed-to-seed variation and which videos the {word} split holds.{one}", ""]


def _bootstrap_lines(boot: dict, word: str) -> list[str]:
    return ["", f"**Paired bootstrap over the {boot['videos']} {word} videos**, conditional on these seeds "
            f"({boot['resamples']} resamples of the videos, the same videos for both models and every seed; "
            f"it leaves the seed-to-seed variation out): mean difference "
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


def ablation_markdown(ablation: dict, arms: tuple[Arm, ...], split: str = "test",
                      forest_png: str = ABLATION_PNG) -> str:
    """The ablation table appended to study.md: one row per arm, differences paired by seed; which
    arms drew a teacher per seed; the dual-light effect; the forest plot."""
    def ci(d: dict) -> str:
        lo, hi = d["ci95"]
        return f"{d['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]" if lo is not None else f"{d['mean']:+.2f}"
    word = SPLIT_TEXT[split]
    lines = ["## Ablation: where the gain comes from", "",
             f"Same seeds ({', '.join(map(str, ablation['seeds']))}) and {word} videos for every row; "
             f"{word} top-1 "
             "(multi-view, %) mean +- sd over seeds; differences are paired by seed with their 95 % "
             "t-interval (the forest plot below shows their two-level bootstrap intervals).", "",
             "| arm | overrides | teacher per seed | teacher | baseline | student | student - baseline "
             "| student - DL-KDD student |",
             "| --- | --- | :---: | ---: | ---: | ---: | ---: | ---: |"]
    overrides = {a.name: " ".join(a.overrides) or "(config as given)" for a in arms}
    for row in ablation["arms"]:
        a = row["arm"]
        cells = [f"{row[m]['mean']:.2f} +- {row[m]['sd']:.2f}" for m in MODELS]
        vs_d = "-" if a == ablation["arms"][0]["arm"] else ci(row["student_vs_dlkdd_student"])
        lines.append(f"| {ARM_TEXT.get(a, a)} | `{overrides[a]}` | {'yes' if row.get('teacher_per_seed') else 'no'} | "
                     + " | ".join(cells) + f" | {ci(row['student_vs_baseline'])} | {vs_d} |")
    per_seed = [r["arm"] for r in ablation["arms"] if r.get("teacher_per_seed")]
    base = ablation["arms"][0]
    lines.append("")
    if per_seed:
        text = (f"Run with a teacher (and its soft labels) per seed: {', '.join(per_seed)}"
                + (" (every arm)." if len(per_seed) == len(ablation["arms"]) else
                   ": arms that change the teacher draw it per seed, so their intervals count its variation."))
        if not base.get("teacher_per_seed"):
            text += (" The DL-KDD arm's teacher is one draw shared by its seeds (the study's scope), so "
                     "'student - DL-KDD student' of those arms sets a per-seed teacher against one teacher "
                     "(`--teacher-seeds` draws every arm's teacher per seed).")
        lines += [text, ""]
    else:
        lines += ["Every arm shares one teacher draw across its seeds.", ""]
    effect = ablation.get("dual_light_effect")
    if effect is not None:
        boot = effect["bootstrap2"]
        lines += [f"**Dual-light effect (student with the enhanced-input teacher - student with the original-input "
                  f"teacher, paired by seed): {effect['mean']:+.2f} points, 95 % t-interval "
                  f"{_interval(*effect['ci95'])}, two-level bootstrap [{boot['ci95'][0]:+.2f}, {boot['ci95'][1]:+.2f}]"
                  f"** (share of resamples <= 0: {boot['p_le_0']:.3f}; `dual_light_effect` in ablation.json).", ""]
    lines += [f"![Forest plot: per arm, student - baseline and student - DL-KDD student, with their 95 % two-level "
              f"bootstrap intervals]({forest_png})", ""]
    return "\n".join(lines)


def margin_markdown(margins: dict[str, dict]) -> str:
    """The teacher's margin over the baseline against the student's gain, per arm whose teacher is
    drawn per seed ("" when there is none)."""
    if not margins:
        return ""
    lines = ["## Gain against the teacher's margin", "",
             "For each arm whose teacher is drawn per seed: per seed, the teacher's margin over the baseline "
             "(teacher - baseline) and the student's gain (student - baseline), in points, and their Pearson "
             "correlation across seeds. With this few seeds it is indicative only: no test is made.", "",
             "| arm | per seed: teacher - baseline / student - baseline | Pearson r |", "| --- | --- | ---: |"]
    for arm, m in margins.items():
        pairs = ", ".join(f"{s}: {t:+.2f} / {g:+.2f}" for s, t, g in
                          zip(m["seeds"], m["teacher_minus_baseline"], m["student_minus_baseline"]))
        if m["pearson_r"] is not None:
            r = f"{m['pearson_r']:+.2f} (n = {m['n']}, indicative)"
        else:
            r = "needs >= 3 seeds" if m["n"] < 3 else "undefined (a constant series)"
        lines.append(f"| {ARM_TEXT.get(arm, arm)} | {pairs} | {r} |")
    return "\n".join(lines + [""])


def plot_forest(ablation: dict, path: Path, split: str = "test") -> None:
    """Per arm (top to bottom), student - baseline and student - DL-KDD student: the mean and the
    95 % two-level bootstrap interval, a vertical line at 0."""
    rows = ablation["arms"]
    labels = [ARM_TEXT.get(r["arm"], r["arm"]) + (" *" if r.get("teacher_per_seed") else "") for r in rows]
    fig = Figure(figsize=(10, 1.2 + 0.45 * len(rows)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    panels = (("student_vs_baseline_bootstrap2", "student - baseline"),
              ("student_vs_dlkdd_student_bootstrap2", "student - DL-KDD student"))
    y = np.arange(len(rows))[::-1]
    for ax, (key, title) in zip(axes, panels):
        for k, row in enumerate(rows):
            if key.startswith("student_vs_dlkdd") and k == 0:
                continue  # the DL-KDD arm against itself
            boot = row[key]
            lo, hi = boot["ci95"]
            ax.plot([lo, hi], [y[k], y[k]], color="black", lw=1.5)
            ax.plot([boot["mean"]], [y[k]], "o", color="tab:blue")
        ax.axvline(0.0, color="0.4", lw=0.8, ls="--")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(f"{SPLIT_TEXT[split]} top-1 difference (points)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, labels)
    axes[0].set_ylim(-0.6, len(rows) - 0.4)
    fig.suptitle(f"{len(ablation['seeds'])} seeds; 95 % two-level bootstrap intervals (seeds, then videos)"
                 + ("; * teacher per seed" if any(r.get("teacher_per_seed") for r in rows) else ""), fontsize=10)
    save_figure(fig, path)


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
