"""Locks per output: readers share an output, a writer holds it alone; a blocked process names the holder."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from dlkdd.pipeline.engine.lock import LockError, OutputLocks

HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from dlkdd.pipeline.engine.lock import OutputLocks
with OutputLocks({cache!r}, command="dlkdd run --fake") as locks:
    getattr(locks, {mode!r})({output!r})
    print("held", flush=True)
    time.sleep(60)
"""


def _hold(tmp_path, mode="exclusive", output="teacher"):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=repo, cache=str(tmp_path), mode=mode,
                                                               output=output)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def _stop(*procs):
    for p in procs:
        p.kill()
        p.wait()


def test_second_writer_gets_a_message_naming_the_holder(tmp_path):
    proc = _hold(tmp_path)
    try:
        with pytest.raises(LockError) as e:
            OutputLocks(tmp_path).exclusive("teacher")
        msg = str(e.value)
        assert msg.startswith(f"cache {tmp_path}: teacher is in use by pid {proc.pid} on ")
        assert "dlkdd run --fake" in msg and "since" in msg and "(writing it)" in msg and "--wait" in msg
        assert "\n" not in msg
        with pytest.raises(LockError, match="writing it"):  # nobody reads what is being written
            OutputLocks(tmp_path).share("teacher")
        with OutputLocks(tmp_path) as locks:  # other outputs are free
            locks.exclusive("student/a0.5-T4-abc")
            locks.share("clips")
    finally:
        _stop(proc)


def test_readers_share_an_output_and_a_writer_of_it_waits_for_them(tmp_path):
    readers = [_hold(tmp_path, "share", "clips") for _ in range(2)]
    try:
        with OutputLocks(tmp_path) as locks:
            locks.share("clips")  # a third reader
        with pytest.raises(LockError) as e:
            OutputLocks(tmp_path).exclusive("clips")
        assert f"clips is in use by pid {readers[0].pid}" in str(e.value)
        assert "(reading it) and 1 more" in str(e.value)
    finally:
        _stop(*readers)
    with OutputLocks(tmp_path) as locks:
        locks.exclusive("clips")
        assert [p.name for p in (tmp_path / "locks").glob("clips.*.json")] == \
               [locks.held["clips"].note.name]  # the killed readers' notes are gone


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    proc = _hold(tmp_path)
    note = next((tmp_path / "locks").glob(f"teacher.*-{proc.pid}-*.json"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads(note.read_text())["pid"] == proc.pid  # the dead holder's note is still there
    with OutputLocks(tmp_path) as locks:
        locks.exclusive("teacher")
        assert not note.exists()
        assert json.loads(locks.held["teacher"].note.read_text())["pid"] == os.getpid()
    assert not list((tmp_path / "locks").glob("*.json"))  # released: no note left


def test_wait_gives_up_after_the_timeout_and_succeeds_when_released(tmp_path):
    proc = _hold(tmp_path)
    t0 = time.monotonic()
    with pytest.raises(LockError):
        OutputLocks(tmp_path, wait=0.5).exclusive("teacher")
    assert 0.4 < time.monotonic() - t0 < 5
    _stop(proc)
    with OutputLocks(tmp_path, wait=2) as locks:
        locks.exclusive("teacher")


def test_upgrade_and_downgrade_in_one_process(tmp_path):
    with OutputLocks(tmp_path) as locks:
        locks.share("teacher")
        locks.exclusive("teacher")  # the stage was stale: write it
        locks.share("teacher")  # written: now only read
        with OutputLocks(tmp_path) as other:
            other.share("teacher")  # another reader is welcome
            with pytest.raises(LockError, match="reading it"):
                OutputLocks(tmp_path).exclusive("teacher")
