"""One writer per cache: a second process gets a message naming the holder."""
import os
import signal
import subprocess
import sys
import time

import pytest

from dlkdd.pipeline.lock import CacheLock, LockError

HOLD = """
import sys, time
sys.path.insert(0, {repo!r})
from dlkdd.pipeline.lock import CacheLock
with CacheLock({cache!r}, command="dlkdd run --fake"):
    print("held", flush=True)
    time.sleep(60)
"""


def _hold(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(repo=repo, cache=str(tmp_path))],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_process_gets_a_message_naming_the_holder(tmp_path):
    proc = _hold(tmp_path)
    try:
        with pytest.raises(LockError) as e:
            CacheLock(tmp_path).acquire()
        msg = str(e.value)
        assert f"pid {proc.pid}" in msg and "dlkdd run --fake" in msg and "since" in msg
        assert "\n" not in msg
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_process_is_taken_over(tmp_path):
    proc = _hold(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / ".lock").read_text()  # the dead holder's note is still there
    with CacheLock(tmp_path) as lock:
        assert f'"pid": {os.getpid()}' in (tmp_path / ".lock").read_text()
        assert lock.fd is not None


def test_wait_gives_up_after_the_timeout_and_succeeds_when_released(tmp_path):
    proc = _hold(tmp_path)
    t0 = time.monotonic()
    with pytest.raises(LockError):
        CacheLock(tmp_path, wait=0.5).acquire()
    assert 0.4 < time.monotonic() - t0 < 5
    proc.kill()
    proc.wait()
    with CacheLock(tmp_path, wait=2):
        pass


def test_same_process_releases_and_reacquires(tmp_path):
    with CacheLock(tmp_path):
        pass
    with CacheLock(tmp_path):
        pass
