"""The package installs under one name: `pip install` into a fresh venv, beside someone else's
top-level `models`, `pipeline` and `cli`, then `dlkdd --help` and a tiny stage from another folder;
and a wheel built from a clean clone of HEAD (committed files only) holds and runs every module.

Offline: no index (`--no-index`), no build isolation (setuptools comes from the running
environment), no dependencies fetched (the fresh venv sees the running environment's packages
through a .pth file, as a user's environment would already hold torch).
"""
import importlib
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from videofix import make_video_dataset

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("__init__.py", "cli.py", "errors.py", "pipeline", "models", "setup.cfg", "pyproject.toml", "README.md")
# Someone else's top-level modules of the same names: importing any of them is a failure.
DECOYS = {"models/__init__.py": "raise ImportError('a top-level `models` was imported: not dlkdd.models')\n",
          "pipeline/__init__.py": "raise ImportError('a top-level `pipeline` was imported')\n",
          "cli.py": "raise ImportError('a top-level `cli` was imported: not dlkdd.cli')\n"}


def _copy_sources(dest: Path) -> Path:
    """The repository's package sources, outside it (a build writes build/ and *.egg-info beside them)."""
    dest.mkdir()
    for name in SOURCES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, dest / name)
    return dest


def _fresh_venv(path: Path) -> tuple[Path, Path]:
    """(python, site-packages) of a new venv that also sees this interpreter's packages."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    _lend_environment(Path(purelib))
    return python, Path(purelib)


def _lend_environment(purelib: Path) -> None:
    """Let a venv see this interpreter's packages (torch, numpy, ...) as they are, through a .pth file."""
    ours = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (purelib / "outer-env.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(ours)))


@pytest.mark.slow
def test_installed_package_runs_beside_other_top_level_models_and_cli(tmp_path):
    src = _copy_sources(tmp_path / "src")
    python, purelib = _fresh_venv(tmp_path / "venv")
    decoys = tmp_path / "decoys"
    for rel, text in DECOYS.items():
        (decoys / rel).parent.mkdir(parents=True, exist_ok=True)
        (decoys / rel).write_text(text)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_INDEX_URL")}
    env.update(OMP_NUM_THREADS="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index",
                              "--no-build-isolation", str(src)],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    installed = sorted(p.name for p in purelib.iterdir() if not p.name.endswith((".dist-info", ".pth")))
    assert installed == ["dlkdd"], installed  # nothing else at the top level of the environment

    work = tmp_path / "elsewhere"
    work.mkdir()
    env["PYTHONPATH"] = str(decoys)  # the decoys come first on the path
    where = subprocess.run([str(python), "-c", "import models\n"], capture_output=True, text=True, env=env,
                           cwd=work)
    assert "a top-level `models` was imported" in where.stderr  # the decoys are really in the way
    script = python.parent / "dlkdd"
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True, env=env, cwd=work,
                            timeout=120)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "Usage: dlkdd" in helped.stdout and "enhance" in helped.stdout

    data = make_video_dataset(work / "videos", classes=2, train=2, test=1, frames=8)
    stage = subprocess.run([str(script), "--data", str(data), "--cache", "cache", "--device", "cpu",
                            "--set", "enhancer.kind=gamma", "--set", "enhance.workers=0",
                            "--set", "data.frames=4", "--set", "data.short_side=32", "--set", "data.crop=24",
                            "enhance"], capture_output=True, text=True, env=env, cwd=work, timeout=300)
    assert stage.returncode == 0, stage.stderr[-3000:]
    assert "enhance: done" in stage.stderr and (work / "cache" / "clips" / "index.json").is_file()
    origin = subprocess.run([str(python), "-c", "import dlkdd.pipeline.stages.enhance as m; print(m.__file__)"],
                            capture_output=True, text=True, env=env, cwd=work)
    assert Path(origin.stdout.strip()).is_relative_to(purelib), origin  # the installed copy ran


# ----------------------------------------------------------------------------- a wheel of a clean checkout

# What the torch-free checks need in the fresh venv besides the wheel: pip to install it, and
# what `dlkdd --help` imports.
HELP_NEEDS = ("pip", "click", "rich")
TORCH_FREE = ("dlkdd.cli", "dlkdd.pipeline.engine.graph", "dlkdd.pipeline.stages.table")  # and what they import


def _clean_checkout(dest: Path) -> Path:
    """HEAD of the repository, as a fresh clone has it: committed files only."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", str(REPO), str(dest)], check=True, timeout=120,
                   capture_output=True)
    return dest


def _build_wheel(src: Path, out: Path, env: dict) -> Path:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                            "--wheel-dir", str(out), str(src)], capture_output=True, text=True, env=env,
                           cwd=out.parent, timeout=300)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = out.glob("dlkdd-*.whl")
    return wheel


def _bare_venv(path: Path, needs: tuple[str, ...]) -> tuple[Path, Path]:
    """(python, site-packages) of a new venv (no system site-packages) that sees, of this
    environment, only the top-level packages `needs` (through a .pth file naming a folder of links)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=120)
    python = path / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    lent = path.parent / "lent"
    lent.mkdir()
    for name in needs:
        module = importlib.import_module(name)
        (lent / name).symlink_to(Path(module.__file__).parent, target_is_directory=True)
    (purelib / "lent.pth").write_text(f"{lent}\n")
    return python, purelib


def _committed_modules(checkout: Path) -> set[str]:
    """The package's modules in the checkout, as the wheel must name them (dlkdd/...)."""
    files = subprocess.run(["git", "ls-files", "*.py"], capture_output=True, text=True, check=True,
                           cwd=checkout).stdout.split()
    top = {"__init__.py", "cli.py", "errors.py"}
    return {f"dlkdd/{f}" for f in files if f in top or f.split("/")[0] in ("pipeline", "models")}


@pytest.mark.slow
def test_wheel_of_a_clean_checkout_installs_alone_and_runs(tmp_path):
    """`pip wheel` of HEAD as cloned, installed into a venv that holds nothing else but pip, click
    and rich: every committed module and the bundled sample are in the wheel, the torch-free modules
    and `dlkdd --help` run from it, and with the running environment's packages lent too, every
    module imports and a stage without --data reads the installed sample."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_INDEX_URL")}
    env.update(OMP_NUM_THREADS="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    checkout = _clean_checkout(tmp_path / "checkout")
    wheel = _build_wheel(checkout, tmp_path / "dist", env)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    packed = {n for n in names if n.endswith(".py")}
    assert packed == _committed_modules(checkout), sorted(packed ^ _committed_modules(checkout))
    sample = checkout / "data" / "sample"  # the bundled sample ships too: `dlkdd run` needs no --data
    shipped = {f"dlkdd/data/sample/{p.relative_to(sample).as_posix()}" for p in sample.rglob("*") if p.is_file()}
    assert len(shipped) > 500 and shipped <= names, sorted(shipped - names)[:5]

    python, purelib = _bare_venv(tmp_path / "venv", HELP_NEEDS)
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    code = ("import importlib, importlib.util, sys\n"
            f"for name in {TORCH_FREE!r}:\n    importlib.import_module(name)\n"
            "assert importlib.util.find_spec('torch') is None  # nothing but the wheel, pip, click and rich\n"
            "print(sys.modules['dlkdd'].__file__)\n")
    imported = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, cwd=work)
    assert imported.returncode == 0, imported.stderr[-3000:]
    assert Path(imported.stdout.strip()).is_relative_to(purelib), imported.stdout
    helped = subprocess.run([str(python.parent / "dlkdd"), "--help"], capture_output=True, text=True, env=env,
                            cwd=work, timeout=120)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "Usage: dlkdd" in helped.stdout and "soft-labels" in helped.stdout

    _lend_environment(purelib)
    code = ("import importlib, pkgutil, dlkdd\n"
            "names = [m.name for m in pkgutil.walk_packages(dlkdd.__path__, 'dlkdd.')]\n"
            "for name in names:\n    importlib.import_module(name)\n"
            "print(len(names), dlkdd.__file__)\n")
    everything = subprocess.run([str(python), "-c", code], capture_output=True, text=True, env=env, cwd=work,
                                timeout=300)
    assert everything.returncode == 0, everything.stderr[-3000:]
    count, where = everything.stdout.split()
    assert int(count) > 50 and Path(where).is_relative_to(purelib), everything.stdout

    # without --data a stage reads the sample the wheel installed (the enhancer fit decodes its dark frames)
    fit = subprocess.run([str(python.parent / "dlkdd"), "--cache", "cache", "--device", "cpu",
                          "--set", "enhancer.steps=2", "--set", "enhancer.frames_per_video=1", "enhancer"],
                         capture_output=True, text=True, env=env, cwd=work, timeout=600)
    assert fit.returncode == 0, fit.stderr[-3000:]
    assert "dark training frames" in fit.stderr and "✓ enhancer: done" in fit.stderr, fit.stderr[-3000:]
