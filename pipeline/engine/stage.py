"""A stage as the table declares it: its upstream, the config keys it reads, its folder.

The table itself (`pipeline.stages.table`) is handed to the engine; this module only says
what a row means and in which order a target's stages run.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from ..config import Config

# Settings that change how fast a stage runs, never what it writes.
# (skip_missing too: which videos are missing is part of the inputs already.) Not enhance.threads_per_worker:
# torch's float sums depend on the thread count, and a zero_dce++ shard made with 1 thread differs from one
# made with 2 (a 1x1 conv's ~3e-6 difference flips a uint8 now and then), so it is a param of `enhance`:
# a resumed stage never mixes shards made with different counts.
SPEED_ONLY = {"num_workers", "workers", "scheduler", "batch_frames", "strict",
              "skip_missing", "cluster_after", "compile", "channels_last"}

ParamSpec = str | Callable[[Config], list]


@dataclass(frozen=True)
class Stage:
    """One stage, declared by keyword (see the table in `pipeline.stages.table`).

    upstream: stage names, or a function cfg -> names for what only some configs read.
    params: config keys it reads: "section.key", "section.*" (the section's keys but the
    speed-only ones), "-section.key" (drop one), or a function cfg -> keys.
    outputs: its folder in the cache, or a function cfg -> folder (one folder per variant).
    inputs: a function cfg -> {name relative to the dataset root: path} of external files.
    derived: a function cfg -> {param key: value} that replaces those params' raw config values
    in the fingerprint by what they mean (a pretrained source's identity, not its path).
    trains: it trains a model, resuming from its folder: --force empties the folder first,
    and under torchrun it is the stage every process runs.
    shared: name patterns (fnmatch) of files other commands keep in its folder (`dlkdd study`'s in
    report/): a folder holding only those reads as never run, not as a run that stopped.
    """
    name: str
    run: str  # "dlkdd.pipeline.module:function", imported only when the stage runs
    doc: str
    upstream: tuple[str | Callable[[Config], tuple], ...] = ()
    params: tuple[ParamSpec, ...] = ()
    outputs: str | Callable[[Config], str] = ""
    inputs: Callable[[Config], dict] | None = None
    derived: Callable[[Config], dict] | None = None
    trains: bool = False
    shared: tuple[str, ...] = ()

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

    def param_values(self, cfg: Config) -> dict:
        """{key: value} of the params the fingerprint compares (derived values replace raw ones)."""
        values = {k: cfg.get(k) for k in self.keys(cfg)}
        return {**values, **(self.derived(cfg) if self.derived is not None else {})}

    def own_files(self, folder: Path) -> list[Path]:
        """The entries of `folder` this stage wrote (all but the `shared` ones)."""
        if not folder.is_dir():
            return []
        return [p for p in folder.iterdir() if not any(fnmatch(p.name, pat) for pat in self.shared)]

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
