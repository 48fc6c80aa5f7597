"""`enhance.batch_frames = "auto"`: 8 frames on a CPU, on CUDA sized to the device's memory, and a
batch that runs out of device memory halved and retried with the same output.

The CUDA branch is tested with its two device queries replaced (the tests run on CPUs): what is
checked is the arithmetic and the choice, not a device."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dlkdd.pipeline.config import Config, ConfigError, set_value, validate
from dlkdd.pipeline.enhancers import apply
from dlkdd.pipeline.enhancers.apply import enhance_frames, frames_per_batch, frames_that_fit

GiB = 1 << 30
FRAMES = np.random.default_rng(0).integers(0, 120, (21, 6, 10, 3), dtype=np.uint8)


class Scale(torch.nn.Module):
    """An enhancer that records its batch sizes and runs out of memory above `limit` frames."""

    def __init__(self, limit: int = 1 << 30):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.7))
        self.limit, self.batches = limit, []

    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"planted: {len(x)} frames")
        self.batches.append(len(x))
        return (x * self.scale).clamp(0, 1)


def test_frames_that_fit_takes_a_share_of_the_memory_in_multiples_of_8_within_its_bounds():
    assert frames_that_fit(16 * GiB, 1 << 20) == 1024  # 4096 fit: capped
    assert frames_that_fit(1 * GiB, 10 << 20) == 24  # 25.6 fit in a quarter: down to a multiple of 8
    assert frames_that_fit(1 * GiB, 50 << 20) == 5  # under 8: as many as fit
    assert frames_that_fit(1 * GiB, 2 * GiB) == 1  # not even one: one at a time
    assert frames_that_fit(1 * GiB, 10 << 20, share=0.5) == 48


def test_auto_is_8_on_a_cpu_and_a_number_wins_everywhere():
    module = Scale()
    assert frames_per_batch(module, (6, 10), "cpu") == 8
    assert frames_per_batch(module, (6, 10), "cpu", 3) == 3
    assert frames_per_batch(module, (6, 10), "cuda", 5) == 5  # no device query for a number


def test_auto_on_cuda_sizes_the_batch_from_the_probe_and_the_total_memory(monkeypatch):
    probed = []

    def probe(module, shape, device, precision):
        probed.append((tuple(shape), device.type, precision))
        return 40 << 20  # 40 MiB a frame

    monkeypatch.setattr(apply, "probe_frame_bytes", probe)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda d: SimpleNamespace(total_memory=16 * GiB))
    assert frames_per_batch(Scale(), (240, 320), "cuda", "auto", "bf16") == 96  # 4 GiB / 40 MiB = 102.4
    assert probed == [((240, 320), "cuda", "bf16")]
    # a table-lookup enhancer (gamma) is not probed: its frames cost their uint8 bytes
    lut = SimpleNamespace(enhance_uint8=lambda x: x)
    assert frames_per_batch(lut, (240, 320), "cuda") == 1024
    assert len(probed) == 1


def test_a_batch_that_runs_out_of_memory_is_halved_with_the_same_output(capfd):
    expected = enhance_frames(Scale(), FRAMES, batch=1)
    module = Scale(limit=5)
    out = enhance_frames(module, FRAMES, batch=16)
    assert np.array_equal(out, expected)
    assert module.batches == [4, 4, 4, 4, 4, 1]  # 16 and 8 ran out; 4 from then on
    err = capfd.readouterr().err
    assert "out of device memory; 8 frames per batch" in err and "4 frames per batch" in err


def test_running_out_of_memory_one_frame_at_a_time_is_raised():
    with pytest.raises(torch.OutOfMemoryError):
        enhance_frames(Scale(limit=0), FRAMES, batch=4)


@pytest.mark.parametrize("value", ["big", "0", "-2"])
def test_a_batch_frames_that_is_not_auto_or_a_count_is_a_config_error(value):
    cfg = Config()
    set_value(cfg, "enhance.batch_frames", value)
    with pytest.raises(ConfigError, match="enhance.batch_frames"):
        validate(cfg)


def test_auto_is_the_default_and_valid():
    cfg = Config()
    assert cfg.enhance.batch_frames == "auto"
    validate(cfg)
    set_value(cfg, "enhance.batch_frames", "32")
    validate(cfg)
    assert cfg.enhance.batch_frames == 32
