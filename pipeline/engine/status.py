"""Why a stage is stale: what it is made of now (`Inspection`), one named check per component
(`CHECKS`) comparing that with its record, and the verdict (`StageStatus`) with its `Reason`s.

The components, each compared by its own check:

- param:    the config values the stage reads (and only those);
- input:    its external files, named relative to the dataset root, by size and mtime
            (by sha256 under --checksum; the record keeps all three);
- upstream: the output digests of its upstream stages;
- code:     the AST of its code (see `fingerprint.code_files`);
- version:  torch, decord and h5py;
- output:   every recorded output is there, unchanged (size and mtime; content under
            --checksum or --verify), checked against the files by `Graph.check_outputs`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .fingerprint import hash_json


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
        return hash_json([self.params, ids, self.upstream, self.code, self.versions])


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
    return "<unset>" if value is None else "''" if value == "" else str(value)


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
