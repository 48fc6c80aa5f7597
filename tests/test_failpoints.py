"""Failpoints (DLKDD_FAILPOINT): a named point pauses, or signals, the N-th time it is reached;
a pause ends as the signal that ends it would have ended the run at that point."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
from relfix import Proc, child_env

from dlkdd.pipeline.engine import failpoints

# A child that reaches point "x" five times, printing before each; what a signal did is printed.
CHILD = textwrap.dedent("""
    import signal, sys
    from dlkdd.pipeline.engine import failpoints
    if sys.argv[1] == "defer":  # a handler that only notes the signal, as around a checkpoint write
        signal.signal(signal.SIGTERM, lambda s, f: print("deferred", flush=True))
    try:
        for i in range(5):
            print(f"at {i}", flush=True)
            failpoints.reached("y")  # another point: never counts for "x"
            failpoints.reached("x")
    except KeyboardInterrupt:
        print(f"interrupted at {i}", flush=True)
        sys.exit(130)
    print("finished", flush=True)
""")


def child(value: str, mode: str = "plain") -> Proc:
    return Proc.command([sys.executable, "-c", CHILD, mode], env=child_env(DLKDD_FAILPOINT=value))


def paused(p: Proc, point: str) -> None:
    """The child says it paused at `point`, and nothing after it."""
    p.wait_for(rf"^failpoint {point} reached \(pid {p.pid}\)$", timeout=60)
    n = int(point.rsplit("@", 1)[1])
    assert [line.strip() for line in p.lines if line.startswith("at ")][-1] == f"at {n - 1}", p.output


def test_unset_or_another_name_does_nothing(monkeypatch, capsys):
    monkeypatch.delenv(failpoints.ENV, raising=False)
    for _ in range(3):
        failpoints.reached("x")
    monkeypatch.setenv(failpoints.ENV, "y@1")
    failpoints.reached("x")
    assert capsys.readouterr().err == ""


def test_a_signal_action_fires_only_the_nth_time_and_counts_restart_with_a_new_value(monkeypatch, capsys):
    got = []
    before = signal.signal(signal.SIGUSR2, lambda s, f: got.append(s))
    try:
        monkeypatch.setenv(failpoints.ENV, "train:step@3=SIGUSR2")
        for i in range(1, 6):
            failpoints.reached("train:step")
            failpoints.reached("train:epoch")
            assert got == ([signal.SIGUSR2] if i >= 3 else []), i  # the 3rd time only
        assert capsys.readouterr().err == f"failpoint train:step@3 reached (pid {os.getpid()})\n"
        monkeypatch.setenv(failpoints.ENV, "train:epoch=SIGUSR2")  # @1 by default; counted afresh
        failpoints.reached("train:epoch")
        assert got == [signal.SIGUSR2] * 2
    finally:
        signal.signal(signal.SIGUSR2, before)


@pytest.mark.parametrize("value", ["", "@2", "x@0", "x@two", "x@1=SIGNOPE", "x=stop"])
def test_malformed_values_are_a_value_error_naming_the_variable(value):
    with pytest.raises(ValueError, match=rf"^DLKDD_FAILPOINT={value!r}: expected NAME\[@N\]"):
        failpoints.parse(value)


def test_parse():
    assert failpoints.parse("write:logits.h5") == ("write:logits.h5", 1, "pause")
    assert failpoints.parse("soft-labels:batch@3=SIGTERM") == ("soft-labels:batch", 3, "SIGTERM")


def test_a_pause_resumes_on_sigusr1():
    p = child("x@3")
    paused(p, "x@3")
    p.signal(failpoints.RESUME)
    assert p.wait(60) == 0, p.output
    assert p.output.count("failpoint") == 1 and "at 4" in p.output and p.lines[-1] == "finished\n"


def test_ctrl_c_during_a_pause_raises_keyboard_interrupt_at_the_point():
    p = child("x@2")
    paused(p, "x@2")
    p.signal(signal.SIGINT)
    assert p.wait(60) == 130, p.output
    assert p.lines[-1] == "interrupted at 1\n" and "Traceback" not in p.output


def test_sigterm_during_a_pause_does_what_its_handler_does():
    p = child("x@2")  # no handler: the default action, death by SIGTERM
    paused(p, "x@2")
    p.signal(signal.SIGTERM)
    assert p.wait(60) == -signal.SIGTERM, p.output
    assert "finished" not in p.output
    p = child("x@2", "defer")  # a handler that returns: the run goes on from the point
    paused(p, "x@2")
    p.signal(signal.SIGTERM)
    assert p.wait(60) == 0, p.output
    assert p.lines[-2:] == ["at 4\n", "finished\n"] and "deferred\n" in p.lines


def test_a_malformed_value_fails_the_process_at_the_first_point():
    """A typo in the variable must not silently disable the point a test relies on."""
    code = "from dlkdd.pipeline.engine import failpoints; failpoints.reached('x')"
    r = subprocess.run([sys.executable, "-c", code], env=child_env(DLKDD_FAILPOINT="x@"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "DLKDD_FAILPOINT='x@': expected NAME[@N]" in r.stderr
