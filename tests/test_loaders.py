"""Loader settings in one place: `num_workers = "auto"`, persistent workers, pinned memory on CUDA,
the validation loader built once per run, batches that do not depend on the worker count, the CUDA
speed keys (cudnn.benchmark, compile, channels_last_3d) chosen as asked and never in a fingerprint."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from rich.console import Console
from torch import nn

from dlkdd.pipeline.config import Config, ConfigError, TrainConfig, build_config
from dlkdd.pipeline.datasets.clips import ViewDataset
from dlkdd.pipeline.datasets.shards import ClipDataset
from dlkdd.pipeline.datasets.views import Windows
from dlkdd.pipeline.stages.table import pipeline_graph
from dlkdd.pipeline.training import device as device_mod
from dlkdd.pipeline.training import loaders, loop
from dlkdd.pipeline.training.loaders import (
    AUTO_MIN_BYTES,
    MAX_WORKERS,
    begin_epoch,
    input_fn,
    loader_options,
    model_input,
    train_loader,
    val_loader,
    worker_count,
)
from tests.cachefix import make_clip_cache, mark_all_fresh

T, H, W, K, V = 3, 12, 16, 3, 4


class Sized(torch.utils.data.Dataset):
    def __init__(self, n: int, item_bytes: int | None = None):
        self.n = n
        if item_bytes is not None:
            self.item_bytes = item_bytes

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return torch.zeros(1)


def test_auto_workers_follow_the_cores_and_skip_small_passes(monkeypatch):
    monkeypatch.setattr(loaders, "cores_per_rank", lambda: 16)
    big = Sized(1000, item_bytes=AUTO_MIN_BYTES // 100)
    assert worker_count("auto", big) == MAX_WORKERS == 8  # cores - 1, capped
    monkeypatch.setattr(loaders, "cores_per_rank", lambda: 4)
    assert worker_count("auto", big) == 3
    assert worker_count("auto", Sized(99, item_bytes=AUTO_MIN_BYTES // 100)) == 0  # a pass under 128 MiB
    assert worker_count("auto", Sized(10)) == 0  # no item_bytes: counted as real-size clips, still small
    monkeypatch.setattr(loaders, "cores_per_rank", lambda: 1)
    assert worker_count("auto", big) == 0  # one core: this process alone
    assert worker_count(2, Sized(3)) == 2 and worker_count("5", Sized(3)) == 5  # a count is kept as given


def test_cores_are_shared_among_torchrun_ranks(monkeypatch):
    monkeypatch.setattr(loaders.os, "sched_getaffinity", lambda pid: set(range(12)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert loaders.cores_per_rank() == 12
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert loaders.cores_per_rank() == 3


def test_loader_options_pin_on_cuda_and_keep_workers():
    on_cuda = loader_options(Sized(4), 2, torch.device("cuda"))
    assert on_cuda == {"num_workers": 2, "pin_memory": True, "persistent_workers": True, "prefetch_factor": 2}
    assert loader_options(Sized(4), 2, torch.device("cpu"), persistent=False)["persistent_workers"] is False
    assert loader_options(Sized(4), 0, "cpu") == {"num_workers": 0, "pin_memory": False}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    make_clip_cache(root / "clips", classes=K, train_per_class=4, T=T, H=H, W=W, train_clips=2)
    data = ClipDataset.from_index(root / "clips" / "index.json", "train", "original")
    yield data
    data.close()


def _batches(clips, workers: int, epochs=(0, 1, 2)) -> list:
    cfg = Config()
    cfg.data.crop, cfg.data.views, cfg.data.min_scale = 8, V, 0.5
    logits = np.random.default_rng(0).standard_normal((100, V, K)).astype(np.float32)
    data = ViewDataset(clips, cfg.data, seed=3, logits=logits, per_video=True, stats={"mean": [0.1] * 3,
                                                                                    "std": [0.05] * 3})
    loader = train_loader(data, TrainConfig(batch_size=5, num_workers=workers, seed=3), torch.device("cpu"))
    to_input = input_fn(data, torch.device("cpu"))
    out = []
    for epoch in epochs:
        begin_epoch(loader, epoch)
        for x, y, extra in loader:
            assert isinstance(x, Windows) and x.pixels.dtype == torch.uint8
            out.append((x.pixels, x.boxes, y, extra, to_input(x)))
    del loader
    return out


def test_zero_and_two_workers_give_identical_batches(clips):
    alone, two = _batches(clips, 0), _batches(clips, 2)
    assert len(alone) == len(two) == 3 * 3  # 12 videos, batches of 5, three epochs
    for a, b in zip(alone, two):
        for ta, tb in zip(a, b):
            assert torch.equal(ta, tb)
    assert not torch.equal(alone[0][1], alone[3][1])  # epochs draw other views: the check can fail


def test_validation_loader_is_built_once_per_run(tmp_path, monkeypatch):
    built = []

    def counting(*args, **kw):
        built.append(args[0])
        return val_loader(*args, **kw)

    monkeypatch.setattr(loop, "val_loader", counting)
    torch.manual_seed(0)
    x = torch.randn(12, 3, 2, 4, 4)
    data = torch.utils.data.TensorDataset(x, torch.arange(12) % K, torch.zeros(12))
    model = nn.Sequential(nn.Conv3d(3, 2, 1), nn.Flatten(), nn.Linear(2 * 2 * 4 * 4, K))
    summary = loop.train(model, data, data, TrainConfig(epochs=3, batch_size=4, num_workers=0), tmp_path, "fp",
                         console=Console(quiet=True))
    assert summary["epochs_run"] == 3 and len(built) == 1


def test_model_input_makes_views_or_copies_floats():
    windows = Windows(torch.zeros(2, T, 8, 8, 3, dtype=torch.uint8), torch.tensor([[0, 0, 8, 8, 0]] * 2))
    with pytest.raises(TypeError, match="view_maker"):
        model_input(windows, torch.device("cpu"))
    x = torch.rand(2, 3, T, 4, 4)
    assert model_input(x, torch.device("cpu")) is x
    last = model_input(x, torch.device("cpu"), channels_last=True)
    assert torch.equal(last, x) and last.is_contiguous(memory_format=torch.channels_last_3d)


def test_cudnn_benchmark_on_cuda_only(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    device_mod.fast_kernels(torch.device("cpu"))
    assert torch.backends.cudnn.benchmark is False
    device_mod.fast_kernels(torch.device("cuda"))
    assert torch.backends.cudnn.benchmark is True


def test_compile_and_channels_last_keys_reach_the_train_step(tmp_path, monkeypatch):
    compiled, formats = [], []
    monkeypatch.setattr(loop, "compiled", lambda net: compiled.append(net) or net)  # no C++ compiler in tests
    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8, 3, 2, 4, 4), torch.arange(8) % K, torch.zeros(8))

    def trained(**keys):
        torch.manual_seed(1)
        model = nn.Sequential(nn.Conv3d(3, 2, 1), nn.Flatten(), nn.Linear(2 * 2 * 4 * 4, K))
        model[0].register_forward_pre_hook(
            lambda m, args: formats.append(args[0].is_contiguous(memory_format=torch.channels_last_3d)))
        cfg = TrainConfig(epochs=2, batch_size=4, num_workers=0, **keys)
        loop.train(model, data, data, cfg, tmp_path / str(keys), "fp", console=Console(quiet=True))
        return model, torch.load(tmp_path / str(keys) / "model.pt", weights_only=True)["model"]

    plain, plain_saved = trained()
    assert compiled == [] and not any(formats)
    fast, fast_saved = trained(compile=True, channels_last=True)
    assert compiled == [fast] and all(formats[len(formats) // 2:])  # every input of the second run
    assert list(fast_saved) == list(plain_saved)  # the model's own state dict: no compile prefixes
    for k, v in plain_saved.items():  # the same training, another memory layout: float rounding apart
        torch.testing.assert_close(fast_saved[k], v, rtol=1e-4, atol=1e-5)


def test_num_workers_reads_auto_or_a_count(tmp_path):
    assert {Config().teacher.num_workers, Config().evaluate.num_workers} == {"auto"}
    cfg = build_config(None, ["teacher.num_workers=3", "student.num_workers=auto", "pretrain.num_workers=0"])
    assert (cfg.teacher.num_workers, cfg.student.num_workers, cfg.pretrain.num_workers) == (3, "auto", 0)
    toml = tmp_path / "c.toml"
    toml.write_text("[teacher]\nnum_workers = 4\n[evaluate]\nnum_workers = \"auto\"\n")
    assert build_config(toml).teacher.num_workers == 4
    for bad in ("teacher.num_workers=-1", "evaluate.num_workers=many", "student.num_workers=1.5"):
        with pytest.raises(ConfigError, match="num_workers") as e:
            build_config(None, [bad])
        assert "\n" not in str(e.value)


SPEED_KEYS = ["teacher.num_workers=0", "student.num_workers=2", "pretrain.num_workers=1", "evaluate.num_workers=3",
              "teacher.compile=true", "student.compile=true", "pretrain.compile=true",
              "teacher.channels_last=true", "student.channels_last=true", "pretrain.channels_last=true"]


def test_speed_only_keys_leave_every_stage_fresh(tmp_path):
    def stale(overrides):
        graph = pipeline_graph(build_config(None, overrides), tmp_path / "cache")
        return {name for name, s in graph.statuses().items() if s.state != "fresh"}

    mark_all_fresh(pipeline_graph(build_config(None, []), tmp_path / "cache"))
    assert stale([]) == set()
    assert stale(SPEED_KEYS) == set()
    assert "teacher" in stale(["teacher.lr=0.01"])  # a real param does make it stale
