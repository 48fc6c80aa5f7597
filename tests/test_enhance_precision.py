"""`enhance.precision` is the enhancer's arithmetic on every device, and part of the clips' fingerprint.

Before, the enhancer ran under fp16 autocast on CUDA and in fp32 on the CPU, so one config gave
different shards by device, and nothing in the fingerprint said which.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dlkdd.pipeline.config import Config, ConfigError, set_value, validate
from dlkdd.pipeline.enhancers.apply import enhance_frames
from dlkdd.pipeline.stages.table import STAGES


class Recorder(torch.nn.Module):
    """An enhancer that records the dtype it computes in (its weight's and its input's)."""

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.5))
        self.seen = []

    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((x.dtype, self.scale.dtype))
        return (x * self.scale).clamp(0, 1)


FRAMES = np.random.default_rng(0).integers(0, 170, (3, 8, 8, 3), dtype=np.uint8)


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                              ("fp16", torch.float16)])
def test_the_enhancer_computes_in_the_configured_precision(precision, dtype):
    module = Recorder()
    out = enhance_frames(module, FRAMES, batch=2, precision=precision)
    assert module.seen == [(dtype, dtype)] * 2
    exact = np.clip(np.round(FRAMES.astype(np.float64) / 255 * 1.5 * 255), 0, 255)
    assert np.abs(out.astype(np.float64) - exact).max() <= (1 if precision == "fp32" else 3)  # x.5 rounds either way


def test_precision_is_part_of_the_clips_fingerprint_and_checked():
    cfg = Config()
    assert "enhance.precision" in STAGES["enhance"].keys(cfg) and cfg.enhance.precision == "fp32"
    set_value(cfg, "enhance.precision", "bf16")
    validate(cfg)
    with pytest.raises(ConfigError, match="enhance.precision"):
        set_value(cfg, "enhance.precision", "fp8")
        validate(cfg)
