"""The stages, declared by keyword: what each reads, where it writes, what runs it.

The table (`STAGES`, below the few helpers it names) is the whole graph; the machinery
that fingerprints, records and runs it is in `pipeline.engine`. A stage's code is not listed:
it is derived from the imports of its run function's module (see `fingerprint.code_files`).
To add a stage, add a row: its upstream stages, the config keys it reads, its folder,
its run function ("dlkdd.pipeline.module:function", imported only when it runs).
"""
from __future__ import annotations

import json
from pathlib import Path

from .. import enhancers
from ..config import Config, pretrain_data
from ..datasets.splits import CLASSES_FILE, dataset_root, read_dataset
from ..engine.fingerprint import SOURCE, hash_json
from ..engine.graph import Graph
from ..engine.stage import Stage, section_keys, upstream_closure
from ..published import NAMES, PRETRAIN, source_identity, uses_pretrain
from ..training.digest import content_digest
from ..training.weights import statistics_identity

# This module decides whether a stage runs, never what it writes: never part of a stage's code.
TABLE_FILE = Path(__file__).resolve().relative_to(SOURCE).as_posix()
VIEW_KEYS = ("data.crop", "data.views", "data.min_scale", "data.view_seed", "data.normalize")
# What decides the clips; where the dataset lies does not (data.root is no param: the
# inputs are named relative to it, so a moved dataset is the same dataset).
CLIP_KEYS = ("data.frames", "data.clips_per_video", "data.test_clips", "data.short_side", "data.max_long_side")
DATA_KEYS = ("data.format", "data.train_list", "data.test_list", "data.test_fraction", "data.val_fraction",
             "data.val_list", "data.val_group", *CLIP_KEYS)


def enhancer_params(cfg: Config) -> list[str]:
    """The keys the kind is built from; with weights to fit, also the data and the keys its fit
    reads. Imported weights are used unchanged; weight files are inputs, not params."""
    e, kind = cfg.enhancer, enhancers.get(cfg.enhancer.kind)
    if not kind.learned:
        return ["enhancer.kind", *kind.keys]
    if e.mode == "import":
        return ["enhancer.kind", "enhancer.mode", *kind.keys]
    fit = {"enhancer.kind", "enhancer.mode", *kind.fit_keys}
    return [*DATA_KEYS, *[k for k in section_keys(cfg, "enhancer") if k in fit], *kind.keys]


def enhancer_inputs(cfg: Config) -> dict:
    e = cfg.enhancer
    if not enhancers.get(e.kind).learned:
        return {}
    ins = {} if e.mode == "fit" else {"enhancer.weights": Path(e.weights)}
    if e.mode == "import":
        return ins
    if e.reference:  # the quality report's reference weights
        ins["enhancer.reference"] = Path(e.reference)
    return {**ins, **dataset_inputs(cfg, ("train",))}


def pretrain_params(cfg: Config) -> list[str]:
    """Its own section, the clip geometry and views, and the two architectures it pretrains."""
    keys = [k for k in section_keys(cfg, "pretrain") if k != "pretrain.root"]  # inputs are named below it
    return [*keys, *CLIP_KEYS, *VIEW_KEYS, "enhance.shard_size", "enhance.compression",
            "teacher.model", "student.model"]


def pretrain_videos(cfg: Config) -> dict:
    return all_videos(pretrain_data(cfg)) if cfg.pretrain.root else {}


def pretrain_upstream(section: str):
    """The pretrain stage is upstream of a training stage only when its `pretrained` names it."""
    def upstream(cfg: Config) -> tuple[str, ...]:
        return ("pretrain",) if uses_pretrain(cfg, section) else ()
    return upstream


def pretrained_source(section: str):
    """`<section>.pretrained` in the fingerprint by what it starts from (`published.source_identity`):
    random, the pretrain stage, which registered weights, or a file (by content, as an input); and
    data.normalize by the statistics it gives that model (`weights.statistics_identity`), so a mode
    that standardises it alike (source or stream, for registered weights) keeps it."""
    def derived(cfg: Config) -> dict:
        return {f"{section}.pretrained": source_identity(cfg, section),
                "data.normalize": statistics_identity(cfg, section)}
    return derived


def teacher_statistics(cfg: Config) -> dict:
    """soft-labels apply the teacher's statistics (its meta.json): data.normalize as the teacher means it."""
    return {"data.normalize": statistics_identity(cfg, "teacher")}


def pretrain_statistics(cfg: Config) -> dict:
    """The pretrain stage standardises the day footage with its own statistics under stream and source alike."""
    return {"data.normalize": "none" if cfg.data.normalize == "none" else "own train clips"}


def pretrained_weights(section: str):
    """A `pretrained` state-dict file is an input (its content counts, not its path); registered
    names are fixed by the hash in their file name, `pretrain` by the upstream stage."""
    def inputs(cfg: Config) -> dict:
        source = getattr(cfg, section).pretrained
        return {} if source in ("", PRETRAIN, *NAMES) else {f"{section}.pretrained": Path(source)}
    return inputs


def all_videos(cfg: Config) -> dict:
    return dataset_inputs(cfg, ("train", "val", "test"))


def dataset_inputs(cfg: Config, splits: tuple[str, ...]) -> dict:
    """The split lists and every listed video, as {path relative to the dataset root: path}."""
    root = dataset_root(cfg)
    index = read_dataset(cfg.data, root)
    ins = {}
    if cfg.data.format != "folders":
        ins = {name: root / name for name in (cfg.data.train_list, cfg.data.test_list, cfg.data.val_list,
                                              CLASSES_FILE) if name and (root / name).is_file()}
    for split in splits:
        ins.update({e.rel: root / e.rel for e in index.entries(split)})
    # skipped (data.skip_missing): recorded as missing, so the stage is stale again once it appears
    ins.update({e.rel: root / e.rel for e in index.missing if e.split in splits})
    return ins


def teacher_ensemble(cfg: Config) -> list[str]:
    """`teacher.ensemble` where it is not 1: a one-teacher config keeps the params (and the fingerprint,
    folder and checkpoints) it had before the key existed."""
    return ["teacher.ensemble"] if cfg.teacher.ensemble != 1 else []


def student_folder(cfg: Config) -> str:
    """One folder per (alpha, T, the rest, its pretrained source): a sweep keeps every variant."""
    s = cfg.student
    return f"student/a{s.alpha:g}-T{s.temperature:g}-{hash_json(STAGES['student'].param_values(cfg))[:8]}"


STAGES: dict[str, Stage] = {s.name: s for s in [  # in run order: upstream first
    Stage(name="pretrain", run="dlkdd.pipeline.stages.pretrain:run_stage",
          params=(pretrain_params,), derived=pretrain_statistics, inputs=pretrain_videos, trains=True,
          doc="Train the teacher's and the student's architectures on labelled normal-light footage "
              "([pretrain] root)."),
    Stage(name="enhancer", run="dlkdd.pipeline.stages.enhancer:run_stage",
          params=(enhancer_params,), inputs=enhancer_inputs,
          doc=f"Make the low-light enhancer (enhancer.kind: {', '.join(enhancers.names())}): fitted on the "
              "dataset's own dark training frames, imported as the authors' weights, or built from its keys."),
    Stage(name="enhance", run="dlkdd.pipeline.stages.enhance:run_stage", upstream=("enhancer",),
          # threads_per_worker: torch's float sums depend on the thread count (zero_dce++ shards differ)
          params=(*DATA_KEYS, "enhance.shard_size", "enhance.compression", "enhance.precision",
                  "enhance.threads_per_worker"),
          inputs=all_videos, outputs="clips",
          doc="Decode, sample, resize and enhance every video into HDF5 shards of original and enhanced clips."),
    Stage(name="teacher", run="dlkdd.pipeline.stages.teacher:run_stage",
          upstream=("enhance", pretrain_upstream("teacher")),
          params=("teacher.*", "-teacher.ensemble", teacher_ensemble, *VIEW_KEYS), derived=pretrained_source("teacher"),
          inputs=pretrained_weights("teacher"), trains=True,
          doc="Train the teacher on enhanced clips, views as augmentation (teacher.ensemble members, "
              "seeds teacher.seed + 1000 k)."),
    Stage(name="soft-labels", run="dlkdd.pipeline.stages.soft_labels:run_stage", upstream=("teacher", "enhance"),
          params=(teacher_ensemble, *VIEW_KEYS), derived=teacher_statistics,
          doc="Run the teacher once over every (clip, view) and cache its logits (an ensemble's: their mean)."),
    Stage(name="baseline", run="dlkdd.pipeline.stages.student:run_baseline",
          upstream=("enhance", pretrain_upstream("student")),
          params=("student.*", "-student.alpha", "-student.temperature", *VIEW_KEYS),
          derived=pretrained_source("student"), inputs=pretrained_weights("student"), trains=True,
          doc="Train the student without distillation (alpha = 0), for comparison."),
    Stage(name="student", run="dlkdd.pipeline.stages.student:run_student",
          upstream=("soft-labels", "enhance", pretrain_upstream("student")),
          params=("student.*", *VIEW_KEYS), derived=pretrained_source("student"), inputs=pretrained_weights("student"),
          outputs=student_folder, trains=True,
          doc="Train the student on original dark clips against the cached teacher logits."),
    Stage(name="evaluate", run="dlkdd.pipeline.stages.evaluate:run_stage",
          upstream=("teacher", "baseline", "student", "enhance"),
          params=("evaluate.*", "-evaluate.batch_size", "data.crop", "data.normalize"), outputs="report",
          shared=("study*", "ablation*"),  # `dlkdd study` writes its report beside results.md
          doc="Score teacher, baseline and student on the test split (top-1, top-5); write "
              "report/results.md and plots."),
]}


def list_variants(cache: Path) -> list[dict]:
    """One row per trained student variant in `cache` (from its stage records), oldest first."""
    rows = []
    for path in sorted((Path(cache) / "stages").glob("student@*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, ValueError):
            rec = {}
        summary = rec.get("summary") or {}
        student = (rec.get("params") or {}).get("student") or {}
        rows.append({"variant": path.stem.split("@", 1)[1],
                     "alpha": summary.get("alpha", student.get("alpha")),
                     "temperature": summary.get("temperature", student.get("temperature")),
                     "top1": summary.get("top1"), "top5": summary.get("top5"),
                     "started": rec.get("started")})
    return sorted(rows, key=lambda r: (r["started"] or "", r["variant"]))


def pipeline_graph(cfg: Config, cache: Path, checksum: bool = False, source: Path = SOURCE,
                   stages: dict[str, Stage] | None = None) -> Graph:
    """The engine's graph of this table's stages (or of `stages`, a study arm's variant of the table),
    for one cache under one config: model files digested by their tensors."""
    return Graph(cfg, cache, stages or STAGES, checksum=checksum, source=source, digest=content_digest,
                 neutral=(TABLE_FILE,))


def closure(target: str, cfg: Config | None = None) -> list[str]:
    """`target` and the stages upstream of it (under `cfg`), in run order."""
    return upstream_closure(target, STAGES, cfg)
