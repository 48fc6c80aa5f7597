"""The train loader, reproducible epoch by epoch, and each rank's share of the validation set.

Every source of randomness (global RNGs, shuffle order, worker RNGs, view draws via
`dataset.set_epoch`) is reseeded from (seed, epoch) when an epoch begins, so a run resumed
at epoch k ends with the same weights as an uninterrupted one (bit-identical on the CPU).
"""
from __future__ import annotations

import os
import random

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, get_worker_info

from ..config import TrainConfig

_MAIN, _WORKER, _SHUFFLE = 0, 1, 2  # independent seed streams per (seed, epoch)


def derive_seed(*parts: int) -> int:
    """A 32-bit seed mixed from integers (seed, epoch, stream, ...); nearby inputs give unrelated seeds."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


class EpochDataset(Dataset):
    """Wraps a dataset so it is indexed by (epoch, i).

    The epoch travels with every index, so each process, including persistent
    DataLoader workers that hold a stale copy of the dataset, enters the new
    epoch itself before its first item: it reseeds its RNGs from (seed, epoch,
    worker id) and calls the dataset's `set_epoch`. Worker RNGs therefore do
    not depend on how many epochs the workers have lived through.
    """

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed
        self._entered = None  # (pid, epoch) of the last epoch this process entered

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        self._entered = (os.getpid(), epoch)

    def __getitem__(self, key):
        epoch, i = key
        if self._entered != (os.getpid(), epoch):
            info = get_worker_info()
            if info is not None:
                seed_everything(derive_seed(self.seed, epoch, _WORKER, info.id))
            self.set_epoch(epoch)
        return self.dataset[i]


class EpochSampler(Sampler):
    """Yields (epoch, index); the order depends only on (seed, epoch), never on earlier epochs."""

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world: int = 1):
        self.n, self.seed, self.epoch = len(dataset), seed, 0
        self.shard = (DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                         seed=seed, drop_last=False) if world > 1 else None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.shard is not None:
            self.shard.set_epoch(epoch)

    def __iter__(self):
        if self.shard is not None:
            order = list(self.shard)
        else:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, _SHUFFLE))
            order = torch.randperm(self.n, generator=g).tolist()
        return iter([(self.epoch, i) for i in order])

    def __len__(self) -> int:
        return len(self.shard) if self.shard is not None else self.n


def train_loader(train_set: Dataset, cfg: TrainConfig, device: torch.device, rank: int = 0,
                 world: int = 1) -> DataLoader:
    """Batches of this rank's (epoch, index)-keyed items, whose order and randomness depend only on
    (cfg.seed, epoch) once `begin_epoch` has run."""
    return DataLoader(EpochDataset(train_set, cfg.seed), batch_size=cfg.batch_size,
                      sampler=EpochSampler(train_set, cfg.seed, rank, world), drop_last=False,
                      num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0,
                      pin_memory=device.type == "cuda",
                      generator=torch.Generator().manual_seed(cfg.seed))  # keeps the global RNG untouched


def begin_epoch(loader: DataLoader, epoch: int) -> None:
    """Reseed the global RNGs from (seed, epoch) and move `train_loader`'s dataset and sampler to `epoch`."""
    seed_everything(derive_seed(loader.dataset.seed, epoch, _MAIN))
    loader.dataset.set_epoch(epoch)
    loader.sampler.set_epoch(epoch)


def val_share(val_set: Dataset, rank: int = 0, world: int = 1) -> Dataset:
    """This rank's share of the validation set (all of it without torchrun)."""
    return Subset(val_set, range(rank, len(val_set), world)) if world > 1 else val_set
