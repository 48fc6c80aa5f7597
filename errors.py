"""The user errors: a mistake in the user's input or setup, reported as one line, no traceback.

Every one-line error type derives from `UserError`, so the command line catches that one
class and a new error type cannot leak a traceback. Torch-free and at the package root, so
both `pipeline/` and `models/` (which never imports `pipeline/`) derive from it.
"""


class UserError(Exception):
    """A user mistake or a bad input: the CLI prints the message's first line and exits non-zero."""


class StageError(UserError):
    """A stage cannot run (one line for the user)."""


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's text (its type name when it has none), for an error
    message that must stay one line (h5py, torch and decord errors run to paragraphs)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0] if lines else type(e).__name__)[:limit]
