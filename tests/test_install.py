"""The package installs under one name: `pip install` into a fresh venv, beside someone else's
top-level `models`, `pipeline` and `cli`, then `dlkdd --help` and a tiny stage from another folder.

Offline: no index (`--no-index`), no build isolation (setuptools comes from the running
environment), no dependencies fetched (the fresh venv sees the running environment's packages
through a .pth file, as a user's environment would already hold torch).
"""
import os
import shutil
import site
import subprocess
import sys
import sysconfig
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
    ours = [sysconfig.get_paths()["purelib"], *site.getsitepackages()]
    (Path(purelib) / "outer-env.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(ours)))
    return python, Path(purelib)


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
