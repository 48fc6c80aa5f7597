"""The command line: help texts, status on an empty cache, one-line errors, a tiny end-to-end run."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from videofix import make_video_dataset

from dlkdd.cli import cli
from dlkdd.pipeline.stages.table import STAGES

VERBS = [*STAGES, "run", "status", "preview", "predict", "export", "sample", "models"]
TINY = ["--set", "data.frames=4", "--set", "data.short_side=32", "--set", "data.crop=24",
        "--set", "enhancer.kind=gamma", "--set", "enhance.workers=0",
        "--set", "teacher.model=r3d_tiny", "--set", "teacher.epochs=1", "--set", "teacher.batch_size=4",
        "--set", "student.epochs=1", "--set", "student.batch_size=4", "--set", "data.views=2"]


def invoke(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_help_explains_every_option():
    top = invoke("--help")
    assert top.exit_code == 0
    for verb in VERBS:
        assert verb in top.output
        result = invoke(verb, "--help")
        assert result.exit_code == 0, verb
        options = [line.split()[0] for line in result.output.splitlines() if line.strip().startswith("-")]
        assert options, verb
        for line in result.output.split("Options:")[1].splitlines():
            if line.strip().startswith("--") and len(line.split()) < 2:
                pytest.fail(f"{verb}: option without help: {line!r}")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    return make_video_dataset(tmp_path_factory.mktemp("videos"), classes=2, train=3, test=1, frames=10)


def test_status_on_an_empty_cache_lists_every_stage_missing(videos, tmp_path):
    result = invoke("--data", str(videos), "--cache", str(tmp_path / "c"), "status", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)["stages"]
    assert [r["stage"] for r in rows] == ["pretrain", "enhancer", "enhance", "teacher", "soft-labels", "baseline",
                                         "student", "evaluate"]
    assert {r["state"] for r in rows} == {"missing"}
    assert not (tmp_path / "c").exists()  # status writes nothing


def test_status_on_the_bundled_sample_needs_no_options(tmp_path):
    if not (Path(__file__).resolve().parents[1] / "data" / "sample" / "splits").exists():
        pytest.skip("bundled sample not generated")
    result = invoke("--cache", str(tmp_path / "c"), "status")
    assert result.exit_code == 0 and "missing" in result.output


@pytest.mark.parametrize("args, needle", [
    (["--set", "student.alpha=2", "status"], "student.alpha: must be in [0, 1], got 2.0"),
    (["--set", "student.nope=1", "status"], "unknown config key 'student.nope'"),
    (["--data", "/nonexistent/dlkdd", "status"], "/nonexistent/dlkdd"),
])
def test_user_mistakes_are_one_line_errors(args, needle, tmp_path):
    result = CliRunner().invoke(cli, ["--cache", str(tmp_path), *args])
    assert result.exit_code != 0
    assert needle in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1


def test_dry_run_says_what_would_run_and_writes_nothing(videos, tmp_path):
    result = CliRunner().invoke(cli, ["--data", str(videos), "--cache", str(tmp_path / "c"), *TINY,
                                      "soft-labels", "--dry-run"])
    assert result.exit_code == 0
    lines = [line for line in result.output.splitlines() if "would run" in line]
    # every stage soft-labels needs, in run order, each with its reason; nothing after it
    assert [line.split(":")[0].split()[-1] for line in lines] == ["enhancer", "enhance", "teacher", "soft-labels"]
    assert all("(never run in this cache)" in line for line in lines), result.output
    cache = tmp_path / "c"
    assert not cache.exists() or not [p for p in cache.rglob("*") if p.is_file()]  # nothing written


@pytest.mark.slow
def test_soft_labels_brings_upstream_up_to_date_then_nothing_reruns(videos, tmp_path):
    base = [sys.executable, "-m", "dlkdd.cli", "--data", str(videos), "--cache", str(tmp_path / "c"), *TINY]
    env = {**os.environ, "COLUMNS": "200"}
    repo = Path(__file__).resolve().parents[1]
    first = subprocess.run([*base, "soft-labels", "--verify", "5"], capture_output=True, text=True,
                           cwd=repo, env=env)
    assert first.returncode == 0, first.stderr
    for stage in ("enhancer", "enhance", "teacher", "soft-labels"):
        assert f"{stage}: running" in first.stderr
    assert "verified 5 cached" in first.stdout
    second = subprocess.run([*base, "soft-labels"], capture_output=True, text=True, cwd=repo, env=env)
    assert second.returncode == 0
    assert "running" not in second.stderr
    assert "nothing to do: soft-labels and everything upstream of it are fresh" in second.stderr
    # a sweep trains a new student only
    sweep = subprocess.run([*base, "--set", "student.alpha=0.3", "student"], capture_output=True,
                           text=True, cwd=repo, env=env)
    assert sweep.returncode == 0, sweep.stderr
    assert "student: running" in sweep.stderr and "teacher: running" not in sweep.stderr
    # preview of cached clips writes a PNG
    out = tmp_path / "p.png"
    prev = subprocess.run([*base, "preview", "--out", str(out)], capture_output=True, text=True, cwd=repo,
                          env=env)
    assert prev.returncode == 0, prev.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in prev.stdout


@pytest.mark.slow
def test_teacher_under_torchrun_two_processes(videos, tmp_path):
    base = ["--data", str(videos), "--cache", str(tmp_path / "c"), *TINY, "--set", "teacher.epochs=2"]
    assert CliRunner().invoke(cli, [*base, "enhance"]).exit_code == 0
    torchrun = Path(sys.executable).with_name("torchrun")
    repo = Path(__file__).resolve().parents[1]
    early = subprocess.run([str(torchrun), "--nproc-per-node", "2", "-m", "dlkdd.cli", *base, "student"],
                           capture_output=True, text=True, cwd=repo)
    assert early.returncode != 0 and "upstream stages must be fresh: teacher is missing" in early.stderr
    done = subprocess.run([str(torchrun), "--nproc-per-node", "2", "-m", "dlkdd.cli", *base, "teacher"],
                          capture_output=True, text=True, cwd=repo)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "running on 2 processes" in done.stderr
    metrics = (tmp_path / "c" / "teacher" / "metrics.jsonl").read_text().splitlines()
    assert len(metrics) == 2
    status = json.loads(invoke(*base, "status", "--json").output)["stages"]
    assert {r["stage"]: r["state"] for r in status}["teacher"] == "fresh"
    # --force on the fresh teacher retrains it from nothing (rank 0 empties the folder for all)
    first = json.loads((tmp_path / "c" / "stages" / "teacher.json").read_text())
    (tmp_path / "c" / "teacher" / "left-from-the-last-run.txt").write_text("x")
    forced = subprocess.run([str(torchrun), "--nproc-per-node", "2", "-m", "dlkdd.cli", *base, "teacher", "--force"],
                            capture_output=True, text=True, cwd=repo)
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert "running on 2 processes (--force)" in forced.stderr
    again = json.loads((tmp_path / "c" / "stages" / "teacher.json").read_text())
    assert again["summary"]["epochs_run"] == 2 and again["summary"]["resumed_from"] is None
    assert again["started"] >= first["started"]
    assert not (tmp_path / "c" / "teacher" / "left-from-the-last-run.txt").exists()
    assert len((tmp_path / "c" / "teacher" / "metrics.jsonl").read_text().splitlines()) == 2
    status = json.loads(invoke(*base, "status", "--json").output)["stages"]
    assert {r["stage"]: r["state"] for r in status}["teacher"] == "fresh"


@pytest.mark.slow
def test_run_logged_to_a_file_keeps_every_epoch_on_one_line(videos, tmp_path):
    """`dlkdd run > log.txt 2>&1`: no terminal, no COLUMNS; every epoch's figures on one line,
    one line per stage event, no progress-bar fragments or control codes."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("COLUMNS", "LINES", "FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        proc = subprocess.run([sys.executable, "-m", "dlkdd.cli", "--data", str(videos), "--cache",
                               str(tmp_path / "c"), "--device", "cpu", *TINY, "--set", "teacher.epochs=2",
                               "--set", "student.epochs=2", "run"],
                              stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, timeout=600)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "\x1b" not in text and "\r" not in text and "━" not in text and "ETA" not in text
    figures = (r"train loss \d+\.\d{4} acc \d+\.\d% +val top1 \d+\.\d% top5 \d+\.\d% +"
               r"lr \d\.\d\de[-+]\d\d +\d+\.\d clips/s")
    lines = text.splitlines()
    log_part = text.split("# DL-KDD results")[0].splitlines()
    assert log_part and "" not in log_part  # a live bar leaves blank lines behind in a file
    for desc in ("teacher", "baseline", "student"):
        epoch_lines = [line for line in lines if line.startswith(f"{desc} epoch ")]
        assert len(epoch_lines) == 2, (desc, text)
        for n, line in enumerate(epoch_lines, 1):
            assert re.fullmatch(rf"{desc} epoch {n}/2 +{figures}", line), line
    assert max(len(line) for line in lines) > 80  # long lines are kept whole, not wrapped at 80 columns
    for stage in ("enhancer", "enhance", "teacher", "soft-labels", "baseline", "student", "evaluate"):
        assert sum(re.fullmatch(rf"▶ {stage}: running \(.+\)", line) is not None for line in lines) == 1, stage
        assert sum(re.fullmatch(rf"✓ {stage}: done in \d+\.\d s", line) is not None for line in lines) == 1, stage


def test_status_prints_tables_on_a_terminal_and_one_line_per_stage_in_a_log(capsys, monkeypatch):
    from dlkdd.pipeline.engine.status_view import print_status
    monkeypatch.setenv("COLUMNS", "120")  # rich's width off a terminal: wide enough that no reason folds
    state = {"stages": [{"stage": "teacher", "state": "stale", "reasons": ["teacher.lr changed: 0.003 -> 0.001"],
                         "output": "teacher", "finished": "2026-12-04T19:04:00", "seconds": 45.0}],
             "student_variants": [{"variant": "a0.5-T4-x", "alpha": 0.5, "temperature": 4.0, "top1": 25.0,
                                   "top5": None, "started": "2026-12-04T19:05:00"}]}
    print_status("/c", state, terminal=True)
    table = capsys.readouterr().out
    assert "┃ stage" in table and "teacher.lr" in table and "2026-12-04 19:04 (45 s)" in table
    assert "student variants in this cache" in table and "a0.5-T4-x" in table
    print_status("/c", state, terminal=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "dlkdd cache /c"
    assert lines[1].split() == ["teacher", "stale", "2026-12-04", "19:04", "(45", "s)", "teacher", "teacher.lr",
                                "changed:", "0.003", "->", "0.001"]
    assert lines[2].startswith("student variant a0.5-T4-x") and "top-5 -" in lines[2]
