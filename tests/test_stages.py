"""The engine on stand-in stages: fingerprints, records, staleness reasons, run-only-stale."""
import json
import sys

import pytest
from rich.console import Console

from dlkdd.errors import StageError
from dlkdd.pipeline.config import Config, set_value
from dlkdd.pipeline.engine.graph import Graph
from dlkdd.pipeline.engine.run import execute
from dlkdd.pipeline.engine.stage import Stage, upstream_closure
from dlkdd.pipeline.stages import table as stages
from dlkdd.pipeline.stages.table import closure

MODULE = '''
from pathlib import Path
# a comment
def run_stage(ctx):
    value = ctx.cfg.get("{key}")
    if value == -1:
        raise RuntimeError("boom")
    (ctx.out / "out.txt").write_text(str(value))
    return {{"value": value}}
'''


@pytest.fixture
def graph_factory(tmp_path, monkeypatch):
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "fake_up.py").write_text(MODULE.format(key="teacher.epochs"))
    (mods / "fake_down.py").write_text(MODULE.format(key="student.alpha"))
    monkeypatch.syspath_prepend(str(mods))
    for name in ("fake_up", "fake_down"):  # each test imports its own copies
        monkeypatch.delitem(sys.modules, name, raising=False)
    fakes = {
        "up": Stage(name="up", run="fake_up:run_stage", params=("teacher.epochs",), trains=True, doc="up"),
        "down": Stage(name="down", run="fake_down:run_stage", upstream=("up",), params=("student.alpha",),
                      doc="down"),
    }

    def make(cfg=None, checksum=False):
        return Graph(cfg or Config(), tmp_path / "cache", checksum=checksum, stages=fakes)
    make.mods = mods
    return make


def quiet():
    return Console(quiet=True)


def test_empty_cache_is_all_missing(graph_factory):
    states = graph_factory().statuses()
    assert [s.state for s in states.values()] == ["missing", "missing"]


def test_run_then_fresh_then_nothing_runs(graph_factory):
    g = graph_factory()
    assert execute(g, "down", "cpu", quiet()) == ["up", "down"]
    assert all(s.state == "fresh" for s in graph_factory().statuses().values())
    assert execute(graph_factory(), "down", "cpu", quiet()) == []
    rec = json.loads((g.cache / "stages" / "down.json").read_text())
    assert rec["outputs"]["down/out.txt"]["sha256"]
    assert rec["summary"] == {"value": 0.5}


def test_read_param_change_is_stale_with_reason(graph_factory):
    execute(graph_factory(), "down", "cpu", quiet())
    cfg = Config()
    set_value(cfg, "student.alpha", 0.7)
    states = graph_factory(cfg).statuses()
    assert states["up"].state == "fresh"
    assert states["down"].state == "stale"
    assert "param student.alpha 0.5 -> 0.7" in states["down"].reasons
    assert execute(graph_factory(cfg), "down", "cpu", quiet()) == ["down"]


def test_unread_param_change_keeps_fresh(graph_factory):
    execute(graph_factory(), "down", "cpu", quiet())
    before = graph_factory().inspect("down").fingerprint
    cfg = Config()
    set_value(cfg, "evaluate.crops", 5)
    set_value(cfg, "student.temperature", 9)
    assert graph_factory(cfg).inspect("down").fingerprint == before
    assert all(s.state == "fresh" for s in graph_factory(cfg).statuses().values())


def test_upstream_change_propagates(graph_factory):
    execute(graph_factory(), "down", "cpu", quiet())
    cfg = Config()
    set_value(cfg, "teacher.epochs", 3)
    states = graph_factory(cfg).statuses()
    assert states["up"].state == "stale"
    assert "upstream up is stale" in states["down"].reasons
    assert execute(graph_factory(cfg), "down", "cpu", quiet()) == ["up", "down"]
    # the up record changed its outputs digest: an old down record says "upstream up changed"
    assert graph_factory(cfg).statuses()["down"].state == "fresh"


def test_upstream_output_change_is_named(graph_factory):
    execute(graph_factory(), "down", "cpu", quiet())
    cfg = Config()
    set_value(cfg, "teacher.epochs", 3)
    execute(graph_factory(cfg), "up", "cpu", quiet())
    states = graph_factory(cfg).statuses()
    assert states["up"].state == "fresh"
    assert states["down"].reasons == ["upstream up changed"]


def test_comment_only_change_keeps_fingerprint_code_change_does_not(graph_factory):
    g = graph_factory()
    execute(g, "down", "cpu", quiet())
    fp = graph_factory().inspect("up").fingerprint
    path = graph_factory.mods / "fake_up.py"
    src = path.read_text()
    path.write_text("# a new header comment\n" + src.replace("# a comment", "#   reworded comment\n\n"))
    assert graph_factory().inspect("up").fingerprint == fp
    path.write_text(src.replace("str(value)", "str(value) + '!'"))
    states = graph_factory().statuses()
    assert states["up"].state == "stale"
    assert states["up"].reasons == ["code of fake_up changed"]


def test_missing_and_changed_outputs(graph_factory):
    g = graph_factory()
    execute(g, "down", "cpu", quiet())
    (g.cache / "down" / "out.txt").unlink()
    assert graph_factory().statuses()["down"].reasons == ["output down/out.txt missing"]
    execute(graph_factory(), "down", "cpu", quiet())
    (g.cache / "down" / "out.txt").write_text("tampered!")
    assert "output down/out.txt changed since it was written" in graph_factory().statuses()["down"].reasons


def test_verify_catches_same_size_same_mtime_corruption(graph_factory):
    import os
    g = graph_factory()
    execute(g, "up", "cpu", quiet())
    p = g.cache / "up" / "out.txt"
    stat = p.stat()
    p.write_text("0" * len(p.read_text()))  # same size as the default epochs (never 0), other bytes
    os.utime(p, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert graph_factory().statuses()["up"].state == "fresh"  # size+mtime cannot see it
    s = graph_factory().statuses(verify=True)["up"]
    assert s.state == "stale" and "corrupted" in s.reasons[0]


def test_failed_run_leaves_no_record_and_reads_missing(graph_factory):
    g = graph_factory()
    execute(g, "down", "cpu", quiet())
    cfg = Config()
    set_value(cfg, "teacher.epochs", -1)  # the fake stage raises on -1
    with pytest.raises(RuntimeError, match="boom"):
        execute(graph_factory(cfg), "up", "cpu", quiet())
    assert not (g.cache / "stages" / "up.json").exists()
    assert graph_factory(cfg).statuses()["up"].state == "missing"
    assert not list((g.cache / "stages").glob("*.tmp"))


def test_dry_run_and_force(graph_factory):
    g = graph_factory()
    assert execute(g, "down", "cpu", quiet(), dry_run=True) == []
    assert not (g.cache / "stages").exists()
    execute(graph_factory(), "down", "cpu", quiet())
    assert execute(graph_factory(), "down", "cpu", quiet(), force=True) == ["down"]


def test_a_stage_whose_module_is_absent_is_a_one_line_error(tmp_path):
    fakes = {"x": Stage(name="x", run="no_such_module_here:run", doc="x")}
    g = Graph(Config(), tmp_path / "c2", stages=fakes)
    with pytest.raises(StageError, match="stage function no_such_module_here:run: module not found"):
        execute(g, "x", "cpu", quiet())


def test_real_graph_is_topological_and_closes_over_upstream():
    names = list(stages.STAGES)
    for i, name in enumerate(names):
        for up in stages.STAGES[name].upstream_of(Config()):
            assert names.index(up) < i
    assert closure("soft-labels") == ["enhancer", "enhance", "teacher", "soft-labels"]
    assert closure("baseline") == ["enhancer", "enhance", "baseline"]


def test_student_variants_have_their_own_folder():
    a, b = Config(), Config()
    set_value(b, "student.alpha", 0.3)
    out_a, out_b = stages.STAGES["student"].folder(a), stages.STAGES["student"].folder(b)
    assert out_a != out_b and out_a.startswith("student/a0.5-T4-") and out_b.startswith("student/a0.3-")
    # the baseline does not read alpha: one baseline serves every sweep
    base = stages.STAGES["baseline"]
    assert base.param_values(a) == base.param_values(b)


def test_force_on_a_fresh_training_stage_starts_from_an_empty_folder(graph_factory):
    g = graph_factory()  # `up` is declared trains=True
    execute(g, "up", "cpu", quiet())
    (g.cache / "up" / "checkpoint-like.bin").write_text("left from the last run")
    execute(graph_factory(), "up", "cpu", quiet(), force=True)
    assert not (g.cache / "up" / "checkpoint-like.bin").exists()
    assert (g.cache / "up" / "out.txt").exists()


def test_an_upstream_only_some_configs_read(graph_factory, tmp_path):
    """A stage can name an upstream stage as a function of the config (e.g. pretrained weights)."""
    fakes = {
        "up": Stage(name="up", run="fake_up:run_stage", params=("teacher.epochs",), doc="up"),
        "down": Stage(name="down", run="fake_down:run_stage", params=("student.alpha",), doc="down",
                      upstream=(lambda c: ("up",) if c.student.alpha > 0.6 else (),)),
    }
    low, high = Config(), Config()
    set_value(high, "student.alpha", 0.7)
    assert upstream_closure("down", fakes, low) == ["down"]
    assert upstream_closure("down", fakes, high) == ["up", "down"]
    assert execute(Graph(high, tmp_path / "c3", stages=fakes), "down", "cpu", quiet()) == ["up", "down"]


def test_a_report_folder_holding_only_a_study_reads_as_never_evaluated_not_as_stopped(tmp_path):
    """`dlkdd study` writes report/study*.{json,md,png} and ablation*: evaluate never ran there."""
    cache = tmp_path / "cache"
    report = cache / "report"
    report.mkdir(parents=True)
    for name in ("study-chain.md", "study-chain-val.json", "ablation-chain.png"):
        (report / name).write_text("x")
    graph = stages.pipeline_graph(Config(), cache)
    assert graph.status("evaluate").reasons == ["never run in this cache"]
    (report / "results.json").write_text("{")  # evaluate's own file, no record: it stopped
    assert graph.status("evaluate").reasons == ["not finished: an earlier run stopped before writing its record"]
