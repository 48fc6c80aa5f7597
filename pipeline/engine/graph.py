"""The stage graph's machinery: fingerprints, records, why a stage is stale, run-only-stale.

The stages themselves are declared in `stages.py`. A stage is fresh when its record
(`stages/<stage>.json`, written atomically after its outputs are complete) agrees with
the present on every component, each compared by its own named check (`CHECKS`):

- param:    the config values the stage reads (and only those);
- input:    its external files, named relative to the dataset root, by size and mtime
            (by sha256 under --checksum; the record keeps all three);
- upstream: the output digests of its upstream stages;
- code:     the AST (comments and formatting do not count) of its run function's module
            and of every module that imports, transitively, inside pipeline/ and models/;
- version:  torch, decord and h5py;
- output:   every recorded output is there, unchanged (size and mtime; content under
            --checksum or --verify; a model file's content is its tensors).

Nothing here depends on where the dataset or the cache lies, so both can be moved.
Torch-free at import: `dlkdd status` never loads torch.
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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from ...errors import StageError
from ..config import Config
from . import atomic, ranks
from .digest import sha256_of, stat_of

SOURCE = Path(__file__).resolve().parents[2]  # the source tree that holds pipeline/ and models/
PACKAGE = __name__.split(".")[0]  # "dlkdd": absolute imports inside the package start with it
CODE_DIRS = ("pipeline", "models")  # imports are followed inside these folders only
# Modules that cannot change what a stage writes: config values are fingerprinted as params
# (a changed default is a changed param), atomic.py decides how files are written, not what,
# progress.py what the console shows, and this module and the table whether a stage runs.
NEUTRAL = ("pipeline/config.py", "pipeline/engine/atomic.py", "pipeline/engine/progress.py", "pipeline/engine/graph.py",
           "pipeline/stages/table.py")
# Settings that change how fast a stage runs, never what it writes.
# (skip_missing too: which videos are missing is part of the inputs already.)
SPEED_ONLY = {"num_workers", "workers", "threads_per_worker", "scheduler", "batch_frames", "strict",
              "skip_missing", "cluster_after"}
RECORD_FORMAT = 2

ParamSpec = str | Callable[[Config], list]


@dataclass(frozen=True)
class Stage:
    """One stage, declared by keyword (see the table in `stages.py`).

    upstream: stage names, or a function cfg -> names for what only some configs read.
    params: config keys it reads: "section.key", "section.*" (the section's keys but the
    speed-only ones), "-section.key" (drop one), or a function cfg -> keys.
    outputs: its folder in the cache, or a function cfg -> folder (one folder per variant).
    inputs: a function cfg -> {name relative to the dataset root: path} of external files.
    trains: it trains a model, resuming from its folder: --force empties the folder first,
    and under torchrun it is the stage every process runs.
    """
    name: str
    run: str  # "dlkdd.pipeline.module:function", imported only when the stage runs
    doc: str
    upstream: tuple[str | Callable[[Config], tuple], ...] = ()
    params: tuple[ParamSpec, ...] = ()
    outputs: str | Callable[[Config], str] = ""
    inputs: Callable[[Config], dict] | None = None
    trains: bool = False

    def upstream_of(self, cfg: Config | None) -> tuple[str, ...]:
        """The upstream stages under `cfg` (without one: only those every config has)."""
        names: list[str] = []
        for up in self.upstream:
            names += [up] if isinstance(up, str) else (list(up(cfg)) if cfg is not None else [])
        return tuple(names)

    def keys(self, cfg: Config) -> list[str]:
        keys: list[str] = []
        for spec in self.params:
            if callable(spec):
                keys += spec(cfg)
            elif spec.startswith("-"):
                keys = [k for k in keys if k != spec[1:]]
            elif spec.endswith(".*"):
                keys += section_keys(cfg, spec[:-2])
            else:
                keys.append(spec)
        return list(dict.fromkeys(keys))

    def folder(self, cfg: Config) -> str:
        return self.outputs(cfg) if callable(self.outputs) else (self.outputs or self.name)

    def record_name(self, cfg: Config) -> str:
        """`student` has one record per variant (its own output folder), others one record."""
        out = self.folder(cfg)
        # a study's ablation arms nest folders deeper: one flat record name per output folder
        return f"{self.name}@{out.split('/', 1)[1].replace('/', '--')}" if "/" in out else self.name


def section_keys(cfg: Config, section: str) -> list[str]:
    names = getattr(cfg, section).__dataclass_fields__
    return [f"{section}.{k}" for k in names if k not in SPEED_ONLY]


def upstream_closure(target: str, stages: dict[str, Stage], cfg: Config | None = None) -> list[str]:
    """`target` and everything it depends on under `cfg`, in run order (`stages` is in
    topological order)."""
    need: set[str] = set()

    def visit(name: str) -> None:
        if name not in need:
            need.add(name)
            for up in stages[name].upstream_of(cfg):
                visit(up)
    visit(target)
    return [n for n in stages if n in need]


def params_hash(cfg: Config, keys: list[str]) -> str:
    return _hash({k: cfg.get(k) for k in keys})


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# --- the code a stage depends on, derived from its imports ---------------------------------

_PARSED: dict[str, tuple[str, list]] = {}  # sha256 of a source -> (AST digest, its imports)


def _parse(path: Path) -> tuple[str, list]:
    """(digest of the AST, [(level, module, names)] of every import, function bodies included)."""
    source = path.read_bytes()
    key = hashlib.sha256(source).hexdigest()  # parsing is the slow part, reading is not
    if key not in _PARSED:
        tree = ast.parse(source)
        imports = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                imports.append((node.level, node.module, [a.name for a in node.names]))
            elif isinstance(node, ast.Import):
                imports += [(0, a.name, []) for a in node.names]
        _PARSED[key] = (hashlib.sha256(ast.dump(tree).encode()).hexdigest(), imports)
    return _PARSED[key]


def _module_file(source: Path, parts: list[str]) -> Path | None:
    base = source.joinpath(*parts) if parts else source
    for path in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if path is not None and path.is_file():
            return path
    return None


def _imported_files(source: Path, path: Path, imports: list) -> list[Path]:
    """The package's files that `path`'s imports name. `from pkg import sub` counts the
    submodule alone; the package's `__init__` counts when a name is taken from it."""
    try:
        package = list(path.relative_to(source).parts[:-1])
    except ValueError:
        package = None  # a module outside the package: only its absolute imports resolve
    found = []
    for level, module, names in imports:
        if level:
            if package is None or level - 1 > len(package):
                continue
            base = package[:len(package) - (level - 1)]
        elif module and module.split(".")[0] == PACKAGE:
            base, module = [], ".".join(module.split(".")[1:]) or None
        else:
            continue  # outside the package (torch, numpy, ...)
        target = base + (module.split(".") if module else [])
        for name in names or [None]:
            sub = _module_file(source, target + [name]) if name and name != "*" else None
            found.append(sub or _module_file(source, target))
    return [f for f in found if f is not None]


def code_files(run: str, source: Path = SOURCE) -> dict[str, Path]:
    """{shown name: file} of the run function's module and all it imports inside pipeline/ and
    models/ (shown relative to the source tree; a module outside it by its name)."""
    module = run.split(":")[0]
    if module.split(".")[0] == PACKAGE:
        start = _module_file(source, module.split(".")[1:])
    else:  # a module outside the package (the tests' stand-ins)
        spec = importlib.util.find_spec(module)
        start = Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None
    if start is None:
        raise StageError(f"stage function {run}: module not found")
    seen: dict[Path, str] = {start: _shown(source, start, module)}
    todo = [start]
    while todo:
        path = todo.pop()
        for dep in _imported_files(source, path, _parse(path)[1]):
            rel = dep.relative_to(source).as_posix()
            if dep not in seen and rel.split("/")[0] in CODE_DIRS and rel not in NEUTRAL:
                seen[dep] = rel
                todo.append(dep)
    return {name: path for path, name in sorted(seen.items(), key=lambda kv: kv[1])}


def _shown(source: Path, path: Path, module: str) -> str:
    try:
        return path.relative_to(source).as_posix()
    except ValueError:
        return module


def code_digests(run: str, source: Path = SOURCE) -> dict[str, str]:
    return {name: _parse(path)[0] for name, path in code_files(run, source).items()}


def library_versions() -> dict:
    out = {}
    for lib in ("torch", "decord", "h5py"):
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


# --- what a stage is made of now ----------------------------------------------------------

@dataclass
class Inspection:
    """The components of one stage under one config, as they are now."""
    params: dict
    inputs: dict  # name -> {"size", "mtime_ns"} (+ "sha256" under --checksum), or {"missing": True}
    upstream: dict  # stage -> its outputs digest
    code: dict  # file -> AST digest
    versions: dict
    checksum: bool = False

    @property
    def fingerprint(self) -> str:
        """One hash of it all, for work a stage resumes (enhance's shards, a training checkpoint)."""
        ids = {k: v.get("sha256") if self.checksum else [v.get("size"), v.get("mtime_ns")]
               for k, v in self.inputs.items()}
        return _hash([self.params, ids, self.upstream, self.code, self.versions])


# --- why a stage is stale: one named check per component -----------------------------------

@dataclass(frozen=True)
class Reason:
    kind: str  # missing | record | force | param | input | upstream | code | version | output
    subject: str = ""  # the param key, input, upstream stage, code file, library or output
    detail: str = ""

    def __str__(self) -> str:
        return {
            "param": f"param {self.subject} {self.detail}",
            "input": f"inputs {self.detail}",
            "upstream": f"upstream {self.subject} {self.detail}",
            "code": f"code of {self.subject} changed",
            "version": f"{self.subject} {self.detail}",
            "output": f"output {self.subject} {self.detail}",
        }.get(self.kind, self.detail)


def _show(value) -> str:
    return "<unset>" if value is None else str(value)


def param_changes(old: dict, now: Inspection, checksum: bool) -> list[Reason]:
    old = old.get("params", {})
    return [Reason("param", k, f"{_show(old.get(k))} -> {_show(now.params.get(k))}")
            for k in sorted(set(old) | set(now.params)) if old.get(k) != now.params.get(k)]


def input_changes(old: dict, now: Inspection, checksum: bool) -> list[Reason]:
    old = old.get("inputs", {})
    compared = ("size", "sha256") if checksum else ("size", "mtime_ns")
    groups = (("added", sorted(set(now.inputs) - set(old))),
              ("removed", sorted(set(old) - set(now.inputs))),
              ("changed", sorted(k for k in set(old) & set(now.inputs)
                                 if any(old[k].get(c) != now.inputs[k].get(c) for c in compared))))
    parts = [f"{label} {keys[0]}" + (f" (+{len(keys) - 1} more)" if len(keys) > 1 else "")
             for label, keys in groups if keys]
    return [Reason("input", "", "; ".join(parts))] if parts else []


def upstream_changes(old: dict, now: Inspection, checksum: bool) -> list[Reason]:
    old = old.get("upstream", {})
    return [Reason("upstream", up, "changed") for up in sorted(now.upstream) if old.get(up) != now.upstream[up]]


def code_changes(old: dict, now: Inspection, checksum: bool) -> list[Reason]:
    old = old.get("code", {})
    return [Reason("code", f) for f in sorted(set(old) | set(now.code)) if old.get(f) != now.code.get(f)]


def version_changes(old: dict, now: Inspection, checksum: bool) -> list[Reason]:
    old = old.get("versions", {})
    return [Reason("version", lib, f"{old.get(lib)} -> {now.versions[lib]}")
            for lib in sorted(now.versions) if old.get(lib) != now.versions[lib]]


CHECKS = (param_changes, input_changes, upstream_changes, code_changes, version_changes)


@dataclass
class StageStatus:
    name: str
    state: str  # fresh | stale | missing
    causes: list[Reason] = field(default_factory=list)
    inspection: Inspection | None = None
    record: dict | None = None

    @property
    def reasons(self) -> list[str]:
        return [str(c) for c in self.causes]

    @property
    def forced(self) -> bool:
        return any(c.kind == "force" for c in self.causes)


# --- records ------------------------------------------------------------------------------

class Graph:
    """The stages of one cache under one config."""

    def __init__(self, cfg: Config, cache: Path, stages: dict[str, Stage], checksum: bool = False,
                 source: Path = SOURCE, digest: Callable[[Path], str] = sha256_of):
        self.digest = digest  # a file's content digest (the stage table's: model files by their tensors)
        self.stages = stages
        self.cfg = cfg
        self.cache = Path(cache)
        self.checksum = checksum
        self.source = Path(source)
        self._inputs: dict[str, dict] = {}

    def out_dir(self, name: str) -> Path:
        return self.cache / self.stages[name].folder(self.cfg)

    def record_path(self, name: str) -> Path:
        return self.cache / "stages" / f"{self.stages[name].record_name(self.cfg)}.json"

    def record(self, name: str) -> dict | None:
        try:
            return json.loads(self.record_path(name).read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return {"corrupt": True}

    def input_stats(self, name: str, content: bool) -> dict:
        """{name: stat} of the stage's external inputs (+ sha256 when `content`), computed once."""
        stage = self.stages[name]
        if stage.inputs is None:
            return {}
        if name not in self._inputs:
            self._inputs[name] = {k: stat_of(p) | {"path": p} for k, p in stage.inputs(self.cfg).items()}
        stats = self._inputs[name]
        if content:
            for st in stats.values():
                if "sha256" not in st and not st.get("missing"):
                    st["sha256"] = self.digest(st["path"])
        return {k: {f: v for f, v in st.items() if f != "path"} for k, st in stats.items()}

    def inspect(self, name: str) -> Inspection:
        stage = self.stages[name]
        upstream = {}
        for up in stage.upstream_of(self.cfg):
            rec = self.record(up)
            upstream[up] = rec.get("outputs_digest", "none") if rec else "none"
        return Inspection(params={k: self.cfg.get(k) for k in stage.keys(self.cfg)},
                          inputs=self.input_stats(name, self.checksum), upstream=upstream,
                          code=code_digests(stage.run, self.source), versions=library_versions(),
                          checksum=self.checksum)

    def status(self, name: str, upstream_states: dict[str, StageStatus] | None = None,
               verify: bool = False) -> StageStatus:
        insp = self.inspect(name)
        rec = self.record(name)
        if rec is None:
            out = self.out_dir(name)
            started = out.is_dir() and any(out.iterdir())
            return StageStatus(name, "missing", [Reason("missing", detail=(
                "not finished: an earlier run stopped before writing its record" if started
                else "never run in this cache"))], insp)
        if rec.get("corrupt"):
            return StageStatus(name, "stale", [Reason("record", detail=f"record {self.record_path(name)} "
                                                                        f"is unreadable")], insp)
        if rec.get("format") != RECORD_FORMAT:
            return StageStatus(name, "stale", [Reason("record", detail="record written by an older dlkdd")],
                               insp, rec)
        not_fresh = [Reason("upstream", up, f"is {st.state}") for up in self.stages[name].upstream_of(self.cfg)
                     if (st := (upstream_states or {}).get(up)) is not None and st.state != "fresh"]
        causes = list(not_fresh)
        for check in CHECKS:  # an upstream already named as not fresh is not named twice
            causes += [c for c in check(rec["components"], insp, self.checksum)
                       if not (c.kind == "upstream" and c.subject in {n.subject for n in not_fresh})]
        causes += self.check_outputs(rec, by_content=verify or self.checksum)
        return StageStatus(name, "stale" if causes else "fresh", causes, insp, rec)

    def check_outputs(self, rec: dict, by_content: bool) -> list[Reason]:
        problems = []
        for rel, meta in sorted(rec.get("outputs", {}).items()):
            path = self.cache / rel
            if not path.exists():
                problems.append(Reason("output", rel, "missing"))
            elif by_content and self.digest(path) != meta["sha256"]:
                problems.append(Reason("output", rel, "corrupted (sha256 differs from the record)"))
            elif not by_content and stat_of(path) != {"size": meta["size"], "mtime_ns": meta["mtime_ns"]}:
                problems.append(Reason("output", rel, "changed since it was written"))
        return problems

    def statuses(self, names: list[str] | None = None, verify: bool = False) -> dict[str, StageStatus]:
        out: dict[str, StageStatus] = {}
        for name in names or list(self.stages):
            out[name] = self.status(name, out, verify)
        return out

    def write_record(self, name: str, insp: Inspection, started: float, summary: dict) -> dict:
        """Digest every file in the stage's output folder and write the record atomically.

        Inputs are recorded with their sha256 too (one read, after the stage has read them all),
        so a later --checksum can tell a copied dataset from a changed one."""
        outputs = {}
        for path in sorted(p for p in self.out_dir(name).rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
            outputs[path.relative_to(self.cache).as_posix()] = stat_of(path) | {"sha256": self.digest(path)}
        rec = {
            "stage": name,
            "format": RECORD_FORMAT,
            "fingerprint": insp.fingerprint,
            "components": {"params": insp.params, "inputs": self.input_stats(name, content=True),
                           "upstream": insp.upstream, "code": insp.code, "versions": insp.versions},
            "params": self.cfg.to_dict(),
            "outputs": outputs,
            "outputs_digest": _hash({k: v["sha256"] for k, v in outputs.items()}),
            "started": datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"),
            "seconds": round(time.time() - started, 2),
            "summary": summary or {},
        }
        atomic.write_json(self.record_path(name), rec)
        return rec

    def restamp(self, name: str) -> bool:
        """After a fresh-by-content check (--checksum) of files copied with new mtimes: record
        their present size and mtime, so cheap checks read them as fresh again."""
        rec = self.record(name)
        now = self.input_stats(name, content=True)
        inputs = {k: now.get(k, v) for k, v in rec["components"]["inputs"].items()}
        outputs = {rel: {**meta, **stat_of(self.cache / rel)} for rel, meta in rec["outputs"].items()}
        if inputs == rec["components"]["inputs"] and outputs == rec["outputs"]:
            return False
        rec["components"]["inputs"], rec["outputs"] = inputs, outputs
        atomic.write_json(self.record_path(name), rec)
        return True

    def forget(self, name: str) -> None:
        """Drop the record before rerunning, so an interrupted run reads as missing, never fresh."""
        try:
            os.unlink(self.record_path(name))
        except FileNotFoundError:
            pass


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


Device = str | Callable[[], str]  # a callable is asked only when a stage runs (it may import torch)


def load_runner(stage: Stage) -> Callable[[Context], dict]:
    mod_name, func = stage.run.split(":")
    return getattr(importlib.import_module(mod_name), func)


def execute(graph: Graph, target: str, device: Device, console, force: bool = False,
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
        st = states[name] = _forced(st, force and name == target)
        if st.state == "fresh":
            restamped = graph.checksum and not dry_run and graph.restamp(name)
            console.print(f"[green]✓[/] {name}: fresh" + (" (same content, new mtimes recorded)" * restamped))
        elif dry_run:
            console.print(f"[yellow]•[/] {name}: would run ({'; '.join(st.reasons)})")
        else:
            console.print(f"[cyan]▶[/] {name}: running ({'; '.join(st.reasons)})")
            run_stage(graph, st, device, console, options)
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


def _forced(st: StageStatus, force: bool) -> StageStatus:
    if force and st.state == "fresh":
        return StageStatus(st.name, "stale", [Reason("force", st.name, "--force")], st.inspection, st.record)
    return st


def run_stage(graph: Graph, st: StageStatus, device: Device, console, options: dict | None = None,
              prepare: bool = True) -> dict:
    """Run one stage whose upstream is fresh and write its record (`prepare`: this process
    empties what a rerun must not reuse; under torchrun rank 0 did that for all)."""
    name = st.name
    runner = load_runner(graph.stages[name])
    out = graph.out_dir(name)
    if prepare:
        prepare_folder(graph, st)
    started = time.time()
    ctx = Context(graph, name, out, device() if callable(device) else device, console, dict(options or {}))
    try:
        summary = runner(ctx)
    except KeyboardInterrupt:
        console.print(f"[yellow]■[/] {name}: interrupted before it finished; no record was written, "
                      f"so it reads as missing until it is rerun")
        raise
    if not ranks.is_main():
        return summary  # under torchrun rank 0 alone writes the record
    graph.write_record(name, graph.inspect(name), started, summary)  # inspected after upstream records
    console.print(f"[green]✓[/] {name}: done in {time.time() - started:.1f} s")
    return summary


def prepare_folder(graph: Graph, st: StageStatus) -> None:
    """Forget the record; --force on a training stage starts from an empty folder (a finished
    checkpoint would otherwise just be reloaded; enhance re-verifies its shards instead)."""
    graph.forget(st.name)
    out = graph.out_dir(st.name)
    if st.forced and graph.stages[st.name].trains:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    atomic.remove_orphans(out)


def execute_distributed(graph: Graph, target: str, device: str, console, join: Callable[[], object],
                        force: bool = False, locks=None) -> list[str]:
    """Under torchrun: every rank runs the training stage `target`; rank 0 alone prepares its
    folder and writes its record.

    `join()` joins the process group (only when the stage must run) and returns it: an
    object with `barrier()` and `close()` (the training package's `DdpGroup`), so the engine
    itself never loads torch. Upstream stages must already be fresh: decoding and enhancing
    belong to dask, not to each of N training processes.
    """
    if not graph.stages[target].trains:
        trains = ", ".join(n for n, s in graph.stages.items() if s.trains)
        raise StageError(f"under torchrun only the training stages run ({trains}); "
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
    st = _forced(graph.status(target, states), force)
    if st.state == "fresh":
        console.print(f"[green]✓[/] {target}: fresh")
        return []
    group = join()
    try:
        group.barrier()  # every rank has read the record before rank 0 removes it
        if ranks.is_main():
            console.print(f"[cyan]▶[/] {target}: running on {ranks.world_size()} processes "
                          f"({'; '.join(st.reasons)})")
            prepare_folder(graph, st)
        group.barrier()  # ... and the folder is ready before any rank trains in it
        run_stage(graph, st, device, console, prepare=False)
    finally:
        group.close()
    return [target]
