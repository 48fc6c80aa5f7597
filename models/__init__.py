"""Video classifiers, one registry: `models.build(name, num_classes, **kw)`.

Names read `<family>_<size>[_bert]`: families r2plus1d, r3d, mc3; sizes 18 and 34 (the
torchvision widths, Kinetics weights load), small and tiny (same classes, narrower,
one block per stage, for CPU training). `models.zero_dce` (the enhancers) is imported
on its own, never from here.
"""
from __future__ import annotations

from collections.abc import Callable

from torch import nn

from .video_resnet import DEPTHS, FULL_WIDTHS, PretrainedWeightsError, VideoResNet, load_pretrained, read_state_dict

__all__ = ["build", "names", "read_state_dict", "PretrainedWeightsError", "VideoResNet"]

SIZES = {  # size -> (blocks per stage, widths per stage)
    "18": (DEPTHS[18], FULL_WIDTHS),
    "34": (DEPTHS[34], FULL_WIDTHS),
    "small": ((1, 1, 1, 1), (16, 32, 64, 128)),
    "tiny": ((1, 1, 1, 1), (8, 16, 32, 64)),
}
BERT_NAMES = ("r2plus1d_18", "r2plus1d_small")  # also registered as `<name>_bert`

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def _register_video_resnets() -> None:
    for family in ("r2plus1d", "r3d", "mc3"):
        for size, (blocks, widths) in SIZES.items():
            name = f"{family}_{size}"
            _REGISTRY[name] = _video_resnet(family, blocks, widths, bert=False)
            if name in BERT_NAMES:
                _REGISTRY[f"{name}_bert"] = _video_resnet(family, blocks, widths, bert=True)


def _video_resnet(family, blocks, widths, bert):
    def make(num_classes: int, **kw) -> VideoResNet:
        kw.setdefault("bert", bert)
        return VideoResNet(family, blocks, widths, num_classes=num_classes, **kw)
    return make


_register_video_resnets()


def names() -> list[str]:
    """Every registered model name, sorted."""
    return sorted(_REGISTRY)


def build(name: str, num_classes: int, pretrained=None, reinit_fc: bool = False, **kw) -> nn.Module:
    """A fresh model; `pretrained` is a torchvision-format state dict (file or dict) to start from.

    With `pretrained`, `model.pretrained_note` says what was loaded (e.g. "fc
    re-initialised: 400 -> 11 classes"); without it the note is None.
    `reinit_fc` re-initialises the classifier even when the class count matches (other classes).
    Other keywords go to the model (e.g. `bert=True`, `dropout=0.5`, `bn_eps=1e-3`).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(names())}")
    model = _REGISTRY[name](num_classes, **kw)
    model.pretrained_note = (load_pretrained(model, pretrained, reinit_fc)
                              if pretrained is not None and pretrained != "" else None)
    return model
