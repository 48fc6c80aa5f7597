"""What an enhancer kind is (`EnhancerKind`) and how a family module registers one (`register`).

A record holds functions, not modules: each imports torch only when called, so that records
are read without it (the stage table, `dlkdd status`, `--help`, the config check).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The [enhancer] keys every fit reads: the shared loop's crops, optimiser and seed (`fit.fit`),
# and the frames the stage takes from each training video.
FIT_KEYS = ("enhancer.steps", "enhancer.batch_size", "enhancer.crop", "enhancer.frames_per_video",
            "enhancer.lr", "enhancer.weight_decay", "enhancer.grad_clip", "enhancer.seed")


@dataclass(frozen=True)
class EnhancerKind:
    """One value of enhancer.kind. Every function takes the [enhancer] config section.

    build: section -> the module, with seeded fresh weights when it has any (a fit starts there).
    keys: the [enhancer] keys `build` reads besides the seed and init (scale_factor, gamma).
    fit_keys: the [enhancer] keys its fit reads (FIT_KEYS and its loss's own); empty without weights.
    objective: (module, section) -> (optimizer, lr scheduler or None, batch -> (loss, terms)):
        what its fit minimises; `fit.fit` runs the steps. None for a kind without weights.
    import_weights: (path, section) -> the module with the authors' weights from `path`, in eval mode.
    load: (module, state dict, path) -> the module with a saved state dict, every tensor checked.
    defaults: (("enhancer.key", section -> value), ...) the kind's own defaults, where they follow its
        authors' or other [enhancer] keys (Zero-DCE's w_tv: the authors' weight at the fit's crop size);
        a value the user sets wins.
    """
    name: str
    build: Callable[[Any], Any]
    keys: tuple[str, ...] = ()
    fit_keys: tuple[str, ...] = ()
    objective: Callable[[Any, Any], tuple] | None = None
    import_weights: Callable[[Any, Any], Any] | None = None
    load: Callable[[Any, dict, Any], Any] | None = None
    defaults: tuple[tuple[str, Callable[[Any], Any]], ...] = ()

    @property
    def learned(self) -> bool:
        """Whether it has weights: fitted, fine-tuned or imported (else `build` makes all of it)."""
        return self.objective is not None


KINDS: dict[str, EnhancerKind] = {}  # by name, in registration order (the order `names()` lists)


def register(kind: EnhancerKind) -> EnhancerKind:
    """Add `kind` (a family module calls this for each of its kinds, at import)."""
    if kind.name in KINDS:
        raise ValueError(f"enhancer kind {kind.name!r} registered twice")
    has = (bool(kind.fit_keys), kind.import_weights is not None, kind.load is not None)
    if any(part != kind.learned for part in has):
        raise ValueError(f"enhancer kind {kind.name!r}: objective, fit_keys, import_weights and load "
                         f"go together (a kind has weights or has none)")
    KINDS[kind.name] = kind
    return kind
