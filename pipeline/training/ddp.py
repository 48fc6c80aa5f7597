"""This process's place among the torchrun processes: joining the group, the few collectives the loop
needs, and the one line a rank prints when another rank of the job dies or stops answering.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import re
from collections.abc import Callable

import torch
import torch.distributed as dist

from ...errors import UserError, first_line
from ..engine import ranks, signals

# Seconds a collective may wait for the other ranks before this one gives up: a rank that dies
# without closing its sockets (a lost node) must not hold the others until the job's time limit.
DDP_TIMEOUT = float(os.environ.get("DLKDD_DDP_TIMEOUT", "45"))


class LostRankError(UserError, RuntimeError):
    """Another torchrun rank died or stopped answering (one line: what was kept, how to resume)."""


@dataclasses.dataclass
class DdpGroup:
    """This process's place among the torchrun processes (rank 0 of 1 without torchrun)."""
    rank: int = 0
    world: int = 1
    owned: bool = False  # we called init_process_group, so we tear it down

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        """All-reduce (sum) a few numbers across ranks; identity when not distributed."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64,
                         device="cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t)
        return t.tolist()

    def sync_buffers(self, model: torch.nn.Module) -> None:
        """Give every rank rank 0's buffers (BatchNorm statistics drift apart between DDP forwards),
        so the sharded validation measures the model rank 0 saves."""
        if self.world > 1:
            for b in model.buffers():
                dist.broadcast(b, 0)

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module a train step calls: `model`, or its DistributedDataParallel wrapper under torchrun."""
        if self.world == 1:
            return model
        return torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group, if this process joined it."""
        if self.owned:
            dist.destroy_process_group()

    @contextlib.contextmanager
    def session(self, desc: str, kept: Callable[[], str]):
        """Leave the group when the block ends. A collective in it that fails because another rank died
        becomes one LostRankError line, which says what `kept()` says the rerun resumes from."""
        peer_lost = False
        try:
            yield
        except RuntimeError as e:
            if self.world == 1 or not is_peer_failure(e):
                raise
            peer_lost = True  # tearing the group down would wait on the dead rank
            signals.stopping()  # torchrun's SIGTERM to the survivors follows: this line is the one to print
            reason = re.sub(r"^\[[^\]]*\] ", "", first_line(e)).split(". ")[0]  # gloo: "[pair.cc:537] ..."
            raise LostRankError(f"{desc}: rank {self.rank} lost another rank of the torchrun job "
                                f"({reason}); {kept()}") from None
        finally:
            if not peer_lost:
                self.close()


def is_peer_failure(e: RuntimeError) -> bool:
    """A collective failed because another rank died (closed connection) or went silent (timeout)."""
    text = str(e)
    return isinstance(e, dist.DistError) or any(s in text for s in (
        "gloo", "Connection reset", "Connection closed", "NCCL", "Timed out", "timed out"))


def setup_distributed(device: torch.device) -> tuple[DdpGroup, torch.device]:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    if ranks.world_size() <= 1:
        return DdpGroup(), device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank())
        torch.cuda.set_device(device)
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=DDP_TIMEOUT))
    return DdpGroup(dist.get_rank(), dist.get_world_size(), owned), device


def join_group(device: str) -> DdpGroup:
    """The torchrun process group for a stage the engine runs on every rank (see
    `engine.graph.execute_distributed`)."""
    return setup_distributed(torch.device(device))[0]
