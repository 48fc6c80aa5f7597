"""Every DataLoader of the tool, its settings in one place; the train loader, reproducible epoch by
epoch, and each rank's share of the validation set.

Every source of randomness (global RNGs, shuffle order, worker RNGs, view draws via
`dataset.set_epoch`) is reseeded from (seed, epoch) when an epoch begins, so a run resumed
at epoch k ends with the same weights as an uninterrupted one (bit-identical on the CPU).
The clip datasets use no RNG at all (views are pure functions of ids and seeds), so their
batches do not depend on the number of workers either.

`loader_options` is the one place the DataLoader settings are chosen (`num_workers = "auto"`,
persistent workers, prefetch, pinned memory on CUDA); `make_loader` builds every loader that
reads clips: teacher, student, baseline, pretrain (train and validation, both built once per
run), soft labels and evaluate. `model_input` turns a batch into what the model takes: the
dataset's `view_maker` makes the views on the device from the uint8 windows it ships.
"""
from __future__ import annotations

import os
import random
from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset, get_worker_info

from ..config import TrainConfig
from ..datasets.views import Windows
from ..engine.ranks import cores_per_rank

_MAIN, _WORKER, _SHUFFLE, _VAL_WORKER = 0, 1, 2, 3  # independent seed streams per (seed, epoch)

MAX_WORKERS = 8  # "auto" never starts more: reading uint8 clips, 8 workers outpace one GPU's training step
# "auto" reads in this process when a pass over the dataset reads fewer bytes than this: 128 MiB read in
# ~0.15 s (a 16x128x128 clip, 786 KB, reads in ~1 ms), about what starting the workers costs (0.07-0.24 s
# to the first batch with 1-4 workers, measured on the loaded 2-core machine). The bundled sample
# (144 train videos of 8x64x64 clips: 14 MB) and every test cache stay in-process.
AUTO_MIN_BYTES = 128 << 20
ITEM_BYTES = 16 * 128 * 128 * 3  # a dataset that does not say what one item reads: a real-size clip
PREFETCH = 2  # batches each worker keeps ready (torch's default): uint8 batches are small, so 2 keeps a
#               GPU fed, and more only holds more pinned memory


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

    def __init__(self, dataset: Dataset, seed: int, stream: int = _WORKER):
        self.dataset, self.seed, self.stream = dataset, seed, stream
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
                seed_everything(derive_seed(self.seed, epoch, self.stream, info.id))
            self.set_epoch(epoch)
        return self.dataset[i]


class EpochSampler(Sampler):
    """Yields (epoch, index); the order depends only on (seed, epoch), never on earlier epochs
    (`shuffle=False`: index order, every epoch; for the validation loader)."""

    def __init__(self, dataset: Dataset, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.n, self.seed, self.epoch, self.shuffle = len(dataset), seed, 0, shuffle
        self.shard = (DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                         seed=seed, drop_last=False) if world > 1 and shuffle else None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if self.shard is not None:
            self.shard.set_epoch(epoch)

    def __iter__(self):
        if not self.shuffle:
            order = list(range(self.n))
        elif self.shard is not None:
            order = list(self.shard)
        else:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, _SHUFFLE))
            order = torch.randperm(self.n, generator=g).tolist()
        return iter([(self.epoch, i) for i in order])

    def __len__(self) -> int:
        return len(self.shard) if self.shard is not None else self.n


def worker_count(setting, dataset: Dataset) -> int:
    """DataLoader workers for `setting`: a count is kept as given; "auto" is cores - 1 (this process
    makes the views and runs the model), at most MAX_WORKERS, and 0 when a pass over `dataset` reads
    fewer than AUTO_MIN_BYTES (starting the workers would cost more than they save)."""
    if setting != "auto":
        return int(setting)
    if len(dataset) * int(wrapped_attr(dataset, "item_bytes") or ITEM_BYTES) < AUTO_MIN_BYTES:
        return 0
    return max(0, min(MAX_WORKERS, cores_per_rank() - 1))


def loader_options(dataset: Dataset, num_workers, device: torch.device, persistent: bool = True) -> dict:
    """The DataLoader keywords every loader of clips shares: `num_workers` resolved (`worker_count`),
    workers kept alive between passes (`persistent`: the train and validation loaders of a run),
    PREFETCH batches per worker, pinned memory on CUDA (so the copy to the GPU is non-blocking)."""
    workers = worker_count(num_workers, dataset)
    options = {"num_workers": workers, "pin_memory": torch.device(device).type == "cuda"}
    if workers:
        options.update(persistent_workers=persistent, prefetch_factor=PREFETCH)
    return options


def make_loader(dataset: Dataset, batch_size: int, device, num_workers="auto", *, sampler=None,
                seed: int = 0, persistent: bool = True) -> DataLoader:
    """A loader of `dataset` in index order (or `sampler`'s), with `loader_options`. Its own seeded
    generator draws the workers' base seed, so the global RNG is never touched by it."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, drop_last=False,
                      generator=torch.Generator().manual_seed(seed),
                      **loader_options(dataset, num_workers, device, persistent))


def train_loader(train_set: Dataset, cfg: TrainConfig, device: torch.device, rank: int = 0,
                 world: int = 1) -> DataLoader:
    """Batches of this rank's (epoch, index)-keyed items, whose order and randomness depend only on
    (cfg.seed, epoch) once `begin_epoch` has run."""
    return make_loader(EpochDataset(train_set, cfg.seed), cfg.batch_size, device, cfg.num_workers,
                       sampler=EpochSampler(train_set, cfg.seed, rank, world), seed=cfg.seed)


def val_loader(val_part: Dataset, cfg: TrainConfig, device: torch.device) -> DataLoader:
    """This rank's validation batches in index order, built once per run (persistent workers); its
    items' randomness, if any, is reseeded per (seed, epoch) like the train loader's."""
    return make_loader(EpochDataset(val_part, cfg.seed, _VAL_WORKER), cfg.batch_size, device, cfg.num_workers,
                       sampler=EpochSampler(val_part, cfg.seed, shuffle=False), seed=cfg.seed)


def begin_epoch(loader: DataLoader, epoch: int) -> None:
    """Reseed the global RNGs from (seed, epoch) and move `train_loader`'s dataset and sampler to `epoch`."""
    seed_everything(derive_seed(loader.dataset.seed, epoch, _MAIN))
    loader.dataset.set_epoch(epoch)
    loader.sampler.set_epoch(epoch)


def enter_epoch(loader: DataLoader, epoch: int) -> None:
    """Move `val_loader`'s dataset and sampler to `epoch` (the global RNGs are the train loop's)."""
    loader.dataset.set_epoch(epoch)
    loader.sampler.set_epoch(epoch)


def wrapped_attr(dataset: Dataset, name: str):
    """Attribute `name` of `dataset` or of the dataset it wraps (EpochDataset, Subset), else None."""
    while dataset is not None:
        value = getattr(dataset, name, None)
        if value is not None:
            return value
        dataset = getattr(dataset, "dataset", None)
    return None


def view_maker_of(dataset: Dataset):
    """The `view_maker` of `dataset` or of the dataset it wraps, else None (a dataset of float x)."""
    return wrapped_attr(dataset, "view_maker")


def model_input(x, device: torch.device, view_maker=None, channels_last: bool = False):
    """A batch's x as the model takes it, on `device`: `Windows` become views there (`view_maker`),
    float tensors are copied; channels_last_3d memory format on request (`train.channels_last`)."""
    if isinstance(x, Windows):
        if view_maker is None:
            raise TypeError("a batch of uint8 windows needs its dataset's view_maker")
        x = view_maker(x, device)
    else:
        x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last_3d) if channels_last and x.ndim == 5 else x


def input_fn(dataset: Dataset, device: torch.device, channels_last: bool = False) -> Callable:
    """x -> model input for batches of `dataset` (see `model_input`)."""
    maker = view_maker_of(dataset)
    return lambda x: model_input(x, device, maker, channels_last)


def val_share(val_set: Dataset, rank: int = 0, world: int = 1) -> Dataset:
    """This rank's share of the validation set (all of it without torchrun)."""
    return Subset(val_set, range(rank, len(val_set), world)) if world > 1 else val_set
