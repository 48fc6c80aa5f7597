"""Running the graph: bring a target and its upstream up to date (only what is stale), one
stage at a time, each writing its record once its outputs are complete; under torchrun, the
one training stage on every rank. Output locks keep other commands from rewriting what runs read.
"""
from __future__ import annotations

import copy
import importlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import StageError
from ..config import Config
from . import atomic, progress, ranks
from .graph import Graph
from .stage import Stage, upstream_closure
from .status import Reason, StageStatus


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
            dry_run: bool = False, options: dict | None = None, locks=None, run_line: bool = False) -> list[str]:
    """Bring `target` and its upstream up to date; return the names of stages that ran.

    `locks` (a lock.OutputLocks) is held shared on every output read and exclusive on the
    one being written, so other commands may read the same fresh upstream meanwhile.
    `run_line`: on a terminal, one line for the whole run under the stages' bars (stage k of n,
    elapsed, ETA); nothing in a log.
    """
    ran: list[str] = []
    states: dict[str, StageStatus] = {}
    line = _run_line(graph, target, console, force) if run_line and not dry_run else progress.RunLine(console, [])
    with line:
        for name in upstream_closure(target, graph.stages, graph.cfg):
            st = graph.status(name, states)
            if locks is not None and not dry_run:
                st = _lock_output(graph, name, st, states, locks, forced=force and name == target)
            st = states[name] = _forced(st, force and name == target)
            if st.state == "fresh":
                line.skip(name)
                restamped = graph.checksum and not dry_run and graph.restamp(name)
                console.print(f"[green]✓[/] {name}: fresh" + (" (same content, new mtimes recorded)" * restamped))
            elif dry_run:
                console.print(f"[yellow]•[/] {name}: would run ({'; '.join(st.reasons)})")
            else:
                console.print(f"[cyan]▶[/] {name}: running ({'; '.join(st.reasons)})")
                line.begin(name)
                run_one(graph, st, device, console, options)
                line.end(name)
                if locks is not None:
                    locks.share(output_key(graph, name))  # written: downstream stages (and others) read it
                states[name] = graph.status(name, states)
                ran.append(name)
    return ran


def _run_line(graph: Graph, target: str, console, force: bool) -> progress.RunLine:
    """The run's line (shown on a terminal only): the stages expected to run, each with what it
    took when it last ran here. Planned like --dry-run, by size and mtime even under --checksum
    (hashing every output twice for a progress line would cost more than the line is worth)."""
    if not progress.shows_live(console):
        return progress.RunLine(console, [])
    plan = copy.copy(graph)
    plan.checksum = False
    states = plan.statuses(upstream_closure(target, graph.stages, graph.cfg))
    todo = [n for n, st in states.items() if st.state != "fresh" or (force and n == target)]
    return progress.RunLine(console, todo, {n: (states[n].record or {}).get("seconds") for n in todo})


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


def run_one(graph: Graph, st: StageStatus, device: Device, console, options: dict | None = None,
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
    states = _fresh_upstream(graph, target, locks)
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
        run_one(graph, st, device, console, prepare=False)
    finally:
        group.close()
    return [target]


def _fresh_upstream(graph: Graph, target: str, locks) -> dict[str, StageStatus]:
    """The states of the training stage `target`'s upstream, each fresh (or a one-line error)."""
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
    return states
