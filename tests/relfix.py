"""Helpers for the reliability tests: the CLI as a subprocess (to kill) or in-process (fast)."""
from __future__ import annotations

import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import torch
from click.testing import CliRunner

from dlkdd import cli
from dlkdd.pipeline.stages.run import resolve_config
from dlkdd.pipeline.stages.table import pipeline_graph

REPO = Path(__file__).resolve().parents[1]

# Tiny settings: every stage takes a second or two on one CPU thread.
SETTINGS = {
    "data.frames": 4, "data.short_side": 32, "data.crop": 24, "data.views": 2, "data.clips_per_video": 1,
    "data.test_clips": 1, "enhancer.kind": "gamma", "enhance.workers": 0, "enhance.shard_size": 1,
    "enhance.compression": "none",
    "teacher.model": "r3d_tiny", "teacher.epochs": 3, "teacher.batch_size": 2,
    "student.model": "r3d_tiny", "student.epochs": 3, "student.batch_size": 2,
}

# The default enhancer, briefly fitted: float convolutions where gamma is a lookup table, so a test
# of byte-identical shards across batching, thread counts or processes can fail with it.
ZERO_DCE = {"enhancer.kind": "zero_dce++", "enhancer.steps": 3, "enhancer.crop": 16}


def set_args(**extra) -> list[str]:
    values = {**SETTINGS, **extra}
    return [a for k, v in values.items() for a in ("--set", f"{k}={v}")]


def base_args(data: Path, cache: Path, **extra) -> list[str]:
    return ["--data", str(data), "--cache", str(cache), "--device", "cpu", *set_args(**extra)]


def child_env(**extra) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", COLUMNS="200")
    env.update(extra)
    return env


class Proc:
    """`python -m cli ARGS` in the background; its output lines are collected as they come."""

    def __init__(self, args: list[str], cwd=None, env=None, argv: list[str] | None = None):
        argv = argv or [sys.executable, "-m", "dlkdd.cli", *map(str, args)]
        self.p = subprocess.Popen(argv, cwd=cwd or REPO,
                                  env=env or child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, bufsize=1)
        self.lines: list[str] = []
        self.q: queue.Queue = queue.Queue()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.append(line)
            self.q.put(line)
        self.q.put(None)

    @classmethod
    def command(cls, argv: list[str], **kw) -> Proc:
        """Any command line (torchrun ...), its output collected the same way."""
        return cls([], argv=[str(a) for a in argv], **kw)

    @property
    def pid(self) -> int:
        return self.p.pid

    def wait_for(self, pattern: str, timeout: float = 120) -> float:
        """Block until a line matches `pattern`; the time it was seen. AssertionError if the process ended."""
        rx = re.compile(pattern)
        if any(rx.search(line) for line in self.lines):
            return time.monotonic()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.q.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"timed out waiting for {pattern!r}:\n{self.output}") from None
            if line is None:
                raise AssertionError(f"process ended before {pattern!r}:\n{self.output}")
            if rx.search(line):
                return time.monotonic()

    def signal(self, sig) -> None:
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)

    def wait(self, timeout: float = 300) -> int:
        rc = self.p.wait(timeout)
        self.t.join(10)
        return rc

    @property
    def output(self) -> str:
        return "".join(self.lines)


# What `failpoints.reached` prints when the point named by DLKDD_FAILPOINT fires (and pauses there).
FAILPOINT_LINE = r"^failpoint \S+ reached \(pid \d+\)$"


def at_failpoint(args: list[str], point: str, argv: list[str] | None = None, timeout: float = 120,
                 **env) -> Proc:
    """The CLI with ARGS (or the command line `argv`) started with DLKDD_FAILPOINT=`point`, once it
    has paused there: a signal sent now lands at that point (SIGUSR1 lets it go on)."""
    p = Proc(args, argv=None if argv is None else [str(a) for a in argv],
             env=child_env(DLKDD_FAILPOINT=point, **env))
    p.wait_for(FAILPOINT_LINE, timeout)
    return p


def dask_workers(pid: int) -> list[psutil.Process]:
    """The worker processes of a LocalCluster started by `pid` (multiprocessing spawns them)."""
    found = []
    for c in psutil.Process(pid).children(recursive=True):
        try:
            if "spawn_main" in " ".join(c.cmdline()):
                found.append(c)
        except psutil.NoSuchProcess:
            pass
    return found


def wait_for_dask_workers(p: Proc, n: int, timeout: float = 90) -> list[psutil.Process]:
    """The `n` LocalCluster worker processes of `p`, once they are all up (its cluster starts in
    a thread, so they come up while `p` is paused at a failpoint)."""
    deadline = time.monotonic() + timeout
    while len(workers := dask_workers(p.pid)) < n:
        assert p.p.poll() is None and time.monotonic() < deadline, f"{len(workers)} of {n} workers:\n{p.output}"
        time.sleep(0.05)
    return workers


def run_cli(args: list[str], cwd=None, env=None, timeout: float = 300) -> tuple[int, str]:
    """Run the CLI to completion in a subprocess: (exit code, stdout + stderr)."""
    p = Proc(args, cwd=cwd, env=env)
    rc = p.wait(timeout)
    return rc, p.output


def invoke(args: list[str]):
    """The CLI in-process (no interpreter start-up): click's result with .exit_code .stdout .stderr.

    Any exception the CLI did not turn into a message is re-raised, so a traceback fails the test.
    """
    before = os.environ.get("MPLCONFIGDIR")
    # wide lines: rich would wrap messages at 80 columns off a terminal
    result = CliRunner(env={"COLUMNS": "400"}).invoke(cli.cli, [str(a) for a in args], catch_exceptions=True)
    assert os.environ.get("MPLCONFIGDIR") == before  # the CLI leaves the caller's environment as it was
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def assert_one_line_error(result, *needles: str) -> str:
    """Non-zero exit, stderr is exactly one `Error: ...` line naming `needles`, no traceback."""
    assert result.exit_code != 0, result.output
    err = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(err) == 1, result.stderr
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


def assert_one_line_error_text(rc: int, output: str, *needles: str) -> str:
    assert rc not in (0, None), output
    assert "Traceback" not in output, output
    err = [line for line in output.splitlines() if line.startswith("Error: ")]
    assert len(err) == 1, output
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


# ----------------------------------------------------------------------------- caches

def graph_for(data: Path, cache: Path, **extra):
    """The stage graph the CLI resolves for `base_args(data, cache, **extra)`."""
    overrides = [f"{k}={v}" for k, v in {**SETTINGS, **extra}.items()]
    return pipeline_graph(resolve_config(None, overrides, data), cache)


def copy_cache(src: Path, dst: Path, drop: tuple[str, ...] = (), data: Path | None = None,
               extra: dict | None = None) -> Path:
    """A copy of a cache (mtimes kept, so it is as fresh as the original) without the `drop` stages
    (of the graph of SETTINGS and `extra`)."""
    shutil.copytree(src, dst, symlinks=True)
    if drop:
        g = graph_for(data, dst, **(extra or {}))
        for name in drop:
            g.forget(name)
            shutil.rmtree(g.out_dir(name), ignore_errors=True)
    return dst


def shard_data(cache: Path) -> dict:
    out = {}
    for p in sorted((cache / "clips").glob("shard-*.h5")):
        with h5py.File(p, "r") as f:
            out[p.name] = {k: f[k][...] for k in f}
    return out


def assert_same_shards(a: Path, b: Path) -> None:
    da, db = shard_data(a), shard_data(b)
    assert da.keys() == db.keys() and da
    for name in da:
        assert da[name].keys() == db[name].keys()
        for k in da[name]:
            assert np.array_equal(da[name][k], db[name][k]), (name, k)


def logits(cache: Path) -> np.ndarray:
    with h5py.File(cache / "soft-labels" / "logits.h5", "r") as f:
        return f["logits"][...]


def state_dict(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def assert_same_state(a: Path, b: Path) -> None:
    sa, sb = state_dict(a), state_dict(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def flip_byte(path: Path, offset: int, keep_mtime: bool) -> None:
    st = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))
    if keep_mtime:
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def chunk_offset(path: Path, dataset: str, chunk: int = 0) -> tuple[int, int]:
    """(byte offset, size) of one stored chunk of `dataset`."""
    with h5py.File(path, "r") as f:
        info = f[dataset].id.get_chunk_info(chunk)
        return info.byte_offset, info.size


SIGKILL, SIGINT, SIGUSR1 = signal.SIGKILL, signal.SIGINT, signal.SIGUSR1
