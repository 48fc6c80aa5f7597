"""The user errors: a mistake in the user's input or setup, reported as one line, no traceback.

Every one-line error type derives from `UserError`, so the command line catches that one
class and a new error type cannot leak a traceback. Torch-free and at the package root, so
both `pipeline/` and `models/` (which never imports `pipeline/`) derive from it.
"""


class UserError(Exception):
    """A user mistake or a bad input: the CLI prints the message's first line and exits non-zero."""


class StageError(UserError):
    """A stage cannot run (one line for the user)."""
