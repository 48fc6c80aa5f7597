"""What a stage's record fingerprints besides its files: the hash of plain values, the code
it runs (the AST of its run function's module and of every module that module imports,
transitively, inside pipeline/ and models/) and the versions of the libraries that decode.
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
from importlib import metadata
from pathlib import Path

from ...errors import StageError

SOURCE = Path(__file__).resolve().parents[2]  # the source tree that holds pipeline/ and models/
PACKAGE = __name__.split(".")[0]  # "dlkdd": absolute imports inside the package start with it
CODE_DIRS = ("pipeline", "models")  # imports are followed inside these folders only
# Files (a folder when it ends in "/") that cannot change what a stage writes: config values
# are fingerprinted as params (a changed default is a changed param), and the engine decides
# whether a stage runs and how its files are written and shown, never what they hold.
# A caller adds its own (the stage table: `neutral=`).
NEUTRAL = ("pipeline/config.py", "pipeline/engine/")
VERSIONED = ("torch", "decord", "h5py")


def hash_json(obj) -> str:
    """sha256 of `obj` as canonical JSON (keys sorted; what JSON cannot hold, by its str)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def library_versions() -> dict:
    out = {}
    for lib in VERSIONED:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "absent"
    return out


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


def _counts(rel: str, neutral: tuple[str, ...]) -> bool:
    """Whether the file `rel` (relative to the source tree) is part of a stage's code."""
    if rel.split("/")[0] not in CODE_DIRS:
        return False
    return not any(rel == n or (n.endswith("/") and rel.startswith(n)) for n in (*NEUTRAL, *neutral))


def _start_file(source: Path, run: str) -> Path:
    module = run.split(":")[0]
    if module.split(".")[0] == PACKAGE:
        start = _module_file(source, module.split(".")[1:])
    else:  # a module outside the package (the tests' stand-ins)
        spec = importlib.util.find_spec(module)
        start = Path(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None
    if start is None:
        raise StageError(f"stage function {run}: module not found")
    return start


def code_files(run: str, source: Path = SOURCE, neutral: tuple[str, ...] = ()) -> dict[str, Path]:
    """{shown name: file} of the run function's module and all it imports inside pipeline/ and
    models/ but the `NEUTRAL` files and `neutral` (shown relative to the source tree; a module
    outside it by its name)."""
    start = _start_file(source, run)
    module = run.split(":")[0]
    seen: dict[Path, str] = {start: _shown(source, start, module)}
    todo = [start]
    while todo:
        path = todo.pop()
        for dep in _imported_files(source, path, _parse(path)[1]):
            rel = dep.relative_to(source).as_posix()
            if dep not in seen and _counts(rel, neutral):
                seen[dep] = rel
                todo.append(dep)
    return {name: path for path, name in sorted(seen.items(), key=lambda kv: kv[1])}


def _shown(source: Path, path: Path, module: str) -> str:
    try:
        return path.relative_to(source).as_posix()
    except ValueError:
        return module


def code_digests(run: str, source: Path = SOURCE, neutral: tuple[str, ...] = ()) -> dict[str, str]:
    return {name: _parse(path)[0] for name, path in code_files(run, source, neutral).items()}
