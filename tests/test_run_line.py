"""The run's one line on a terminal (stage k of n, elapsed, ETA from the stages' bars); none in a log."""
import io
import re
import sys

import pytest
from rich.console import Console

from dlkdd.pipeline.config import Config
from dlkdd.pipeline.engine.graph import Graph
from dlkdd.pipeline.engine.progress import RunLine, clock_text
from dlkdd.pipeline.engine.run import execute
from dlkdd.pipeline.engine.stage import Stage

MODULE = '''
from dlkdd.pipeline.engine.progress import progress_bar

def run_stage(ctx):
    with progress_bar(ctx.console, "  {name} 1/2", 4, "items") as update:
        for n in range(1, 5):
            update(n)
    (ctx.out / "out.txt").write_text("{name}")
    return {{}}
'''
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


@pytest.fixture
def graph(tmp_path, monkeypatch):
    mods = tmp_path / "mods"
    mods.mkdir()
    stages = {}
    for i, name in enumerate(("one", "two", "three")):
        (mods / f"fake_{name}.py").write_text(MODULE.format(name=name))
        monkeypatch.delitem(sys.modules, f"fake_{name}", raising=False)
        up = (("one", "two")[i - 1],) if i else ()
        stages[name] = Stage(name=name, run=f"fake_{name}:run_stage", upstream=up, doc=name)
    monkeypatch.syspath_prepend(str(mods))
    return Graph(Config(), tmp_path / "cache", stages)


def test_a_terminal_shows_stage_k_of_n_elapsed_and_eta(graph):
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=150)
    assert execute(graph, "three", "cpu", console, run_line=True) == ["one", "two", "three"]
    text = ANSI.sub("", out.getvalue())
    for k, name in enumerate(("one", "two", "three"), 1):
        assert re.search(rf"run: stage {k}/3 {name} · \d+:\d\d elapsed · ETA ", text), text
    assert re.search(r"ETA ~?\d+:\d\d", text)  # a figure once a stage has moved or finished
    assert re.search(r"one 1/2 .* [0-4]/4", text)  # the stage's own bar is still drawn


def test_only_the_stages_that_run_are_counted(graph):
    execute(graph, "two", "cpu", Console(quiet=True))
    out = io.StringIO()
    execute(graph, "three", "cpu", Console(file=out, force_terminal=True, width=150), run_line=True)
    text = ANSI.sub("", out.getvalue())
    assert "run: stage 1/1 three" in text and "stage 1/3" not in text


def test_a_log_gets_no_run_line_and_no_control_codes(graph):
    out = io.StringIO()
    console = Console(file=out, width=150)  # a file: not a terminal
    assert execute(graph, "three", "cpu", console, run_line=True) == ["one", "two", "three"]
    text = out.getvalue()
    assert "run: stage" not in text and "elapsed" not in text and "\x1b[" not in text
    assert "three: done in" in text  # the stage events are the log


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_eta_from_the_bars_then_from_the_stages_done():
    clock = Clock()
    line = RunLine(Console(quiet=True), ["a", "b", "c"], clock=clock)
    line.begin("a")
    assert line.eta() == (None, True)  # nothing has moved yet: no figure
    line.progress("  a", 0, 10)
    clock.now = 5.0
    line.progress("  a", 5, 10)  # half-way after 5 s: 5 s left, and b and c guessed at a's 10 s
    assert line.eta() == (pytest.approx(25.0), True)
    clock.now = 10.0
    line.end("a")
    line.begin("b")
    assert line.eta() == (pytest.approx(20.0), True)  # b and c at the mean of the stages done
    assert line.text() == "run: stage 2/3 b · 0:10 elapsed · ETA ~0:20"


def test_epoch_bars_count_as_parts_of_one_series_and_records_are_used():
    clock = Clock()
    line = RunLine(Console(quiet=True), ["teacher", "evaluate"], {"evaluate": 7.0}, clock=clock)
    line.begin("teacher")
    line.progress("teacher 1/4", 0, 10)
    clock.now = 8.0
    line.progress("teacher 2/4", 10, 10)  # 2 epochs of 4 (validation included) in 8 s
    left, guess = line.eta()
    assert left == pytest.approx(8.0 + 7.0) and guess  # the teacher's own record is unknown
    clock = Clock()
    line2 = RunLine(Console(quiet=True), ["teacher"], {"teacher": 30.0}, clock=clock)
    line2.begin("teacher")
    clock.now = 20.0
    assert line2.eta() == (pytest.approx(10.0), False)  # its last run took 30 s


def test_clock_text():
    assert clock_text(5) == "0:05" and clock_text(125.4) == "2:05" and clock_text(3725) == "1:02:05"
