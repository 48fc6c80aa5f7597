"""`dlkdd study --seeds 0,1,2,3,4`: the only source of accuracy claims.

Against one cache (enhancer, clips and, unless `--teacher-seeds`, the teacher and its
soft labels shared), each seed of each arm (`arms.py`) trains a baseline and a distilled
student, each in a folder of its own, so a rerun retrains nothing fresh and a new seed
trains only that seed. An arm that changes the teacher trains a teacher per seed too
(`arms.arm_scope`). Every model is scored on the test split with `evaluate`'s
multi-view protocol, and `report.py` writes `report/study.{json,md,png}`.

The per-seed work, `run_seed`, takes and returns plain data so `--jobs N` can run seeds
in separate processes: each seed writes only its own folders.

`--split val` scores the same models on the validation split instead (the videos carved
from the train split that no model trains on) and writes `report/study-val.*`: the study
to tune with (alpha, temperature, epochs, ...); the test study then reports the choice.
"""
from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import torch
from rich.console import Console

from ...errors import UserError
from ..config import Config
from ..datasets.shards import ClipDataset
from ..engine import atomic
from ..engine.fingerprint import code_digests
from ..engine.graph import Graph
from ..engine.lock import OutputLocks
from ..engine.run import execute
from ..engine.stage import section_keys
from ..names import CLIP_INDEX, MODEL
from ..stages.evaluate import evaluate_model, test_split
from ..stages.table import TABLE_FILE, pipeline_graph
from ..training.checkpoints import load_checkpoint, load_trained
from ..training.ensemble import load_teacher
from .arms import ARMS, Arm, arm_scope, seed_config, stages_for
from .report import MODELS, SPLIT_TEXT, write_report

SPLITS = ("test", "val")  # what a study scores on: test reports, val tunes (report/study-val.*)


class StudyError(UserError):
    """A bad --seeds value or study setting (one line)."""


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

    job: cfg (Config), cache, device, seed, arm (Arm), scope (arms.SCOPES), quiet, threads (0 = leave).
    Returns {"arm", "seed", "top1": {model: %}, "hits": {model: [0/1 per test video]},
             "gap": {model: train - validation top-1 at the kept epoch}, "videos": [...]}.
    """
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    cfg = seed_config(job["cfg"], job["arm"], job["seed"], job["scope"])
    graph = pipeline_graph(cfg, Path(job["cache"]),
                           stages=stages_for(job["cfg"], job["arm"], job["seed"], job["scope"]))
    con = Console(stderr=True, quiet=job.get("quiet", False))
    with OutputLocks(job["cache"]) as locks:  # shared on the common upstream, exclusive on this seed's
        for target in ("baseline", "student"):
            execute(graph, target, job["device"], con, locks=locks)
    return score_seed(graph, job["arm"].name, job["seed"], job["device"], con, job.get("split", "test"),
                      job["scope"])


def _fresh_scores(path: Path, key: dict) -> dict | None:
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return saved if saved.get("key") == key else None


def score_seed(graph: Graph, arm: str, seed: int, device: str, console, split_name: str = "test",
               scope: str = "student") -> dict:
    """Multi-view top-1 on `split_name` (test or val) of the seed's teacher, baseline and student
    (cached per model digest)."""
    key = {"models": {m: (graph.record(m) or {}).get("outputs_digest") for m in MODELS},
           "evaluate": {k: graph.cfg.get(k) for k in section_keys(graph.cfg, "evaluate") if k != "evaluate.batch_size"},
           "code": code_digests("dlkdd.pipeline.study.runner:score_seed", neutral=(TABLE_FILE,))}
    scores_dir = "study" + ("-chain" if scope == "chain" else "") + ("" if split_name == "test" else f"-{split_name}")
    path = graph.cache / scores_dir / arm / f"seed{seed}-{graph.out_dir('teacher').name}.json"
    saved = _fresh_scores(path, key)
    if saved is not None:
        console.print(f"  {arm} seed {seed}: scores fresh")
        return saved["result"]
    index = graph.out_dir("enhance") / CLIP_INDEX
    split = test_split(index, split_name)
    result = {"arm": arm, "seed": seed, "top1": {}, "hits": {}, "gap": {}, "videos": split.videos}
    for model in MODELS:
        top1, hits, gap = _score_model(graph, model, index, split, device, split_name)
        result["top1"][model], result["hits"][model], result["gap"][model] = top1, hits, gap
    _print_scores(console, result, split_name)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, {"key": key, "result": result})
    return result


def _score_model(graph: Graph, model_stage: str, index: Path, split, device: str, split_name: str = "test"):
    cfg, folder = graph.cfg, graph.out_dir(model_stage)
    model, meta = (load_teacher if model_stage == "teacher" else load_trained)(folder, device)  # ensemble: mean logits
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


def _print_scores(console, result: dict, split_name: str) -> None:
    console.print(f"  {result['arm']} seed {result['seed']}: {SPLIT_TEXT[split_name]} top-1 (multi-view) "
                  + ", ".join(f"{m} {result['top1'][m]:.1f}%" for m in MODELS))


# ----------------------------------------------------------------------------- the study

def shared_upstream(cfg: Config, arm: Arm, seed: int, cache: Path, device: str, console,
                    scope: str, wait: float = 0.0) -> None:
    """Bring what every seed of an arm shares up to date once, before seeds (maybe in parallel) read it
    (nothing under scope chain: each seed draws its whole chain; the clips only at scope teacher, the
    study's or the arm's own)."""
    scope = arm_scope(cfg, arm, scope)
    if scope == "chain":
        return
    graph = pipeline_graph(seed_config(cfg, arm, seed, scope), cache, stages=stages_for(cfg, arm, seed, scope))
    with OutputLocks(cache, wait=wait) as locks:
        execute(graph, "enhance" if scope == "teacher" else "soft-labels", device, console, locks=locks)


def run_study(cfg: Config, cache: Path, seeds: list[int], device: str, console, scope: str = "student",
              jobs: int = 1, arms: tuple[Arm, ...] = ARMS, command: str = "dlkdd study",
              wait: float = 0.0, split: str = "test") -> dict:
    """Train what is stale, score every seed on `split`, write report/study.{json,md,png} (test) or
    report/study-val.{json,md,png} (val), holding the report's lock; returns study.json's content."""
    if jobs < 1:
        raise StudyError(f"--jobs {jobs}: must be >= 1")
    if split not in SPLITS:
        raise StudyError(f"--split {split!r}: expected one of {', '.join(SPLITS)}")
    if split == "val" and cfg.data.val_fraction <= 0 and not cfg.data.val_list:
        raise StudyError("--split val: this config has no validation split "
                         "(data.val_fraction is 0 and data.val_list is empty)")
    cache = Path(cache)
    with OutputLocks(cache, wait=wait) as locks:
        locks.exclusive("report")  # the study's report files; each seed locks its own outputs
        for arm in arms:
            shared_upstream(cfg, arm, seeds[0], cache, device, console, scope, wait)
        tasks = [{"cfg": cfg, "cache": str(cache), "device": device, "seed": s, "arm": arm,
                  "scope": scope, "quiet": jobs > 1, "split": split,
                  "threads": max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0}
                 for arm in arms for s in seeds]
        results = _run_seeds(tasks, jobs, console, split)
        return write_report(cache / "report", results, arms, command, split, scope,
                            {a.name: arm_scope(cfg, a, scope) for a in arms})


def _run_seeds(tasks: list[dict], jobs: int, console, split: str) -> list[dict]:
    """Every task's result, in order: here one after another, or in `jobs` spawned processes."""
    if jobs == 1:
        return [run_seed(t) for t in tasks]
    console.print(f"  training {len(tasks)} seed(s) in {jobs} processes")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(run_seed, tasks))
    for r in results:
        _print_scores(console, r, split)
    return results
