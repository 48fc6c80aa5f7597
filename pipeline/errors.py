"""One-line errors: what the CLI prints for a bad input is one line naming the file."""
from __future__ import annotations


def first_line(e: BaseException, limit: int = 200) -> str:
    """The first non-empty line of an exception's text (its type name when it has none), for an error
    message that must stay one line (h5py, torch and decord errors run to paragraphs)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return (lines[0] if lines else type(e).__name__)[:limit]
