"""`dlkdd study --seeds 0,1,2,3,4`: the only source of accuracy claims.

Against one cache (enhancer, clips and, unless `--teacher-seeds`, the teacher and its
soft labels shared), each seed trains a baseline and a distilled student, each in a
folder of its own (`baseline/seed<N>-<hash>`, `student/a..-T..-<hash>`; with
`--teacher-seeds` also `teacher/seed<N>-<hash>` and its `soft-labels/teacher-seed<N>`),
so a rerun retrains nothing fresh and a new seed trains only that seed. Every model is
scored on the test split with `evaluate`'s multi-view protocol, and the study writes
`report/study.json` (shape below), `report/study.md` and `report/study.png`:

    {"seeds": [...], "rows": [{"seed": s, "teacher": t, "baseline": b, "student": d}, ...],
     "difference": {"mean": m, "ci95": [lo, hi]}}

(test top-1 in percent, multi-view; difference = student - baseline paired by seed, a
t-interval over seeds). The markdown adds mean +- sd per model, each model's
train-minus-validation accuracy gap at its kept epoch, and a paired bootstrap over
test videos.

A study is a list of named arms, each a set of config overrides, run per seed
(`ARMS`; issue 11's `--ablate` adds rows such as a teacher from scratch or on original
input). The per-seed work, `run_seed`, takes and returns plain data so `--jobs N` can
run seeds in separate processes: each seed writes only its own folders.

`--split val` scores the same models on the validation split instead (the videos carved
from the train split that no model trains on) and writes `report/study-val.*`: the study
to tune with (alpha, temperature, epochs, ...); the test study then reports the choice.
"""
from __future__ import annotations

import copy
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from ...errors import UserError
from ..config import Config, apply_overrides, validate
from ..engine import atomic
from ..engine.graph import Graph, Stage, code_digests, execute, params_hash, section_keys, upstream_closure
from ..engine.lock import OutputLocks
from ..names import CLIP_INDEX, MODEL
from ..published import PRETRAIN
from ..stages.table import STAGES

MODELS = ("teacher", "baseline", "student")
STUDY_JSON, STUDY_MD, STUDY_PNG, ABLATION_JSON = "study.json", "study.md", "study.png", "ablation.json"
SPLITS = ("test", "val")  # what a study scores on: test reports, val tunes (report/study-val.*)
SPLIT_TEXT = {"test": "test", "val": "validation"}


def report_names(split: str) -> tuple[str, str, str, str]:
    """study.json, study.md, study.png, ablation.json (test) or their -val twins."""
    names = (STUDY_JSON, STUDY_MD, STUDY_PNG, ABLATION_JSON)
    if split == "test":
        return names
    return tuple(n.replace(".", f"-{split}.", 1) for n in names)
BOOTSTRAP = 2000  # resamples of the test videos
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,  # df 1..10
        2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,  # df 11..20
        2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # df 21..30


class StudyError(UserError):
    """A bad --seeds value or study setting (one line)."""


@dataclass(frozen=True)
class Arm:
    """One row group of a study: config overrides (`section.key=value`) applied on top of the config."""
    name: str
    overrides: tuple[str, ...] = ()


ARMS = (Arm("dlkdd"),)  # the paper's comparison: DL-KDD student vs baseline, the config as given


def ablation_arms(cfg: Config) -> tuple[Arm, ...]:
    """`--ablate`: the rows that say where a gain comes from, on the same seeds and test videos.

    - from-scratch: teacher and student (so the baseline too) start from random weights instead
      of the configured prior (only when a model starts from one);
    - teacher-original: the teacher learns from, and labels, the original dark clips: the
      dual-light question (does the enhanced view add anything beyond a pretrained teacher?);
    - teacher-gamma: the teacher's input enhanced by gamma correction instead of the configured
      enhancer (when that is not gamma already);
    - teacher-small: a teacher of the student's architecture instead of the larger one.
    """
    from ..training.weights import uses_pretrain

    def from_prior(section: str) -> bool:
        source = getattr(cfg, section).pretrained
        return uses_pretrain(cfg, section) or source not in ("", PRETRAIN)
    arms = [ARMS[0]]
    if from_prior("teacher") or from_prior("student"):
        arms.append(Arm("from-scratch", ("teacher.pretrained=", "student.pretrained=")))
    if cfg.teacher.input != "original":
        arms.append(Arm("teacher-original", ("teacher.input=original",)))
    if cfg.enhancer.kind != "gamma" and cfg.teacher.input != "original":
        arms.append(Arm("teacher-gamma", ("enhancer.kind=gamma",)))
    if cfg.teacher.model != cfg.student.model:
        arms.append(Arm("teacher-small", (f"teacher.model={cfg.student.model}",)))
    return tuple(arms)


# ----------------------------------------------------------------------------- where seeds live

def _baseline_params(cfg: Config) -> list[str]:
    return STAGES["baseline"].keys(cfg)


def _closure_params(stages: dict[str, Stage], name: str, cfg: Config) -> dict:
    """The config values `name` and everything upstream of it read."""
    return {s: {k: cfg.get(k) for k in stages[s].keys(cfg)} for s in upstream_closure(name, stages, cfg)}


def arm_stages(stages: dict[str, Stage], base: Config, arm_cfg: Config, arm: Arm) -> dict[str, Stage]:
    """`stages` with the outputs an arm changes moved to `ablation/<arm>/...`: a stage whose own or
    upstream params differ from the base config's gets its own folder; the others (the clips, and
    the baseline where the student's side is unchanged) stay shared with the base arm."""
    if not arm.overrides:
        return stages
    out = dict(stages)
    for name, stage in stages.items():
        if _closure_params(stages, name, arm_cfg) != _closure_params(stages, name, base):
            out[name] = replace(stage, outputs=lambda c, f=stage.folder: f"ablation/{arm.name}/{f(c)}")
    return out


def stages_for(cfg: Config, arm: Arm, seed: int, vary_teacher: bool) -> dict[str, Stage]:
    """The stage table of one arm of a study (per-seed folders; the arm's own folders)."""
    stages = study_stages(vary_teacher)
    return arm_stages(stages, seed_config(cfg, ARMS[0], seed, vary_teacher),
                      seed_config(cfg, arm, seed, vary_teacher), arm)


def study_stages(vary_teacher: bool) -> dict[str, Stage]:
    """The stage table with per-seed folders: the baseline always, the teacher and its soft labels
    (and so the student) when the teacher's seed varies too. Upstream stages are shared."""
    stages = dict(STAGES)
    stages["baseline"] = replace(STAGES["baseline"], outputs=lambda c: (
        f"baseline/seed{c.student.seed}-{params_hash(c, _baseline_params(c))[:8]}"))
    if vary_teacher:
        teacher_keys = STAGES["teacher"].keys
        stages["teacher"] = replace(STAGES["teacher"], outputs=lambda c: (
            f"teacher/seed{c.teacher.seed}-{params_hash(c, teacher_keys(c))[:8]}"))
        stages["soft-labels"] = replace(STAGES["soft-labels"], outputs=lambda c: (
            f"soft-labels/{stages['teacher'].folder(c).split('/', 1)[1]}"))
        student_out = STAGES["student"].folder
        stages["student"] = replace(STAGES["student"], outputs=lambda c: (
            f"student/teacher-seed{c.teacher.seed}-{student_out(c).split('/', 1)[1]}"))
    return stages


def seed_config(cfg: Config, arm: Arm, seed: int, vary_teacher: bool) -> Config:
    """The arm's config for one seed: student.seed (and teacher.seed with --teacher-seeds) = seed."""
    out = copy.deepcopy(cfg)
    apply_overrides(out, list(arm.overrides))
    out.student.seed = seed
    if vary_teacher:
        out.teacher.seed = seed
    validate(out)
    return out


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" or "0-4" -> sorted distinct seeds."""
    seeds: set[int] = set()
    try:
        for part in (p.strip() for p in str(text).split(",") if p.strip()):
            lo, _, hi = part.partition("-") if part[1:].find("-") >= 0 else (part, "", "")
            lo_i, hi_i = int(lo), int(hi) if hi else int(lo)
            if lo_i < 0 or hi_i < lo_i:
                raise ValueError
            seeds.update(range(lo_i, hi_i + 1))
    except ValueError:
        raise StudyError(f"--seeds {text!r}: expected seeds like 0,1,2,3,4 or 0-4") from None
    if not seeds:
        raise StudyError(f"--seeds {text!r}: no seeds given")
    return sorted(seeds)


# ----------------------------------------------------------------------------- one seed

def run_seed(job: dict) -> dict:
    """Train (if stale) and score one seed of one arm; plain data in and out (a process-pool task).

    job: cfg (Config), cache, device, seed, arm (Arm), vary_teacher, quiet, threads (0 = leave).
    Returns {"arm", "seed", "top1": {model: %}, "hits": {model: [0/1 per test video]},
             "gap": {model: train - validation top-1 at the kept epoch}, "videos": [...]}.
    """
    import torch
    from rich.console import Console
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    cfg = seed_config(job["cfg"], job["arm"], job["seed"], job["vary_teacher"])
    graph = Graph(cfg, Path(job["cache"]),
                  stages=stages_for(job["cfg"], job["arm"], job["seed"], job["vary_teacher"]))
    con = Console(stderr=True, quiet=job.get("quiet", False))
    with OutputLocks(job["cache"]) as locks:  # shared on the common upstream, exclusive on this seed's
        for target in ("baseline", "student"):
            execute(graph, target, job["device"], con, locks=locks)
    return score_seed(graph, job["arm"].name, job["seed"], job["device"], con, job.get("split", "test"))


def _fresh_eval(path: Path, key: dict) -> dict | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if saved.get("key") == key else None


def score_seed(graph: Graph, arm: str, seed: int, device: str, console, split_name: str = "test") -> dict:
    """Multi-view top-1 on `split_name` (test or val) of the seed's teacher, baseline and student
    (cached per model digest)."""
    from ..stages.evaluate import test_split
    key = {"models": {m: (graph.record(m) or {}).get("outputs_digest") for m in MODELS},
           "evaluate": {k: graph.cfg.get(k) for k in section_keys(graph.cfg, "evaluate") if k != "evaluate.batch_size"},
           "code": code_digests("dlkdd.pipeline.study.runner:score_seed")}
    scores_dir = "study" if split_name == "test" else f"study-{split_name}"
    path = graph.cache / scores_dir / arm / f"seed{seed}-{graph.out_dir('teacher').name}.json"
    saved = _fresh_eval(path, key)
    if saved is not None:
        console.print(f"  {arm} seed {seed}: scores fresh")
        return saved["result"]
    index = graph.out_dir("enhance") / CLIP_INDEX
    split = test_split(index, split_name)
    result = {"arm": arm, "seed": seed, "top1": {}, "hits": {}, "gap": {}, "videos": split.videos}
    for model in MODELS:
        top1, hits, gap = _score_model(graph, model, index, split, device, split_name)
        result["top1"][model], result["hits"][model], result["gap"][model] = top1, hits, gap
    console.print(f"  {arm} seed {seed}: {SPLIT_TEXT[split_name]} top-1 (multi-view) " + ", ".join(
        f"{m} {result['top1'][m]:.1f}%" for m in MODELS))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, {"key": key, "result": result})
    return result


def _score_model(graph: Graph, model_stage: str, index: Path, split, device: str, split_name: str = "test"):
    from ..datasets.shards import ClipDataset
    from ..stages.evaluate import evaluate_model
    from ..training.checkpoints import load_trained
    from ..training.loop import load_checkpoint
    cfg, folder = graph.cfg, graph.out_dir(model_stage)
    model, meta = load_trained(folder, device)
    clips = ClipDataset.from_index(index, split_name, meta.get("input", "original"))
    try:
        scores = evaluate_model(model, clips, split, meta.get("crop", cfg.data.crop), cfg.evaluate.crops,
                                cfg.evaluate.batch_size, device, meta.get("normalize"),
                                cfg.evaluate.crop_scale)
    finally:
        clips.close()
    kept = load_checkpoint(folder / MODEL).get("metrics") or {}
    gap = (kept["train_acc"] - kept["val_top1"]) if {"train_acc", "val_top1"} <= set(kept) else None
    return scores["top1_multi"], [int(h) for h in scores["video_hits"]], gap


# ----------------------------------------------------------------------------- statistics

def t_interval(diffs: list[float]) -> tuple[float, list[float | None]]:
    """Mean and 95 % t-interval of paired differences (None bounds with fewer than 2 seeds)."""
    d = np.asarray(diffs, dtype=np.float64)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, [None, None]
    t = T975[len(d) - 2] if len(d) - 1 <= len(T975) else 1.96
    half = t * float(d.std(ddof=1)) / math.sqrt(len(d))
    return mean, [mean - half, mean + half]


def paired_bootstrap(hits_a: np.ndarray, hits_b: np.ndarray, n: int = BOOTSTRAP, seed: int = 0) -> dict:
    """Percentile 95 % interval of mean-over-seeds (b - a) top-1 when the test videos are resampled.

    hits_*: (seeds, videos) 0/1, the same videos in the same order for every seed and model.
    """
    rng = np.random.default_rng(seed)
    V = hits_a.shape[1]
    picks = rng.integers(0, V, size=(n, V))
    diff = 100.0 * (hits_b[:, picks].mean(axis=2) - hits_a[:, picks].mean(axis=2)).mean(axis=0)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return {"mean": 100.0 * float((hits_b - hits_a).mean()), "ci95": [float(lo), float(hi)],
            "p_le_0": float((diff <= 0).mean()), "resamples": n, "videos": V}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def summarize(results: list[dict]) -> dict:
    """study.json: seeds, per-seed rows and the paired difference (of the first arm)."""
    results = sorted(results, key=lambda r: r["seed"])
    rows = [{"seed": r["seed"], **{m: round(r["top1"][m], 4) for m in MODELS}} for r in results]
    mean, ci = t_interval([r["student"] - r["baseline"] for r in rows])
    return {"seeds": [r["seed"] for r in rows], "rows": rows,
            "difference": {"mean": round(mean, 4), "ci95": [None if c is None else round(c, 4) for c in ci]}}


def _paired(a: list[float], b: list[float]) -> dict:
    mean, ci = t_interval([y - x for x, y in zip(a, b)])
    return {"mean": round(mean, 4), "ci95": [None if c is None else round(c, 4) for c in ci]}


def summarize_arms(results: list[dict], arms: list[str]) -> dict:
    """ablation.json: per arm, mean +- sd of each model and the student's paired differences (by
    seed) against the arm's own baseline and against the first arm's (DL-KDD) student."""
    by = {(r["arm"], r["seed"]): r for r in results}
    seeds = sorted({r["seed"] for r in results})
    dlkdd = [by[(arms[0], s)]["top1"]["student"] for s in seeds]
    out = {"seeds": seeds, "arms": []}
    for arm in arms:
        top = {m: [by[(arm, s)]["top1"][m] for s in seeds] for m in MODELS}
        row = {"arm": arm, **{m: dict(zip(("mean", "sd"), map(lambda v: round(v, 4), _mean_sd(top[m]))))
                              for m in MODELS},
               "student_vs_baseline": _paired(top["baseline"], top["student"]),
               "student_vs_dlkdd_student": _paired(dlkdd, top["student"]),
               "rows": [{"seed": s, **{m: round(top[m][k], 4) for m in MODELS}} for k, s in enumerate(seeds)]}
        out["arms"].append(row)
    return out


ARM_TEXT = {"dlkdd": "DL-KDD as configured", "from-scratch": "teacher and student from random weights",
            "teacher-original": "teacher on original (dark) clips", "teacher-gamma": "teacher on gamma-corrected clips",
            "teacher-small": "teacher of the student's architecture"}


def ablation_markdown(ablation: dict, arms: tuple[Arm, ...], split: str = "test") -> str:
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


def _fmt(x, digits: int = 1) -> str:
    return "-" if x is None else f"{x:+.{digits}f}" if digits < 0 else f"{x:.{digits}f}"


def report_markdown(study: dict, results: list[dict], command: str, split: str = "test") -> str:
    results = sorted(results, key=lambda r: r["seed"])
    rows = study["rows"]
    word = SPLIT_TEXT[split]
    lines = [f"# Study: {len(rows)} seed(s), {word} top-1 (multi-view, %)", "",
             f"Command: `{command}`", ""]
    if split != "test":
        lines += [f"Scored on the {word} split (videos carved from the train split, trained on by no model): "
                  "for choosing settings. Report the chosen setting with a study on the test split.", ""]
    lines += [
             "| seed | teacher | baseline | DL-KDD student | student - baseline |",
             "| ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['teacher']:.2f} | {r['baseline']:.2f} | {r['student']:.2f} | "
                     f"{r['student'] - r['baseline']:+.2f} |")
    stats = {m: _mean_sd([r[m] for r in rows]) for m in MODELS}
    lines.append("| mean +- sd | " + " | ".join(f"{stats[m][0]:.2f} +- {stats[m][1]:.2f}" for m in MODELS)
                 + f" | {study['difference']['mean']:+.2f} |")
    lo, hi = study["difference"]["ci95"]
    lines += ["", f"**Paired difference (student - baseline, by seed)**: {study['difference']['mean']:+.2f} "
              f"points, 95 % t-interval over {len(rows)} seeds " +
              (f"[{lo:+.2f}, {hi:+.2f}]" if lo is not None else "(needs >= 2 seeds)") + "."]
    hits = {m: np.array([r["hits"][m] for r in results]) for m in MODELS}
    boot = paired_bootstrap(hits["baseline"], hits["student"])
    lines += ["", f"**Paired bootstrap over the {boot['videos']} {word} videos** ({boot['resamples']} "
              f"resamples, the same videos for both models and every seed): mean difference "
              f"{boot['mean']:+.2f} points, 95 % interval [{boot['ci95'][0]:+.2f}, {boot['ci95'][1]:+.2f}], "
              f"share of resamples with difference <= 0: {boot['p_le_0']:.3f}. "
              f"One {word} video is {100.0 / max(1, boot['videos']):.2f} points."]
    lines += ["", "## Train-minus-validation gap", "",
              "Training top-1 (on the drawn training views, during the epoch) minus validation top-1 "
              "(centre view), at each model's kept epoch; large gaps mean memorisation.", "",
              "| model | gap mean +- sd (points) | per seed |", "| --- | ---: | --- |"]
    for m in MODELS:
        gaps = [r["gap"][m] for r in results if r["gap"][m] is not None]
        if gaps:
            g_mean, g_sd = _mean_sd(gaps)
            lines.append(f"| {m} | {g_mean:.1f} +- {g_sd:.1f} | " + ", ".join(f"{g:.1f}" for g in gaps) + " |")
    lines.append("")
    return "\n".join(lines)


def plot_study(study: dict, path: Path, split: str = "test") -> None:
    """Each seed's test top-1 per model (dots, lines pair a seed), the mean with +- 1 sd."""
    from matplotlib.figure import Figure

    from ..stages.evaluate import _save
    rows = study["rows"]
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for r in rows:
        ax.plot(range(len(MODELS)), [r[m] for m in MODELS], color="0.8", lw=0.8, zorder=1)
    for k, m in enumerate(MODELS):
        vals = [r[m] for r in rows]
        ax.scatter([k] * len(vals), vals, s=18, zorder=2)
        mean, sd = _mean_sd(vals)
        ax.errorbar([k + 0.15], [mean], yerr=[sd], fmt="o", color="black", capsize=4, zorder=3)
    ax.set_xticks(range(len(MODELS)), ["teacher", "baseline", "DL-KDD student"])
    ax.set_ylabel(f"{SPLIT_TEXT[split]} top-1, multi-view (%)")
    d = study["difference"]
    ci = d["ci95"]
    ax.set_title(f"{len(rows)} seeds; student - baseline {d['mean']:+.1f}"
                 + (f" [{ci[0]:+.1f}, {ci[1]:+.1f}]" if ci[0] is not None else ""), fontsize=10)
    ax.grid(alpha=0.3)
    _save(fig, path)


# ----------------------------------------------------------------------------- the study

def shared_upstream(cfg: Config, arm: Arm, seed: int, cache: Path, device: str, console,
                    vary_teacher: bool, wait: float = 0.0) -> None:
    """Bring what every seed of an arm shares up to date once, before seeds (maybe in parallel) read it."""
    graph = Graph(seed_config(cfg, arm, seed, vary_teacher), cache,
                  stages=stages_for(cfg, arm, seed, vary_teacher))
    with OutputLocks(cache, wait=wait) as locks:
        execute(graph, "enhance" if vary_teacher else "soft-labels", device, console, locks=locks)


def run_study(cfg: Config, cache: Path, seeds: list[int], device: str, console, vary_teacher: bool = False,
              jobs: int = 1, arms: tuple[Arm, ...] = ARMS, command: str = "dlkdd study",
              wait: float = 0.0, split: str = "test") -> dict:
    """Train what is stale, score every seed on `split`, write report/study.{json,md,png} (test) or
    report/study-val.{json,md,png} (val); returns study.json's content."""
    if jobs < 1:
        raise StudyError(f"--jobs {jobs}: must be >= 1")
    if split not in SPLITS:
        raise StudyError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    if split == "val" and cfg.data.val_fraction <= 0 and not cfg.data.val_list:
        raise StudyError("--split val: this config has no validation split "
                         "(data.val_fraction is 0 and data.val_list is empty)")
    cache = Path(cache)
    for arm in arms:
        shared_upstream(cfg, arm, seeds[0], cache, device, console, vary_teacher, wait)
    tasks = [{"cfg": cfg, "cache": str(cache), "device": device, "seed": s, "arm": arm,
              "vary_teacher": vary_teacher, "quiet": jobs > 1, "split": split,
              "threads": max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0}
             for arm in arms for s in seeds]
    if jobs == 1:
        results = [run_seed(t) for t in tasks]
    else:
        console.print(f"  training {len(tasks)} seed(s) in {jobs} processes")
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            results = list(pool.map(run_seed, tasks))
        for r in results:
            console.print(f"  {r['arm']} seed {r['seed']}: {SPLIT_TEXT[split]} top-1 (multi-view) " + ", ".join(
                f"{m} {r['top1'][m]:.1f}%" for m in MODELS))
    first = [r for r in results if r["arm"] == arms[0].name]
    study = summarize(first)
    study_json, study_md, study_png, ablation_json = report_names(split)
    out = cache / "report"
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_json(out / study_json, study)
    text = report_markdown(study, first, command, split)
    if len(arms) > 1:
        ablation = summarize_arms(results, [a.name for a in arms])
        atomic.write_json(out / ablation_json, ablation)
        text += ablation_markdown(ablation, arms, split)
    atomic.write_bytes(out / study_md, text.encode())
    plot_study(study, out / study_png, split)
    return study
