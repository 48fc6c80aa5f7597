"""The stage graph: what each stage reads, its fingerprint, its record, and run-only-stale.

A stage's fingerprint hashes the config values it reads (and only those), its
external inputs (for the video stages: each video's path, size and mtime, or
content with --checksum), the recorded output digests of its upstream stages,
the AST of its code modules (comments and formatting do not count) and the
versions of torch/decord/h5py. After a stage's outputs are complete its record
is written atomically to `stages/<stage>.json`. Fresh = the record exists, the
fingerprint matches, and every recorded output is there with its digest.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Callable

from . import atomic
from .config import Config

ROOT = Path(__file__).resolve().parent.parent  # the source tree that holds pipeline/ and models/
DEFAULT_SAMPLE = ROOT / "data" / "sample"
VIEW_KEYS = ("data.crop", "data.views", "data.min_scale", "data.view_seed", "data.normalize")
DATA_KEYS = ("data.root", "data.format", "data.train_list", "data.test_list", "data.test_fraction",
             "data.val_fraction", "data.val_list",
             "data.frames", "data.clips_per_video", "data.test_clips", "data.short_side", "data.max_long_side")
# Settings that change how fast a stage runs, never what it writes.
# (skip_missing too: which videos are missing is part of the inputs already.)
SPEED_ONLY = {"num_workers", "workers", "threads_per_worker", "scheduler", "batch_frames", "strict",
              "skip_missing"}


class StageError(RuntimeError):
    """A stage cannot run (one line for the user)."""


class StageUnavailable(StageError):
    """The stage's code is not part of this version yet."""


@dataclass(frozen=True)
class Stage:
    name: str
    upstream: tuple[str, ...]
    params: Callable[[Config], list[str]]  # the config keys the stage reads, given the config
    modules: tuple[str, ...]  # modules whose AST is part of the fingerprint
    out: Callable[[Config], str]  # output folder, relative to the cache
    run: str  # "module:function", imported only when the stage runs
    inputs: Callable[[Config, bool], dict] | None = None  # external inputs -> {name: digest}
    doc: str = ""
    uses: Callable[[Config], tuple[str, ...]] | None = None  # upstream stages only some configs need

    def upstream_of(self, cfg: Config | None) -> tuple[str, ...]:
        """`upstream`, plus what this config makes the stage read (e.g. `pretrain` weights)."""
        return self.upstream + (self.uses(cfg) if self.uses is not None and cfg is not None else ())

    def record_name(self, cfg: Config) -> str:
        """`student` has one record per variant (its own output folder), others one record."""
        out = self.out(cfg)
        # a study's ablation arms nest folders deeper: one flat record name per output folder
        return f"{self.name}@{out.split('/', 1)[1].replace('/', '--')}" if "/" in out else self.name


def section_keys(cfg: Config, section: str, exclude: tuple[str, ...] = ()) -> list[str]:
    names = getattr(cfg, section).__dataclass_fields__
    return [f"{section}.{k}" for k in names if k not in exclude and k not in SPEED_ONLY]


def _enhancer_params(cfg: Config) -> list[str]:
    if cfg.enhancer.kind == "gamma":
        return ["enhancer.kind", "enhancer.gamma"]
    if cfg.enhancer.kind == "none":
        return ["enhancer.kind"]
    keys = section_keys(cfg, "enhancer", exclude=("gamma",))
    if cfg.enhancer.mode == "import":  # imported weights are used unchanged: fitting knobs unread
        keys = ["enhancer.kind", "enhancer.mode", "enhancer.weights", "enhancer.scale_factor"]
    if cfg.enhancer.kind != "zero_dce++":
        keys = [k for k in keys if k != "enhancer.scale_factor"]
    if cfg.enhancer.kind == "sci":  # its self-calibrated loss has no Zero-DCE terms to weigh
        keys = [k for k in keys if k.split(".")[1] not in ("exposure", "w_spa", "w_exp", "w_col", "w_tv")]
    return [*DATA_KEYS, *keys] if cfg.enhancer.mode != "import" else keys


def _enhancer_inputs(cfg: Config, checksum: bool) -> dict:
    ins = {}
    if cfg.enhancer.kind in ("zero_dce", "zero_dce++", "sci") and cfg.enhancer.mode != "fit":
        ins["weights"] = file_digest(Path(cfg.enhancer.weights), checksum=True)
    if cfg.enhancer.kind in ("zero_dce", "zero_dce++", "sci") and cfg.enhancer.mode != "import":
        ins.update(dataset_inputs(cfg, checksum, splits=("train",)))
        if cfg.enhancer.reference:  # the quality report's reference weights
            ins["reference"] = file_digest(Path(cfg.enhancer.reference), checksum=True)
    return ins


def _dataset_inputs_all(cfg: Config, checksum: bool) -> dict:
    return dataset_inputs(cfg, checksum)


def _student_variant(cfg: Config) -> str:
    s = cfg.student
    return f"student/a{s.alpha:g}-T{s.temperature:g}-{params_hash(cfg, _student_params(cfg))[:8]}"


def _student_params(cfg: Config) -> list[str]:
    return [*section_keys(cfg, "student"), *VIEW_KEYS]


PRETRAIN_DATA_KEYS = ("pretrain.root", "pretrain.format", "pretrain.train_list", "pretrain.test_list",
                      "pretrain.test_fraction")


def pretrain_data(cfg: Config) -> Config:
    """The config with `[pretrain]`'s dataset as `[data]` (clip geometry and views unchanged) and no
    enhancer: what decoding and training read for the normal-light footage."""
    import dataclasses
    p = cfg.pretrain
    data = dataclasses.replace(cfg.data, root=p.root, format=p.format, train_list=p.train_list,
                               test_list=p.test_list, test_fraction=p.test_fraction)
    return dataclasses.replace(cfg, data=data, enhancer=dataclasses.replace(cfg.enhancer, kind="none"))


def _pretrain_params(cfg: Config) -> list[str]:
    geometry = [k for k in DATA_KEYS if k not in ("data.root", "data.format", "data.train_list",
                                                  "data.test_list", "data.test_fraction")]
    return [*section_keys(cfg, "pretrain"), *geometry, *VIEW_KEYS, "enhance.shard_size",
            "enhance.compression", "teacher.model", "student.model"]


def _pretrain_inputs(cfg: Config, checksum: bool) -> dict:
    return dataset_inputs(pretrain_data(cfg), checksum) if cfg.pretrain.root else {}


def _uses_pretrain(section: str) -> Callable[[Config], tuple[str, ...]]:
    def uses(cfg: Config) -> tuple[str, ...]:
        from .weights import uses_pretrain
        return ("pretrain",) if uses_pretrain(cfg, section) else ()
    return uses


def _init_inputs(section: str) -> Callable[[Config, bool], dict]:
    """A state-dict file named by `<section>.pretrained` is an input: editing it makes the stage stale."""
    def inputs(cfg: Config, checksum: bool) -> dict:
        from .weights import NAMES, PRETRAIN
        source = getattr(cfg, section).pretrained
        if source in ("", PRETRAIN, *NAMES):  # registered files are fixed by the hash in their name
            return {}
        return {"pretrained": file_digest(Path(source), checksum)}
    return inputs


MODEL_MODULES = ("dlkdd.models", "dlkdd.models.video_resnet", "dlkdd.models.bert_head", "dlkdd.models.profile",
                 "dlkdd.models.torchfile")
SHARED_MODULES = ("dlkdd.pipeline.device", "dlkdd.pipeline.progress", "dlkdd.pipeline.errors")
TRAIN_MODULES = ("dlkdd.pipeline.classifiers", *SHARED_MODULES, "dlkdd.pipeline.student", "dlkdd.pipeline.distill", "dlkdd.pipeline.teacher", "dlkdd.pipeline.train",
                 "dlkdd.pipeline.views", "dlkdd.pipeline.shards", "dlkdd.pipeline.data", "dlkdd.pipeline.checkpoints",
                 "dlkdd.pipeline.weights", *MODEL_MODULES)

STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("pretrain", (), _pretrain_params,
          ("dlkdd.pipeline.pretrain", "dlkdd.pipeline.enhance", "dlkdd.pipeline.videos", *TRAIN_MODULES),
          lambda c: "pretrain", "dlkdd.pipeline.pretrain:run_stage", _pretrain_inputs,
          "train the teacher's and the student's architectures on labelled normal-light footage "
          "([pretrain] root)"),
    Stage("enhancer", (), _enhancer_params,
          ("dlkdd.pipeline.enhancer", "dlkdd.models.zero_dce", "dlkdd.models.sci", "dlkdd.models.torchfile", "dlkdd.pipeline.videos",
           *SHARED_MODULES),
          lambda c: "enhancer", "dlkdd.pipeline.enhancer:run_stage", _enhancer_inputs,
          "fit Zero-DCE on the dataset's own dark training frames, import weights, or gamma"),
    Stage("enhance", ("enhancer",),
          lambda c: [*DATA_KEYS, "enhance.shard_size", "enhance.compression"],
          ("dlkdd.pipeline.enhance", "dlkdd.pipeline.shards", "dlkdd.pipeline.videos", "dlkdd.pipeline.enhancer",
           "dlkdd.models.zero_dce", "dlkdd.models.sci", "dlkdd.models.torchfile", "dlkdd.pipeline.views", *SHARED_MODULES),
          lambda c: "clips", "dlkdd.pipeline.enhance:run_stage", _dataset_inputs_all,
          "decode, sample, resize and enhance every video into HDF5 clip shards"),
    Stage("teacher", ("enhance",),
          lambda c: [*section_keys(c, "teacher"), *VIEW_KEYS],
          ("dlkdd.pipeline.teacher", "dlkdd.pipeline.classifiers", "dlkdd.pipeline.train", "dlkdd.pipeline.views",
           "dlkdd.pipeline.shards", "dlkdd.pipeline.data", "dlkdd.pipeline.checkpoints", "dlkdd.pipeline.weights",
           *SHARED_MODULES, *MODEL_MODULES),
          lambda c: "teacher", "dlkdd.pipeline.teacher:run_stage", _init_inputs("teacher"),
          "train the teacher on enhanced clips, views as augmentation", _uses_pretrain("teacher")),
    Stage("soft-labels", ("teacher", "enhance"),
          lambda c: list(VIEW_KEYS),
          ("dlkdd.pipeline.soft_labels", "dlkdd.pipeline.views", "dlkdd.pipeline.shards", "dlkdd.pipeline.data",
           "dlkdd.pipeline.checkpoints", "dlkdd.pipeline.train", *SHARED_MODULES, *MODEL_MODULES),
          lambda c: "soft-labels", "dlkdd.pipeline.soft_labels:run_stage", None,
          "run the teacher once over every (clip, view); cache the logits"),
    Stage("baseline", ("enhance",),
          lambda c: [*section_keys(c, "student", exclude=("alpha", "temperature")), *VIEW_KEYS],
          TRAIN_MODULES,
          lambda c: "baseline", "dlkdd.pipeline.student:run_baseline", _init_inputs("student"),
          "the same student trained without distillation (alpha = 0), for comparison",
          _uses_pretrain("student")),
    Stage("student", ("soft-labels", "enhance"), _student_params,
          TRAIN_MODULES,
          _student_variant, "dlkdd.pipeline.student:run_student", _init_inputs("student"),
          "train the student on original dark clips against the cached teacher logits", _uses_pretrain("student")),
    Stage("evaluate", ("teacher", "baseline", "student", "enhance"),
          lambda c: [*section_keys(c, "evaluate", exclude=("batch_size",)), "data.crop"],
          ("dlkdd.pipeline.evaluate", "dlkdd.pipeline.views", "dlkdd.pipeline.shards", "dlkdd.pipeline.data",
           "dlkdd.pipeline.checkpoints", "dlkdd.pipeline.train", *SHARED_MODULES, *MODEL_MODULES),
          lambda c: "report", "dlkdd.pipeline.evaluate:run_stage", None,
          "top-1/top-5 of teacher, baseline and student; report/results.md and plots"),
]}
ORDER = list(STAGES)  # already topological
TRAINING_STAGES = ("teacher", "baseline", "student")


def upstream_closure(target: str, stages: dict[str, Stage] = STAGES, cfg: Config | None = None) -> list[str]:
    """`target` and everything it depends on, in run order (`stages` is in topological order);
    with `cfg`, also the upstream stages that config makes them read."""
    need: set[str] = set()

    def visit(name: str) -> None:
        if name not in need:
            need.add(name)
            for up in stages[name].upstream_of(cfg):
                visit(up)
    visit(target)
    return [n for n in stages if n in need]


# --- fingerprints -------------------------------------------------------------------------

def params_hash(cfg: Config, keys: list[str]) -> str:
    return _hash({k: cfg.get(k) for k in keys})


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


_AST_CACHE: dict[str, str] = {}


def module_file(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def code_digest(module: str) -> str:
    """Hash of the module's AST: comments and formatting do not change it."""
    path = module_file(module)
    if path is None:
        return "absent"
    source = path.read_bytes()
    key = hashlib.sha256(source).hexdigest()  # parsing is the slow part, reading is not
    if key not in _AST_CACHE:
        _AST_CACHE[key] = hashlib.sha256(ast.dump(ast.parse(source)).encode()).hexdigest()
    return _AST_CACHE[key]


def library_versions() -> dict:
    out = {}
    for lib in ("torch", "decord", "h5py"):
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


def file_digest(path: Path, checksum: bool = False) -> str:
    """size:mtime (cheap) or sha256 of the content (--checksum)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    if not checksum:
        return f"{st.st_size}:{st.st_mtime_ns}"
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def dataset_root(cfg: Config) -> Path:
    return Path(cfg.data.root) if cfg.data.root else DEFAULT_SAMPLE


def dataset_inputs(cfg: Config, checksum: bool, splits=("train", "val", "test")) -> dict:
    """Every listed video and the split lists, as {relative path: digest}."""
    from .videos import read_dataset
    root = dataset_root(cfg)
    index = read_dataset(cfg.data, root)
    ins = {}
    for name in (cfg.data.train_list, cfg.data.test_list, cfg.data.val_list, "classes.txt"):
        if name and cfg.data.format != "folders" and (root / name).is_file():
            ins[f"list:{name}"] = file_digest(root / name, checksum=True)
    for split in splits:
        for e in index.entries(split):
            ins[f"{split}:{e.rel}"] = file_digest(Path(e.path), checksum)
    for e in index.missing:  # skipped (data.skip_missing): stale again once it appears
        if e.split in splits:
            ins[f"{e.split}:{e.rel}"] = "missing"
    return ins


@dataclass
class Inspection:
    """Everything the fingerprint is made of, for one stage under one config."""
    params: dict
    inputs: dict
    upstream: dict
    code: dict
    versions: dict
    fingerprint: str = ""

    def __post_init__(self):
        self.fingerprint = _hash([self.params, self.inputs, self.upstream, self.code, self.versions])


# --- records and status -------------------------------------------------------------------

@dataclass
class StageStatus:
    name: str
    state: str  # fresh | stale | missing
    reasons: list[str] = field(default_factory=list)
    inspection: Inspection | None = None
    record: dict | None = None


class Graph:
    """The stages of one cache under one config."""

    def __init__(self, cfg: Config, cache: Path, checksum: bool = False,
                 stages: dict[str, Stage] = STAGES):
        self.stages = stages
        self.cfg = cfg
        self.cache = Path(cache)
        self.checksum = checksum
        self._inputs: dict[str, dict] = {}

    def out_dir(self, name: str) -> Path:
        return self.cache / self.stages[name].out(self.cfg)

    def record_path(self, name: str) -> Path:
        return self.cache / "stages" / f"{self.stages[name].record_name(self.cfg)}.json"

    def record(self, name: str) -> dict | None:
        try:
            return json.loads(self.record_path(name).read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return {"corrupt": True}

    def inspect(self, name: str) -> Inspection:
        stage = self.stages[name]
        if stage.inputs is not None and name not in self._inputs:
            self._inputs[name] = stage.inputs(self.cfg, self.checksum)
        upstream = {}
        for up in stage.upstream_of(self.cfg):
            rec = self.record(up)
            upstream[up] = rec.get("outputs_digest", "none") if rec else "none"
        return Inspection(
            params={k: self.cfg.get(k) for k in stage.params(self.cfg)},
            inputs=self._inputs.get(name, {}),
            upstream=upstream,
            code={m: code_digest(m) for m in stage.modules},
            versions=library_versions(),
        )

    def status(self, name: str, upstream_states: dict[str, StageStatus] | None = None,
               verify: bool = False) -> StageStatus:
        insp = self.inspect(name)
        rec = self.record(name)
        if rec is None:
            out = self.out_dir(name)
            started = out.is_dir() and any(out.iterdir())
            return StageStatus(name, "missing", ["not finished: an earlier run stopped before writing its record"
                                                 if started else "never run in this cache"], insp)
        if rec.get("corrupt"):
            return StageStatus(name, "stale", [f"record {self.record_path(name)} is unreadable"], insp)
        reasons = []
        for up in self.stages[name].upstream_of(self.cfg):
            st = (upstream_states or {}).get(up)
            if st is not None and st.state != "fresh":
                reasons.append(f"upstream {up} is {st.state}")
        if rec.get("fingerprint") != insp.fingerprint:
            not_fresh = {r.split()[1] for r in reasons}
            reasons += [r for r in explain_difference(rec.get("components", {}), insp)
                        if not (r.startswith("upstream ") and r.split()[1] in not_fresh)]
            if not reasons:
                reasons.append("fingerprint changed")
        reasons += self.check_outputs(rec, verify)
        return StageStatus(name, "stale" if reasons else "fresh", reasons, insp, rec)

    def check_outputs(self, rec: dict, verify: bool) -> list[str]:
        problems = []
        for rel, meta in sorted(rec.get("outputs", {}).items()):
            path = self.cache / rel
            if not path.exists():
                problems.append(f"output {rel} missing")
            elif verify and file_digest(path, checksum=True) != meta["sha256"]:
                problems.append(f"output {rel} corrupted (sha256 differs from the record)")
            elif not verify and file_digest(path) != f"{meta['size']}:{meta['mtime_ns']}":
                problems.append(f"output {rel} changed since it was written")
        return problems

    def statuses(self, names: list[str] | None = None, verify: bool = False) -> dict[str, StageStatus]:
        out: dict[str, StageStatus] = {}
        for name in names or list(self.stages):
            out[name] = self.status(name, out, verify)
        return out

    def write_record(self, name: str, insp: Inspection, started: float, summary: dict) -> dict:
        """Digest every file in the stage's output folder and write the record atomically."""
        outputs = {}
        out_dir = self.out_dir(name)
        for path in sorted(p for p in out_dir.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
            st = path.stat()
            outputs[str(path.relative_to(self.cache))] = {
                "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                "sha256": file_digest(path, checksum=True)}
        rec = {
            "stage": name,
            "fingerprint": insp.fingerprint,
            "components": {"params": insp.params, "inputs": _digest_inputs(insp.inputs),
                           # per-input digests, so a rerun can say which input changed
                           "input_names": insp.inputs, "upstream": insp.upstream,
                           "code": insp.code, "versions": insp.versions},
            "params": self.cfg.to_dict(),
            "outputs": outputs,
            "outputs_digest": _hash({k: v["sha256"] for k, v in outputs.items()}),
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 2),
            "summary": summary or {},
        }
        atomic.write_json(self.record_path(name), rec)
        return rec

    def forget(self, name: str) -> None:
        """Drop the record before rerunning, so an interrupted run reads as missing, never fresh."""
        try:
            os.unlink(self.record_path(name))
        except FileNotFoundError:
            pass


def _digest_inputs(inputs: dict) -> str:
    return _hash(inputs)


def explain_difference(old: dict, new: Inspection) -> list[str]:
    """Human reasons why the recorded components differ from the current ones."""
    reasons = []
    old_params = old.get("params", {})
    for k in sorted(set(old_params) | set(new.params)):
        a, b = old_params.get(k, "<unset>"), new.params.get(k, "<unset>")
        if a != b:
            reasons.append(f"param {k} {a!r} -> {b!r}".replace("'", ""))
    if old.get("inputs") != _digest_inputs(new.inputs):
        reasons.append(_explain_inputs(old.get("input_names", {}), new.inputs))
    for up in sorted(new.upstream):
        if old.get("upstream", {}).get(up) != new.upstream[up]:
            reasons.append(f"upstream {up} changed")
    old_code = old.get("code", {})
    for m in sorted(new.code):
        if old_code.get(m) != new.code[m]:
            f = module_file(m)
            shown = str(f.relative_to(ROOT)) if f and f.is_relative_to(ROOT) else m
            reasons.append(f"code of {shown} changed")
    old_v = old.get("versions", {})
    for lib in sorted(new.versions):
        if old_v.get(lib) != new.versions[lib]:
            reasons.append(f"{lib} {old_v.get(lib)} -> {new.versions[lib]}")
    return reasons


def _explain_inputs(old: dict, new: dict) -> str:
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    changed = sorted(k for k in set(old) & set(new) if old[k] != new[k])
    parts = []
    for label, keys in (("added", added), ("removed", removed), ("changed", changed)):
        if keys:
            more = f" (+{len(keys) - 1} more)" if len(keys) > 1 else ""
            parts.append(f"{label} {keys[0].split(':', 1)[-1]}{more}")
    return "inputs " + ("; ".join(parts) if parts else "changed")


# --- running ------------------------------------------------------------------------------

@dataclass
class Context:
    """What a stage's run function gets."""
    graph: Graph
    name: str
    out: Path  # this stage's output folder (created)
    device: str  # "cpu" or "cuda"
    console: object  # rich.console.Console
    options: dict = field(default_factory=dict)  # verb-specific options (scheduler, strict, ...)

    @property
    def cfg(self) -> Config:
        return self.graph.cfg

    @property
    def cache(self) -> Path:
        return self.graph.cache

    def dir_of(self, stage: str) -> Path:
        return self.graph.out_dir(stage)


def load_runner(stage: Stage) -> Callable[[Context], dict]:
    mod_name, func = stage.run.split(":")
    try:
        mod = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        if e.name == mod_name:
            raise StageUnavailable(f"stage {stage.name} is not available yet in this version") from None
        raise
    fn = getattr(mod, func, None)
    if fn is None:
        raise StageUnavailable(f"stage {stage.name} is not available yet in this version")
    return fn


def plan(graph: Graph, target: str, force: bool = False) -> list[tuple[str, StageStatus, bool]]:
    """(stage, status, will_run) for the target and its upstream, assuming stale ones rerun."""
    states: dict[str, StageStatus] = {}
    rows = []
    for name in upstream_closure(target, graph.stages, graph.cfg):
        st = graph.status(name, states)
        will = st.state != "fresh" or (force and name == target)
        if will and st.state == "fresh":
            st = StageStatus(name, "stale", ["--force"], st.inspection, st.record)
        states[name] = st
        rows.append((name, st, will))
    return rows


def execute(graph: Graph, target: str, device: str, console, force: bool = False,
            dry_run: bool = False, options: dict | None = None, locks=None) -> list[str]:
    """Bring `target` and its upstream up to date; return the names of stages that ran.

    `locks` (a lock.OutputLocks) is held shared on every output read and exclusive on the
    one being written, so other commands may read the same fresh upstream meanwhile.
    """
    ran: list[str] = []
    states: dict[str, StageStatus] = {}
    for name in upstream_closure(target, graph.stages, graph.cfg):
        st = graph.status(name, states)
        if locks is not None and not dry_run:
            st = _lock_output(graph, name, st, states, locks, forced=force and name == target)
        if st.state == "fresh" and not (force and name == target):
            console.print(f"[green]✓[/] {name}: fresh")
            states[name] = st
            continue
        why = "--force" if st.state == "fresh" else "; ".join(st.reasons)
        if dry_run:
            console.print(f"[yellow]•[/] {name}: would run ({why})")
            states[name] = StageStatus(name, "stale", [why])
            continue
        runner = load_runner(graph.stages[name])
        console.print(f"[cyan]▶[/] {name}: running ({why})")
        graph.forget(name)
        out = graph.out_dir(name)
        if st.state == "fresh" and name in (*TRAINING_STAGES, "pretrain"):
            # --force retrains from nothing; a finished checkpoint would otherwise just be reloaded.
            # (enhance keeps shards whose sha256 its part files confirm: --force re-verifies them.)
            shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True, exist_ok=True)
        atomic.remove_orphans(out)
        started = time.time()
        ctx = Context(graph, name, out, device, console, dict(options or {}))
        try:
            summary = runner(ctx)
        except KeyboardInterrupt:
            console.print(f"[yellow]■[/] {name}: interrupted before it finished; no record was written, "
                          f"so it reads as missing until it is rerun")
            raise
        insp = graph.inspect(name)  # after upstream records were written
        graph.write_record(name, insp, started, summary)
        console.print(f"[green]✓[/] {name}: done in {time.time() - started:.1f} s")
        if locks is not None:
            locks.share(output_key(graph, name))  # written: downstream stages (and others) read it
        states[name] = graph.status(name, states)
        ran.append(name)
    return ran


def output_key(graph: Graph, name: str) -> str:
    """The lock name of a stage's output: its folder relative to the cache (`student/a0.5-T4-...`)."""
    return graph.out_dir(name).relative_to(graph.cache).as_posix()


def _lock_output(graph: Graph, name: str, st: StageStatus, states: dict, locks, forced: bool) -> StageStatus:
    """Hold the stage's output shared (to read it) or exclusive (to write it); its status afterwards.

    The status is taken again under the lock: another process may have written the output
    (or begun to rewrite it) while this one waited.
    """
    key = output_key(graph, name)
    if st.state == "fresh" and not forced:
        locks.share(key)
        st = graph.status(name, states)
        if st.state == "fresh":
            return st
    locks.exclusive(key)
    st = graph.status(name, states)
    if st.state == "fresh" and not forced:
        locks.share(key)  # written by the process we waited for: only read it
    return st


def execute_distributed(graph: Graph, target: str, device: str, console, rank: int,
                        force: bool = False, locks=None) -> list[str]:
    """Under torchrun: every rank runs the training stage `target`; rank 0 alone writes its record.

    Upstream stages must already be fresh: decoding and enhancing belong to dask, not to
    each of N training processes.
    """
    if target not in TRAINING_STAGES:
        raise StageError(f"under torchrun only the training stages run ({', '.join(TRAINING_STAGES)}); "
                         f"run `dlkdd {target}` without torchrun")
    states: dict[str, StageStatus] = {}
    for name in upstream_closure(target, graph.stages, graph.cfg)[:-1]:
        if locks is not None:  # rank 0 holds the locks for every rank
            locks.share(output_key(graph, name))
        states[name] = graph.status(name, states)
        if states[name].state != "fresh":
            raise StageError(f"under torchrun, upstream stages must be fresh: {name} is "
                             f"{states[name].state}; run `dlkdd {name}` first (without torchrun)")
    if locks is not None:
        locks.exclusive(output_key(graph, target))
    st = graph.status(target, states)
    if st.state == "fresh" and not force:
        console.print(f"[green]✓[/] {target}: fresh")
        return []
    runner = load_runner(graph.stages[target])
    if rank == 0:
        console.print(f"[cyan]▶[/] {target}: running on {os.environ.get('WORLD_SIZE')} processes "
                      f"({'; '.join(st.reasons) if st.state != 'fresh' else '--force'})")
        graph.forget(target)
    out = graph.out_dir(target)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    summary = runner(Context(graph, target, out, device, console, {}))
    if rank == 0:
        graph.write_record(target, graph.inspect(target), started, summary)
        console.print(f"[green]✓[/] {target}: done in {time.time() - started:.1f} s")
    return [target]
