"""The `enhance` stage: every video -> T-frame clips, original and enhanced, in HDF5 shards.

The stage's context adapted to `enhancing.make.make_clips`, which does the work (and whose
imports this module's code fingerprint follows, for `enhance` and for `pretrain`'s clips).
"""
from __future__ import annotations

from ..datasets.splits import dataset_root
from ..names import ENHANCER_FILE
from .enhancing.make import make_clips


def run_stage(ctx) -> dict:
    cfg = ctx.cfg
    return make_clips(cfg.data, cfg.enhance, dataset_root(cfg), ctx.out, ctx.dir_of("enhancer") / ENHANCER_FILE,
                      ctx.graph.inspect(ctx.name).fingerprint, ctx.device, ctx.console, ctx.options)
