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


AUTHORS_SIDE = 512  # both papers train on 512 x 512 images


def authors_tv(weight: float):
    """enhancer.w_tv's default: the authors' weight, which they set for 512 x 512 training images,
    carried to our fit crops (enhancer.crop). L_TV is a per-pixel mean of squared neighbour
    differences, so the same illumination map gives (512 / crop)^2 times the loss on a crop of side
    `crop`: the weight scales by (crop / 512)^2. Measured on the sample (64 px crops, zero_dce++,
    200 steps, curve spread across pixels on held-out frames): w_tv 1600 0.0002 (collapsed to one
    global curve; 600 steps: 0.0000), 200 0.0106, 100 0.0223, 25 (= 1600 x (64 / 512)^2) 0.0406."""
    return lambda section: weight * (section.crop / AUTHORS_SIDE) ** 2


CURVE_FIT = dict(fit_keys=(*FIT_KEYS, *CURVE_KEYS), objective=objective, import_weights=import_weights, load=load)
# illumination smoothness: Zero-DCE's authors weigh it 200, Zero-DCE++'s 1600 (it has 3 curve channels, not 24)
register(EnhancerKind("zero_dce", build_dce, defaults=(("enhancer.w_tv", authors_tv(200.0)),), **CURVE_FIT))
register(EnhancerKind("zero_dce++", build_dce_pp, keys=("enhancer.scale_factor",),
                      defaults=(("enhancer.w_tv", authors_tv(1600.0)),), **CURVE_FIT))
