"""How good a fit is, on frames it was not fitted on: how pixel-adaptive the enhancement is,
the brightness it reaches and, for the curve enhancers, their zero-reference loss; and the
warning when a fit has collapsed to one global curve.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from ...models.zero_dce import zero_reference_loss
from ..config import EnhancerConfig
from .apply import enhance_frames

COLLAPSED_CURVE_SPREAD = 1e-3  # curve maps flatter than this across pixels are one global curve


def value_spread(original: np.ndarray, enhanced: np.ndarray, min_count: int = 10) -> float:
    """How pixel-adaptive an enhancement is, in uint8 levels.

    For each channel and original value, the standard deviation of the enhanced values of the
    pixels that had that value, averaged with pixel counts as weights (values seen fewer than
    `min_count` times are skipped). A global curve (a lookup table) scores 0; Zero-DCE's point,
    a curve that depends on the neighbourhood, scores above it.
    """
    o = np.asarray(original).reshape(-1, 3).astype(np.int64)
    e = np.asarray(enhanced).reshape(-1, 3).astype(np.float64)
    total = weight = 0.0
    for c in range(3):
        n = np.bincount(o[:, c], minlength=256)
        s = np.bincount(o[:, c], weights=e[:, c], minlength=256)
        s2 = np.bincount(o[:, c], weights=e[:, c] ** 2, minlength=256)
        keep = n >= min_count
        var = np.maximum(s2[keep] / n[keep] - (s[keep] / n[keep]) ** 2, 0.0)
        total += float((np.sqrt(var) * n[keep]).sum())
        weight += float(n[keep].sum())
    return total / weight if weight else 0.0


@torch.no_grad()
def fit_quality(model: nn.Module, frames: np.ndarray, cfg: EnhancerConfig, batch: int = 16) -> dict:
    """On uint8 frames (N, H, W, 3) the model was not fitted on: value spread and brightness, and
    for the curve enhancers (Zero-DCE, Zero-DCE++) the zero-reference loss (weighted total and
    terms) and the curve map's spread across pixels."""
    model = model.cpu().eval()
    out: dict = {}
    if hasattr(model, "curves"):
        weights = {"spa": cfg.w_spa, "exp": cfg.w_exp, "col": cfg.w_col, "tv": cfg.w_tv}
        sums: dict[str, float] = {}
        spreads = []
        for start in range(0, len(frames), batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch])).permute(0, 3, 1, 2).float() / 255
            enhanced, curves = model(x)
            loss, terms = zero_reference_loss(enhanced, x, curves, weights, cfg.exposure)
            for k, v in {"loss": loss, **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(x)
            spreads.append(curves.flatten(2).std(dim=2).mean(dim=1))  # per image: std over pixels
        out = {**{k: round(v / len(frames), 6) for k, v in sums.items()},
               "curve_spread": round(float(torch.cat(spreads).mean()), 6)}
    enhanced = enhance_frames(model, frames)
    return {**out, "value_spread": round(value_spread(frames, enhanced), 4),
            "mean_before": round(float(frames.mean()) / 255, 4),
            "mean_after": round(float(enhanced.mean()) / 255, 4)}


def quality_warning(ours: dict, reference: dict | None) -> str | None:
    """One line when the fit has collapsed to a global curve (or adapts far less than the reference)."""
    if ours.get("curve_spread", 1.0) < COLLAPSED_CURVE_SPREAD:
        return (f"the fitted enhancer collapsed to one global curve (its curve map varies by "
                f"{ours['curve_spread']:.1e} across pixels): raise enhancer.steps, or use enhancer.init = he")
    if reference and ours["value_spread"] < 0.5 * reference["value_spread"]:
        return (f"the fitted enhancer adapts to the neighbourhood less than half as much as the reference "
                f"(value spread {ours['value_spread']:.2f} vs {reference['value_spread']:.2f} levels)")
    return None
