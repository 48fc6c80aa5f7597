"""Mixed precision picks bf16 only where the GPU has bf16 units (emulated bf16 is slower than fp16)."""
from __future__ import annotations

import torch

from dlkdd.pipeline.training import device as dev


def _fake_cuda(monkeypatch, native: bool, emulated: bool = True):
    """torch.cuda.is_bf16_supported as on a GPU with (or without) bf16 units; emulation on by default."""
    def is_bf16_supported(including_emulation: bool = True) -> bool:
        return native or (including_emulation and emulated)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", is_bf16_supported)


def test_a_gpu_with_bf16_units_trains_in_bf16(monkeypatch):
    _fake_cuda(monkeypatch, native=True)
    assert dev.amp_dtype(torch.device("cuda")) == torch.bfloat16


def test_a_gpu_that_only_emulates_bf16_trains_in_fp16_with_the_scaler(monkeypatch):
    _fake_cuda(monkeypatch, native=False, emulated=True)  # torch's default answer would be True here
    assert torch.cuda.is_bf16_supported()
    assert dev.amp_dtype(torch.device("cuda")) == torch.float16


def test_the_cpu_runs_full_float32():
    assert dev.amp_dtype(torch.device("cpu")) is None
