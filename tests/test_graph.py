"""The real stage graph: the code each stage depends on is derived from imports; caches move;
model files are compared by their tensors; `status` needs no torch and reads well anywhere."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dlkdd.cli import cli
from dlkdd.errors import UserError
from dlkdd.pipeline.config import Config
from dlkdd.pipeline.engine.digest import sha256_of
from dlkdd.pipeline.engine.fingerprint import CODE_DIRS, code_files
from dlkdd.pipeline.engine.graph import Graph
from dlkdd.pipeline.engine.run import execute
from dlkdd.pipeline.engine.stage import Stage
from dlkdd.pipeline.engine.status import param_changes
from dlkdd.pipeline.stages.run import resolve_config
from dlkdd.pipeline.stages.table import STAGES, pipeline_graph
from dlkdd.pipeline.training.digest import content_digest
from tests.cachefix import mark_all_fresh

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample"
ALL = set(STAGES)
TRAINED = {"pretrain", "teacher", "soft-labels", "baseline", "student", "evaluate"}


def stale_set(graph: Graph) -> set[str]:
    return {n for n, s in graph.statuses().items() if s.state != "fresh"}


@pytest.fixture
def source_copy(tmp_path):
    """A copy of the package's pipeline/ and models/ to edit; the graph reads its code from there."""
    src = tmp_path / "src"
    for folder in CODE_DIRS:
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    return src


# One row per stage module (and the models they share): appending a function there makes
# exactly these stages stale; the others stay fresh.
EDITS = [
    ("pipeline/stages/enhancer.py", ALL - {"pretrain"}),
    ("pipeline/enhancers/fit.py", ALL - {"pretrain"}),  # the fit loop: the enhancer stage's alone
    ("pipeline/enhancers/zero_dce.py", ALL),  # a registered kind: code of every stage that builds one
    ("pipeline/stages/enhance.py", ALL - {"enhancer", "pretrain"}),  # the adapter; pretrain calls the work
    ("pipeline/stages/enhancing/make.py", ALL - {"enhancer"}),  # the clips' code: pretrain makes its own too
    ("pipeline/stages/teacher.py", {"teacher", "soft-labels", "student", "evaluate"}),
    ("pipeline/stages/soft_labels.py", {"soft-labels", "student", "evaluate"}),
    ("pipeline/stages/student.py", {"baseline", "student", "evaluate"}),
    ("pipeline/training/classifiers.py", TRAINED),  # shared by teacher and student
    ("pipeline/stages/evaluate.py", {"evaluate"}),
    ("pipeline/stages/results_page.py", {"evaluate"}),
    ("pipeline/stages/pretrain.py", {"pretrain"}),  # upstream of no stage unless pretrain.root is set
    ("models/video_resnet.py", TRAINED),
    ("models/zero_dce.py", ALL),
]


def test_the_table_has_a_row_for_every_stage_module():
    run_modules = {s.run.split(":")[0].split(".", 1)[1].replace(".", "/") + ".py" for s in STAGES.values()}
    assert run_modules <= {path for path, _ in EDITS}


@pytest.mark.parametrize("path, stale", EDITS, ids=[p for p, _ in EDITS])
def test_editing_a_module_makes_exactly_its_importers_stale(source_copy, tmp_path, path, stale):
    def graph():
        return pipeline_graph(Config(), tmp_path / "cache", source=source_copy)
    mark_all_fresh(graph())
    assert stale_set(graph()) == set()
    target = source_copy / path
    target.write_text(target.read_text() + "\n\n# a comment only\n")
    assert stale_set(graph()) == set(), "comments do not count"
    target.write_text(target.read_text() + "\n\ndef added_for_the_test():\n    return 1\n")
    states = graph().statuses()
    assert {n for n, s in states.items() if s.state != "fresh"} == stale
    for name in stale:  # the stages that import it say so; the rest name a stale upstream
        kinds = {c.kind for c in states[name].causes}
        direct = path in code_files(STAGES[name].run, source_copy)
        assert ("code" in kinds and kinds <= {"code", "upstream"}) if direct else kinds == {"upstream"}, \
            (name, states[name].reasons)
        if direct:
            assert f"code of {path} changed" in states[name].reasons


def test_imports_are_followed_relative_absolute_and_inside_functions(tmp_path):
    src = tmp_path / "src"
    (src / "pipeline" / "engine").mkdir(parents=True)
    (src / "models" / "sub").mkdir(parents=True)
    files = {
        "pipeline/__init__.py": "",
        "pipeline/a.py": "from . import b\nfrom .c import thing\nfrom .engine import atomic\nfrom . import table\n"
                         "def run(ctx):\n    from ..models import build\n    import dlkdd.pipeline.d\n",
        "pipeline/b.py": "import numpy\nimport os\n",
        "pipeline/c.py": "thing = 1\nfrom ..models.sub import leaf\n",
        "pipeline/d.py": "",
        "pipeline/config.py": "",  # params cover it: never part of a stage's code
        "pipeline/engine/__init__.py": "",  # the engine: how a stage runs, not what it writes
        "pipeline/engine/atomic.py": "from .. import unused\n",  # a neutral file's imports are not followed
        "pipeline/table.py": "",  # neutral when its caller says so (the stage table does)
        "pipeline/unused.py": "",
        "models/__init__.py": "def build():\n    from .zoo import net\n",
        "models/zoo.py": "from .. import errors_outside_the_code_dirs\n",
        "models/sub/__init__.py": "",
        "models/sub/leaf.py": "from ...pipeline import config\n",
    }
    for rel, text in files.items():
        (src / rel).write_text(text)
    assert sorted(code_files("dlkdd.pipeline.a:run", src, neutral=("pipeline/table.py",))) == [
        "models/__init__.py", "models/sub/leaf.py", "models/zoo.py",
        "pipeline/a.py", "pipeline/b.py", "pipeline/c.py", "pipeline/d.py"]
    assert "pipeline/table.py" in code_files("dlkdd.pipeline.a:run", src)


def test_staleness_reasons_are_structured():
    cfg = Config()
    now = pipeline_graph(cfg, Path("/nonexistent-cache")).inspect("student")
    causes = param_changes({"params": {**now.params, "student.alpha": 0.7}}, now, False)
    assert [(c.kind, c.subject) for c in causes] == [("param", "student.alpha")]
    assert str(causes[0]) == "param student.alpha 0.7 -> 0.5"


def test_every_one_line_error_type_is_a_user_error():
    import importlib
    import pkgutil

    import dlkdd.models
    import dlkdd.pipeline
    found = []
    for pkg in (dlkdd.pipeline, dlkdd.models):
        for info in pkgutil.walk_packages(pkg.__path__, f"{pkg.__name__}."):
            mod = importlib.import_module(info.name)
            found += [obj for name, obj in vars(mod).items() if isinstance(obj, type)
                      and issubclass(obj, Exception) and obj.__module__ == mod.__name__]
    assert len(found) >= 10
    assert [e for e in found if not issubclass(e, UserError)] == []


# --- model files: an identical rewrite is no change ---------------------------------------

def test_model_files_are_digested_by_their_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    state = {"model": {"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(2, dtype=torch.float16)},
             "epoch": 3, "step": torch.tensor(7)}
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(state, a)
    torch.save({"model": {k: v.clone() for k, v in state["model"].items()}, "epoch": 3, "step": torch.tensor(7)}, b)
    assert sha256_of(a) != sha256_of(b)  # the zip names its records after the file: other bytes
    assert content_digest(a) == content_digest(b)
    state["model"]["w"][0, 0] = 0.5
    torch.save(state, b)
    assert content_digest(a) != content_digest(b)
    torch.save({"model": {"w": state["model"]["w"].double()}}, b)  # same values, another dtype
    assert content_digest(b) != content_digest(a)
    b.write_bytes(a.read_bytes()[:100])  # truncated: digested by its bytes, still differs
    assert content_digest(b) == sha256_of(b) != content_digest(a)


TRAINS = '''
import os
import uuid
import torch
def run_stage(ctx):  # written as atomic.atomic_path does: the temporary name lands in the zip
    tmp = ctx.out / f"model.pt.{uuid.uuid4().hex}.tmp"
    torch.save({"model": {"w": torch.arange(4.0)}, "epoch": 1}, tmp)
    os.replace(tmp, ctx.out / "model.pt")
    return {}
'''
READS = '''
def run_stage(ctx):
    (ctx.out / "n.txt").write_text(str(len((ctx.dir_of("trainer") / "model.pt").read_bytes())))
    return {}
'''


def test_retraining_to_the_same_weights_leaves_downstream_fresh(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from rich.console import Console
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "fake_trainer.py").write_text(TRAINS)
    (mods / "fake_reader.py").write_text(READS)
    monkeypatch.syspath_prepend(str(mods))
    fakes = {"trainer": Stage(name="trainer", run="fake_trainer:run_stage", trains=True, doc=""),
             "reader": Stage(name="reader", run="fake_reader:run_stage", upstream=("trainer",), doc="")}
    g = Graph(Config(), tmp_path / "cache", stages=fakes, digest=content_digest)
    quiet = Console(quiet=True)
    assert execute(g, "reader", "cpu", quiet) == ["trainer", "reader"]
    digest = g.record("trainer")["outputs_digest"]
    model = g.out_dir("trainer") / "model.pt"
    before = model.read_bytes()
    assert execute(g, "trainer", "cpu", quiet, force=True) == ["trainer"]  # rewrites model.pt
    assert model.read_bytes() != before  # torch.save is not byte-stable ...
    assert g.record("trainer")["outputs_digest"] == digest  # ... its tensors are
    rechecked = Graph(Config(), g.cache, checksum=True, stages=fakes, digest=content_digest)
    assert {n: s.state for n, s in rechecked.statuses().items()} \
        == {"trainer": "fresh", "reader": "fresh"}


# --- status: no torch, a table that fits, one line per stage in a pipe ---------------------

def _imports(args: list[str], cwd: Path) -> set[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "dlkdd.cli", *args],
                          capture_output=True, text=True, cwd=cwd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


def test_status_and_help_import_no_torch(tmp_path):
    cache = tmp_path / "cache"
    assert "click" in _imports(["--cache", str(cache), "status"], tmp_path)  # the probe sees imports
    for args in (["--help"], ["status", "--help"], ["--cache", str(cache), "status"],
                 ["--cache", str(cache), "--set", "enhancer.kind=gamma", "evaluate", "--dry-run"]):
        assert "torch" not in _imports(args, tmp_path), args
    from dlkdd.pipeline.stages.run import resolve_config  # the config the CLI resolves (the day/ set pretrains)
    cfg = resolve_config()
    mark_all_fresh(pipeline_graph(cfg, cache))  # a small cache with a record for every stage
    mods = _imports(["--cache", str(cache), "status"], tmp_path)
    assert "torch" not in mods and not any(m.startswith("torch.") for m in mods)
    assert "nothing to do" in subprocess.run(
        [sys.executable, "-m", "dlkdd.cli", "--cache", str(cache), "evaluate"],
        capture_output=True, text=True, cwd=tmp_path).stderr  # all fresh: no torch needed either
    assert "torch" not in _imports(["--cache", str(cache), "evaluate"], tmp_path)


STAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d \(\d+ s\)")


def test_piped_status_is_one_line_per_stage(tmp_path):
    cache = tmp_path / "cache"
    mark_all_fresh(pipeline_graph(resolve_config(), cache))  # the config `status` resolves (day/ set on)
    result = CliRunner().invoke(cli, ["--cache", str(cache), "--set", "teacher.lr=0.5",
                                      "--set", "teacher.epochs=7", "status"])
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert len(lines) == 1 + len(STAGES) + 1 and lines[-1].startswith("student variant ")
    for line, name in zip(lines[1:], STAGES):
        assert line.split()[0] == name and STAMP.search(line)
    teacher = lines[1 + list(STAGES).index("teacher")]
    assert "stale" in teacher and "param teacher.epochs" in teacher and "param teacher.lr" in teacher


def test_terminal_status_fits_the_terminal(tmp_path):
    import fcntl
    import pty
    import struct
    import termios
    cache = tmp_path / "cache"
    mark_all_fresh(pipeline_graph(resolve_config(), cache))  # the config `status` resolves (day/ set on)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 72, 0, 0))  # a 72-column terminal
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")} | {"TERM": "xterm"}
    proc = subprocess.Popen([sys.executable, "-m", "dlkdd.cli", "--cache", str(cache),
                             "--set", "teacher.epochs=9", "status"], stdout=slave, stderr=subprocess.PIPE,
                            cwd=tmp_path, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode()).replace("\r", "")
    lines = [line for line in text.splitlines() if line.strip()]
    assert "┃" in text or "│" in text  # the table form
    assert max(len(line) for line in lines) <= 72
    assert len(STAMP.findall(text)) == len(STAGES)  # no timestamp split over two lines
    assert "stale" in text and "fresh" in text


# --- relocatable caches -------------------------------------------------------------------

TINY = ["--set", "data.frames=4", "--set", "data.short_side=32", "--set", "data.crop=24",
        "--set", "enhancer.kind=gamma", "--set", "enhance.workers=0",
        "--set", "teacher.model=r3d_tiny", "--set", "teacher.epochs=1", "--set", "teacher.batch_size=8",
        "--set", "student.epochs=1", "--set", "student.batch_size=8", "--set", "data.views=2",
        "--set", "pretrain.epochs=1", "--set", "pretrain.batch_size=8"]


def _states(*args) -> dict:
    result = CliRunner().invoke(cli, [*args, *TINY, "status", "--json"])
    assert result.exit_code == 0, result.output
    return {r["stage"]: (r["state"], r["reasons"]) for r in json.loads(result.output)["stages"]}


RUN = ALL  # the bundled sample pretrains on its own day/ set by default


def _all_fresh(states: dict) -> bool:
    return all(states[name][0] == "fresh" for name in RUN)


@pytest.mark.slow
def test_a_moved_or_copied_cache_stays_fresh(tmp_path):
    if not (SAMPLE / "splits").exists():
        pytest.skip("bundled sample not generated")
    cache = tmp_path / "cache"
    result = CliRunner().invoke(cli, ["--cache", str(cache), *TINY, "run"])  # the default dataset
    assert result.exit_code == 0, result.output
    assert _all_fresh(_states("--cache", str(cache)))
    assert _all_fresh(_states("--data", str(SAMPLE), "--cache", str(cache))), "the same folder, named"
    here = Path.cwd()
    try:
        os.chdir(REPO)
        assert _all_fresh(_states("--data", "data/sample", "--cache", str(cache)))
    finally:
        os.chdir(here)
    # elsewhere, mtimes kept (as rsync -a does)
    shutil.copytree(SAMPLE, tmp_path / "moved" / "data")
    shutil.copytree(cache, tmp_path / "moved" / "cache")
    moved = ["--data", str(tmp_path / "moved" / "data"), "--cache", str(tmp_path / "moved" / "cache")]
    assert _all_fresh(_states(*moved))
    # a plain copy (new mtimes): by content, under --checksum
    shutil.copytree(SAMPLE, tmp_path / "plain" / "data", copy_function=shutil.copyfile)
    shutil.copytree(cache, tmp_path / "plain" / "cache", copy_function=shutil.copyfile)
    plain = ["--data", str(tmp_path / "plain" / "data"), "--cache", str(tmp_path / "plain" / "cache")]
    result = CliRunner().invoke(cli, [*plain, *TINY, "status", "--checksum", "--json"])
    assert result.exit_code == 0, result.output
    assert {r["state"] for r in json.loads(result.output)["stages"] if r["stage"] in RUN} == {"fresh"}
    assert not _all_fresh(_states(*plain)), "new mtimes: only content can tell"
    result = CliRunner().invoke(cli, [*plain, *TINY, "evaluate", "--checksum"])  # runs nothing ...
    assert result.exit_code == 0 and "running" not in result.output, result.output
    assert _all_fresh(_states(*plain)), "... and records the new mtimes"
    # one video's content changes, size and mtime kept: --checksum sees it
    video = sorted((tmp_path / "plain" / "data").rglob("*.mp4"))[0]
    st = video.stat()
    data = bytearray(video.read_bytes())
    data[len(data) // 2] ^= 0xFF
    video.write_bytes(bytes(data))
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns))
    result = CliRunner().invoke(cli, [*plain, *TINY, "status", "--checksum", "--json"])
    rows = {r["stage"]: r for r in json.loads(result.output)["stages"]}
    assert rows["enhancer"]["state"] == "fresh"  # gamma reads no video
    assert rows["enhance"]["state"] == "stale" and rows["enhance"]["kinds"] == ["input"]
    assert video.relative_to(tmp_path / "plain" / "data").as_posix() in rows["enhance"]["reasons"][0]
    assert rows["pretrain"]["state"] == "fresh"  # the day/ set is untouched
    assert all(rows[n]["state"] == "stale" for n in RUN - {"pretrain", "enhancer", "enhance"})


def test_weights_files_count_by_content_not_by_where_they_lie(tmp_path):
    from dlkdd.pipeline.config import set_value
    a = tmp_path / "a" / "weights.pth"
    a.parent.mkdir()
    a.write_bytes(b"pretend weights")
    cfg = Config()
    set_value(cfg, "teacher.pretrained", str(a))
    cache = tmp_path / "cache"
    mark_all_fresh(pipeline_graph(cfg, cache))
    b = tmp_path / "b" / "elsewhere.pth"
    b.parent.mkdir()
    shutil.copy2(a, b)  # the same file, another path
    set_value(cfg, "teacher.pretrained", str(b))
    assert stale_set(pipeline_graph(cfg, cache)) == set()
    b.write_bytes(b"other weights!!")
    states = pipeline_graph(cfg, cache, checksum=True).statuses()
    assert states["teacher"].reasons == ["inputs changed teacher.pretrained"]


def test_editing_pretrain_reaches_the_stages_that_start_from_it(source_copy, tmp_path):
    from dlkdd.pipeline.config import set_value
    cfg = Config()
    set_value(cfg, "pretrain.root", str(SAMPLE))
    set_value(cfg, "teacher.pretrained", "pretrain")
    set_value(cfg, "student.pretrained", "")  # the student starts from random weights

    def graph():
        return pipeline_graph(cfg, tmp_path / "cache", source=source_copy)
    mark_all_fresh(graph())
    assert stale_set(graph()) == set()
    target = source_copy / "pipeline" / "stages" / "pretrain.py"
    target.write_text(target.read_text() + "\n\ndef added_for_the_test():\n    return 1\n")
    assert stale_set(graph()) == {"pretrain", "teacher", "soft-labels", "student", "evaluate"}
