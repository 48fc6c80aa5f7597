"""The distillation loss (Hinton et al. 2015), as the student's training loop calls it.

`L = (1 - alpha) * CE(z_s, y) + alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))`,
batch means. The T^2 keeps the soft term's gradient on the scale of the hard
term's as T changes: d/dz_s of it is `alpha * T * (softmax(z_s/T) - softmax(z_t/T)) / B`.
`alpha = 0` is exactly plain cross-entropy: the teacher term is never computed,
so nothing from the teacher (not even a NaN) reaches the baseline.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def _full(z: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast) go up to float32; float32/float64 stay as they are."""
    return z if z.dtype in (torch.float32, torch.float64) else z.float()


def soft_term(z_s: torch.Tensor, z_t: torch.Tensor, T: float) -> torch.Tensor:
    """T^2 * KL(softmax(z_t/T) || softmax(z_s/T)), averaged over the batch; the teacher is a constant."""
    z_s = _full(z_s)
    z_t = z_t.detach().to(z_s.dtype)
    kl = F.kl_div(F.log_softmax(z_s / T, dim=1), F.log_softmax(z_t / T, dim=1),
                  log_target=True, reduction="batchmean")
    return (T * T) * kl


def _check(alpha: float, T: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
    if not T > 0:
        raise ValueError(f"temperature must be > 0, got {T!r}")


def distillation_loss(z_s: torch.Tensor, y: torch.Tensor, z_t: torch.Tensor | None,
                      alpha: float, T: float, label_smoothing: float = 0.0) -> torch.Tensor:
    """(1 - alpha) * CE(z_s, y) + alpha * T^2 * KL(teacher || student) at temperature T
    (the CE term with `label_smoothing`)."""
    _check(alpha, T)
    if alpha == 0:
        return F.cross_entropy(_full(z_s), y, label_smoothing=label_smoothing)
    if z_t is None:
        raise ValueError("alpha > 0 needs teacher logits")
    if z_t.shape != z_s.shape:
        raise ValueError(f"teacher logits {tuple(z_t.shape)} and student logits {tuple(z_s.shape)} differ")
    soft = soft_term(z_s, z_t, T)
    if alpha == 1:
        return soft
    return (1.0 - alpha) * F.cross_entropy(_full(z_s), y, label_smoothing=label_smoothing) + alpha * soft


def make_loss_fn(alpha: float, T: float,
                 label_smoothing: float = 0.0) -> Callable[[torch.Tensor, torch.Tensor, object], torch.Tensor]:
    """`loss_fn(logits, y, extra)` for `loop.train`; extra is the batch of teacher logits."""
    alpha, T = float(alpha), float(T)
    _check(alpha, T)  # fail when the loss is made, not at the first step

    def loss_fn(logits: torch.Tensor, y: torch.Tensor, extra=None) -> torch.Tensor:
        return distillation_loss(logits, y, None if alpha == 0 else extra, alpha, T, label_smoothing)

    return loss_fn
