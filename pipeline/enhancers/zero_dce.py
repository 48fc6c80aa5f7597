"""Zero-DCE and Zero-DCE++ (`models.zero_dce`): fitted on the dataset's own dark frames with the
four zero-reference losses, or the authors' weights imported, or fine-tuned from them.

Each function imports torch and the model when called: the records are read without torch.
"""
from __future__ import annotations

import math

from .registry import FIT_KEYS, EnhancerKind, register

# what the curve fit reads besides FIT_KEYS: the init of the curve network and the loss's target and weights
CURVE_KEYS = ("enhancer.init", "enhancer.exposure", "enhancer.w_spa", "enhancer.w_exp", "enhancer.w_col",
              "enhancer.w_tv")


def build_dce(cfg):
    from ...models.zero_dce import DCENet, init_weights  # deferred: records load without torch
    return init_weights(DCENet(), cfg.seed, cfg.init)


def build_dce_pp(cfg):
    from ...models.zero_dce import DCENetPP, init_weights  # deferred: records load without torch
    return init_weights(DCENetPP(cfg.scale_factor), cfg.seed, cfg.init)


def import_weights(path, cfg):
    """The authors' .pth; a file of the other network (Zero-DCE for ++, or back) is a WeightsError."""
    from ...models.zero_dce import from_checkpoint  # deferred: records load without torch
    return from_checkpoint(path, cfg.scale_factor, kind=cfg.kind)


def load(module, state: dict, path):
    from ...models.zero_dce import load_weights  # deferred: records load without torch
    return load_weights(module, state, path)


def objective(model, cfg) -> tuple:
    """Adam on the weighted zero-reference loss, the rate cosine-decayed after a short warm-up:
    the large early steps shape the curve network, the small late ones settle it (a constant
    rate leaves the fit oscillating around its optimum)."""
    import torch  # deferred: records load without torch

    from ...models.zero_dce import zero_reference_loss
    weights = {"spa": cfg.w_spa, "exp": cfg.w_exp, "col": cfg.w_col, "tv": cfg.w_tv}
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / max(1, cfg.steps)))))

    def loss(x):
        enhanced, curves = model(x)
        return zero_reference_loss(enhanced, x, curves, weights, cfg.exposure)
    return opt, sched, loss


CURVE_FIT = dict(fit_keys=(*FIT_KEYS, *CURVE_KEYS), objective=objective, import_weights=import_weights, load=load)
register(EnhancerKind("zero_dce", build_dce, **CURVE_FIT))
register(EnhancerKind("zero_dce++", build_dce_pp, keys=("enhancer.scale_factor",), **CURVE_FIT))
