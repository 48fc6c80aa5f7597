"""SCI, the self-calibrated illumination enhancer (`models.sci`): fitted on the dataset's own dark
frames with the authors' self-calibrated loss, or their released weights imported.

Each function imports torch and the model when called: the record is read without torch.
"""
from __future__ import annotations

from .registry import FIT_KEYS, EnhancerKind, register


def build(cfg):
    from ...models.sci import SCI, init_weights  # deferred: records load without torch
    return init_weights(SCI(), cfg.seed)


def import_weights(path, cfg):
    """The authors' easy.pt, medium.pt or difficult.pt (or a state dict in their keys)."""
    from ...models.sci import from_checkpoint  # deferred: records load without torch
    return from_checkpoint(path)


def load(module, state: dict, path):
    from ...models.sci import load_weights  # deferred: records load without torch
    return load_weights(module, state, path)


def objective(model, cfg) -> tuple:
    """As the authors' train.py: Adam, betas (0.9, 0.999), a constant rate, over all three stages."""
    import torch  # deferred: records load without torch

    from ...models.sci import self_calibrated_loss
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
    return opt, None, lambda x: self_calibrated_loss(*model(x))


# its loss has no Zero-DCE terms to weigh and no curve init: it reads the shared keys alone
register(EnhancerKind("sci", build, fit_keys=FIT_KEYS, objective=objective, import_weights=import_weights,
                      load=load))
