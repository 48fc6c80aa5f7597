"""The user errors: a mistake in the user's input or setup, reported as one line, no traceback.

Every one-line error type derives from `UserError`, so the command line catches that one
class and a new error type cannot leak a traceback. Torch-free and at the package root, so
both `pipeline/` and `models/` (which never imports `pipeline/`) derive from it.
"""
from __future__ import annotations

import os
import re


class UserError(Exception):
    """A user mistake or a bad input: the CLI prints the message's first line and exits non-zero."""


class StageError(UserError):
    """A stage cannot run (one line for the user)."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's text (its type name when it has none), for an error
    message that must stay one line (h5py, torch and decord errors run to paragraphs)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0] if lines else type(e).__name__)[:limit]


def user_message(e: BaseException) -> str:
    """The one line the CLI prints for a user error; for one re-raised from a DataLoader worker
    (whose text is the worker's traceback), the original error's message."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    if lines and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        last = lines[-1].strip()  # "dlkdd.pipeline.datasets.shards.ShardError: <path>: ..."
        prefix = f"{type(e).__module__}.{type(e).__name__}: "
        return last[len(prefix):] if last.startswith(prefix) else last
    return first_line(e, limit=100_000)


def os_error_line(e: OSError) -> str:
    """One line, `<file>: No space left on device`, whoever raised it (h5py's messages run long)."""
    reason = os.strerror(e.errno)
    where = e.filename
    if where is None:  # h5py puts the file name inside its long message
        m = re.search(r"filename = '([^']*)'", str(e))
        where = m.group(1) if m else None
    if e.strerror and e.strerror != reason and "\n" not in e.strerror and len(e.strerror) < 200:
        reason = f"{reason} ({e.strerror})"  # our own short detail, e.g. "cannot write (...)"
    return f"{where}: {reason}" if where else reason
