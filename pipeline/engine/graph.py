"""The stages of one cache under one config: their records (`stages/<stage>.json`, written
atomically after a stage's outputs are complete), what each stage is made of now, and whether
it is fresh. Nothing here depends on where the dataset or the cache lies, so both can be moved.
Torch-free at import: `dlkdd status` never loads torch.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from ..config import Config
from . import atomic
from .digest import sha256_of, stat_of
from .fingerprint import SOURCE, code_digests, hash_json, library_versions
from .stage import Stage
from .status import CHECKS, Inspection, Reason, StageStatus

RECORD_FORMAT = 2


class Graph:
    """The stages of one cache under one config.

    digest: a file's content digest (the stage table's: model files by their tensors).
    neutral: files, relative to `source`, that never count as a stage's code besides the
    engine's own (`fingerprint.NEUTRAL`): the stage table's module, say.
    """

    def __init__(self, cfg: Config, cache: Path, stages: dict[str, Stage], checksum: bool = False,
                 source: Path = SOURCE, digest: Callable[[Path], str] = sha256_of, neutral: tuple[str, ...] = ()):
        self.digest = digest
        self.stages = stages
        self.cfg = cfg
        self.cache = Path(cache)
        self.checksum = checksum
        self.source = Path(source)
        self.neutral = tuple(neutral)
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
        return Inspection(params=stage.param_values(self.cfg),
                          inputs=self.input_stats(name, self.checksum), upstream=upstream,
                          code=code_digests(stage.run, self.source, self.neutral), versions=library_versions(),
                          checksum=self.checksum)

    def status(self, name: str, upstream_states: dict[str, StageStatus] | None = None,
               verify: bool = False) -> StageStatus:
        insp = self.inspect(name)
        rec = self.record(name)
        unusable = self._unusable(name, rec)
        if unusable is not None:
            return StageStatus(name, "missing" if rec is None else "stale", [unusable], insp,
                               rec if rec is not None and not rec.get("corrupt") else None)
        not_fresh = [Reason("upstream", up, f"is {st.state}") for up in self.stages[name].upstream_of(self.cfg)
                     if (st := (upstream_states or {}).get(up)) is not None and st.state != "fresh"]
        causes = list(not_fresh)
        for check in CHECKS:  # an upstream already named as not fresh is not named twice
            causes += [c for c in check(rec["components"], insp, self.checksum)
                       if not (c.kind == "upstream" and c.subject in {n.subject for n in not_fresh})]
        causes += self.check_outputs(rec, by_content=verify or self.checksum)
        return StageStatus(name, "stale" if causes else "fresh", causes, insp, rec)

    def _unusable(self, name: str, rec: dict | None) -> Reason | None:
        """Why the record cannot be compared at all: there is none, it is unreadable or too old."""
        if rec is None:
            started = bool(self.stages[name].own_files(self.out_dir(name)))
            return Reason("missing", detail="not finished: an earlier run stopped before writing its record"
                          if started else "never run in this cache")
        if rec.get("corrupt"):
            return Reason("record", detail=f"record {self.record_path(name)} is unreadable")
        if rec.get("format") != RECORD_FORMAT:
            return Reason("record", detail="record written by an older dlkdd")
        return None

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
            "outputs_digest": hash_json({k: v["sha256"] for k, v in outputs.items()}),
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
