"""A stopping process does not print its helper threads' broken connections as tracebacks.

multiprocessing's file-descriptor sharing thread reports a DataLoader worker that died mid-handshake
through sys.excepthook (a ConnectionResetError traceback after "terminated (SIGTERM)"), which made
the SIGTERM-during-teacher test fail about once in six runs, before and after the layout change.
"""
from __future__ import annotations

import sys
import threading

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
