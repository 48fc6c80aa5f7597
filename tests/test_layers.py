"""The layering contract (pyproject.toml's [tool.importlinter]) holds, and it would catch a break.

The contract is checked on the import graph of every import, deferred ones inside functions
included: the engine imports no ML code or torch, datasets never import training, models never
import the pipeline, nothing imports the CLI, and no two siblings import each other at any depth.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.relfix import REPO

LINT = Path(sys.executable).parent / "lint-imports"
pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is in the test extra")


def lint(root: Path, package_parent: Path | None = None) -> subprocess.CompletedProcess:
    """lint-imports with `root`'s pyproject.toml, importing `dlkdd` from `package_parent` (default:
    where this environment imports it from)."""
    env = {**os.environ, **({"PYTHONPATH": str(package_parent)} if package_parent else {})}
    return subprocess.run([str(LINT), "--no-cache"], cwd=root, env=env, capture_output=True, text=True,
                          timeout=120)


def copy_package(tmp_path: Path) -> Path:
    """The package's source as an importable `dlkdd/` folder under tmp_path (pyproject.toml beside it)."""
    dest = tmp_path / "dlkdd"
    for name in ("pipeline", "models"):
        shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    for path in REPO.glob("*.py"):
        if path.name != "setup.py":
            shutil.copy(path, dest / path.name)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return dest


def test_the_layering_contract_holds():
    out = lint(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("module, planted, contract", [
    # a deferred import in a function counts like one at the top
    ("pipeline/engine/lock.py", "def _planted():\n    from ..stages import table  # noqa\n",
     "pipeline layers"),
    ("pipeline/engine/atomic.py", "import torch  # noqa\n", "the engine knows nothing of ML"),
    ("pipeline/datasets/views.py", "from ..training import loop  # noqa\n", "pipeline layers"),
    ("models/profile.py", "from ..pipeline import config  # noqa\n", "models are nn.Modules only"),
    ("pipeline/stages/teacher.py", "from ... import cli  # noqa\n", "nothing imports the CLI"),
    # two modules of one sub-package that import each other
    ("pipeline/engine/digest.py", "from . import graph  # noqa\n", "no import cycles"),
])
def test_a_planted_break_is_caught(tmp_path, module, planted, contract):
    dest = copy_package(tmp_path)
    path = dest / module
    path.write_text(path.read_text() + "\n\n" + planted)
    out = lint(tmp_path, tmp_path)
    assert out.returncode != 0, out.stdout
    broken = [line for line in out.stdout.splitlines() if line.endswith("BROKEN")]
    assert any(line.startswith(contract) for line in broken), out.stdout
