"""`soft-labels --verify` compares at the logits' scale, not with a fixed absolute 1e-4."""
from __future__ import annotations

import numpy as np

from dlkdd.pipeline.stages.soft_labels import tolerance


def test_tolerance_scales_with_the_logits_and_the_stored_precision():
    small, large = np.array([0.5, -0.2]), np.array([40.0, -3.0])
    assert tolerance(small, np.float32) == 1e-4  # |logits| <= 1: the absolute floor
    assert tolerance(large, np.float32) == 40 * 1e-4  # another BLAS moves a logit of 40 by more than 1e-4
    # a float16 file cannot hold a logit of 40 closer than a few of its units
    assert tolerance(large, np.float16) == 4 * float(np.finfo(np.float16).eps) * 40
    # a tampered entry stays far outside: +0.01 on a logit of 5
    assert 0.01 > tolerance(np.array([5.0]), np.float32)
