"""benchmarks/first_run.sh's arguments, cheaply: --dry-run and --runs 0 time nothing."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "first_run.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def first_run(*args, cwd=None):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def test_dry_run_says_what_it_would_do_and_does_nothing(tmp_path):
    work = tmp_path / "work"
    r = first_run("--dry-run", "--runs", "5", "--work", str(work))
    assert r.returncode == 0, r.stderr
    assert f"git clone {ROOT}" in r.stdout and "pip install torch==2.13.0 -e CLONE" in r.stdout
    assert "runs: 5 x" in r.stdout and "run), each on an empty cache" in r.stdout
    assert not work.exists()


def test_given_clone_and_venv_are_used_not_made(tmp_path):
    r = first_run("--dry-run", "--clone", str(ROOT), "--venv", sys.prefix)
    assert r.returncode == 0, r.stderr
    assert f"clone: {ROOT} (given)" in r.stdout and f"venv: {sys.prefix} (given)" in r.stdout
    assert "git clone" not in r.stdout and "pip install" not in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--runs", "x"], "--runs x: expected a whole number >= 0"),
    (["--runs"], "--runs needs a number"),
    (["--bogus"], "unknown argument: --bogus"),
    (["--clone", "/nonexistent/clone"], "--clone /nonexistent/clone: no such folder"),
    (["--venv", "/nonexistent/venv"], "--venv /nonexistent/venv: no bin/python in it"),
])
def test_bad_arguments_are_one_line_and_exit_2(args, message):
    r = first_run(*args)
    assert r.returncode == 2 and r.stderr.strip() == f"first_run: {message}" + (" (see --help)" * ("--bogus" in args))


def test_runs_0_checks_the_setup_and_prints_the_load_but_times_nothing(tmp_path):
    if not (Path(sys.prefix) / "bin" / "dlkdd").exists():
        pytest.skip("dlkdd is not installed in this environment's bin/")
    r = first_run("--runs", "0", "--clone", str(ROOT), "--venv", sys.prefix, "--work", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"clone {ROOT} at ") and "torch" in lines[0]
    assert lines[1].startswith("start ") and "load average" in lines[1]
    assert lines[2].startswith("end ") and "load average" in lines[2]
    assert "median" not in r.stdout and not list((tmp_path / "w").glob("cache-*"))
