"""This process's place in a torchrun job, read from the variables torchrun sets.

The one place that reads RANK / WORLD_SIZE / LOCAL_RANK: without torchrun a process is rank 0
of 1. Torch-free, so the engine and the CLI can ask before torch is loaded.
"""
from __future__ import annotations

import os


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """Rank 0: the process that writes records, checkpoints and prints."""
    return rank() == 0


def machine_cores() -> int:
    """The cores this process may run on: its affinity (a container's or a batch job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def cores_per_rank() -> int:
    """This process's share of `machine_cores` when torchrun started several ranks on the machine."""
    return max(1, machine_cores() // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
