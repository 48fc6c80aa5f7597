"""The kinds without weights (`models.zero_dce`): gamma correction through a lookup table, and
"none", frames unchanged. Nothing to fit or import: `build` makes all of them.
"""
from __future__ import annotations

from .registry import EnhancerKind, register


def build_gamma(cfg):
    from ...models.zero_dce import GammaEnhancer  # deferred: records load without torch
    return GammaEnhancer(cfg.gamma)


def build_identity(cfg):
    from ...models.zero_dce import IdentityEnhancer  # deferred: records load without torch
    return IdentityEnhancer()


register(EnhancerKind("gamma", build_gamma, keys=("enhancer.gamma",)))
register(EnhancerKind("none", build_identity))
