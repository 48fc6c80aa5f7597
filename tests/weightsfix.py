"""Released weights from ../shared/weights: skipped where absent, except in CI, which lays ../shared
beside the clone, so a missing file there is a failure, not a silent skip."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"
IN_CI = bool(os.environ.get("CI"))


def require(path: Path, what: str = "released weights") -> Path:
    """`path`, or a skip (a failure under CI) when it is not there."""
    if not Path(path).is_file():
        message = f"{what} not found at {path}"
        if IN_CI:
            pytest.fail(f"{message}: CI has ../shared beside the clone")
        pytest.skip(message)
    return Path(path)


def needs(path: Path, what: str = "released weights"):
    """A skipif marker for tests that read `path` (never skipping under CI: they fail there instead)."""
    return pytest.mark.skipif(not Path(path).is_file() and not IN_CI, reason=f"{what} not found at {path}")
