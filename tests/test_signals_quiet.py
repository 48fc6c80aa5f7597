"""A stopping process does not print its helper threads' broken connections as tracebacks.

multiprocessing's file-descriptor sharing thread reports a DataLoader worker that died mid-handshake
through sys.excepthook (a ConnectionResetError traceback after "terminated (SIGTERM)"), which made
the SIGTERM-during-teacher test fail about once in six runs, before and after the layout change.
"""
from __future__ import annotations

import sys
import threading
import time
from types import SimpleNamespace

import pytest

from dlkdd.pipeline.engine import signals


def _report_in_a_thread(exc: BaseException) -> None:
    def run():
        try:
            raise exc
        except BaseException:
            sys.excepthook(*sys.exc_info())  # as multiprocessing.resource_sharer does
    t = threading.Thread(target=run)
    t.start()
    t.join()


def test_helper_threads_broken_connections_are_quiet_once_stopping(monkeypatch, capsys):
    shown = []
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: shown.append(kind))
    with signals.handled():
        signals.quiet_helper_threads()
        _report_in_a_thread(ConnectionResetError(104, "Connection reset by peer"))
        _report_in_a_thread(EOFError())
        _report_in_a_thread(ValueError("a real error is still reported"))
        sys.excepthook(ZeroDivisionError, ZeroDivisionError(), None)  # the main thread's too
    assert shown == [ValueError, ZeroDivisionError]
    _report_in_a_thread(ConnectionResetError(104, "after the block"))  # the caller's hook is back
    assert shown == [ValueError, ZeroDivisionError, ConnectionResetError]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, signals.Terminated])
def test_a_stop_lost_in_a_finalizer_is_raised_again(stop):
    """Python ignores an exception raised while a weakref callback runs ("Exception ignored in"):
    a Ctrl-C or SIGTERM that lands there is sent again, so the stop is not lost (it was, now and
    then, in test_ctrl_c_during_enhance and test_sigterm_during_enhance)."""
    with pytest.raises(stop):
        with signals.handled():
            sys.unraisablehook(SimpleNamespace(exc_value=stop(), exc_type=stop, exc_traceback=None,
                                               err_msg=None, object=None))
            time.sleep(5)  # the signal comes back within ~10 ms
