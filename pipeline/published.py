"""The published weights a model can start from, by registered name, and the check of a source.

Torch-free and at the foundation of the package (beside `config.py`, which validates a
`pretrained` value with `check_source` before anything runs); the downloading and loading
are in `training/weights.py`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PRETRAIN = "pretrain"  # the source "the pretrain stage's weights for this architecture"

# torchvision's Kinetics-400 video statistics (torchvision.transforms._presets.VideoClassification);
# moabitcoin/ig65m-pytorch's extract.py normalises with the same numbers.
KINETICS_NORMALIZE = {"mean": [0.43216, 0.394666, 0.37645], "std": [0.22803, 0.22145, 0.216989]}
# The IG-65M weights come from Caffe2 (VMZ): BatchNorm eps 1e-3 and VMZ's conv widths.
VMZ_KWARGS = {"bn_eps": 1e-3, "vmz_mid": True}

_IG65M = "https://github.com/moabitcoin/ig65m-pytorch/releases/download/v1.0.0/"
_TORCHVISION = "https://download.pytorch.org/models/"


@dataclass(frozen=True)
class Published:
    url: str  # the file name ends in -<sha256 prefix>.pth
    classes: int  # rows of the published classifier
    normalize: dict
    model_kwargs: dict = field(default_factory=dict)


# (name, architecture) -> weights; the `_bert` variants load the same backbone.
REGISTERED: dict[tuple[str, str], Published] = {
    ("kinetics400", "r2plus1d_18"): Published(_TORCHVISION + "r2plus1d_18-91a641e6.pth", 400, KINETICS_NORMALIZE),
    ("kinetics400", "r3d_18"): Published(_TORCHVISION + "r3d_18-b3b3357e.pth", 400, KINETICS_NORMALIZE),
    ("kinetics400", "mc3_18"): Published(_TORCHVISION + "mc3_18-a90a0ba3.pth", 400, KINETICS_NORMALIZE),
    ("ig65m", "r2plus1d_34"): Published(_IG65M + "r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth", 359,
                                        KINETICS_NORMALIZE, VMZ_KWARGS),
    ("ig65m_kinetics", "r2plus1d_34"): Published(
        _IG65M + "r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth", 400, KINETICS_NORMALIZE, VMZ_KWARGS),
}
NAMES = sorted({name for name, _ in REGISTERED})


def _arch(model: str) -> str:
    return model[:-len("_bert")] if model.endswith("_bert") else model


def published(name: str, model: str) -> Published | None:
    return REGISTERED.get((name, _arch(model)))


def check_source(source: str, model: str) -> str | None:
    """Why `source` cannot start `model` (checked with the config, before anything runs), or None."""
    if source in ("", PRETRAIN):
        return None
    if source in NAMES:
        if published(source, model) is None:
            archs = sorted(a for n, a in REGISTERED if n == source)
            return f"{source} weights exist for {', '.join(archs)}, not for {model}"
        return None
    if not Path(source).is_file():
        return (f"{source}: no such file (expected \"\", {PRETRAIN}, a registered name "
                f"({', '.join(NAMES)}) or a state dict file)")
    return None


def pretraining_on(cfg) -> bool:
    """Whether the pretrain stage has footage to train on (`pretrain.root`)."""
    return bool(cfg.pretrain.root)


def uses_pretrain(cfg, section: str) -> bool:
    """Whether the stage training `section` ("teacher" | "student") starts from the pretrain stage."""
    return getattr(cfg, section).pretrained == PRETRAIN and pretraining_on(cfg)


def source_identity(cfg, section: str) -> str:
    """What `<section>.pretrained` starts the model from, as its stage's fingerprint compares it:
    "" (random weights, as `pretrain` gives while pretraining is off), "pretrain" (that stage's
    outputs are upstream, so its own fingerprint counts too), a registered name with its file (the
    sha256 prefix in the file name fixes the weights), or "file" (the file's content is an input;
    its path does not count, so a moved file is the same source)."""
    train = getattr(cfg, section)
    source = train.pretrained
    if source == PRETRAIN:
        return PRETRAIN if pretraining_on(cfg) else ""
    if source in ("", *NAMES):
        weights = published(source, train.model) if source else None
        return f"{source} ({weights.url.rsplit('/', 1)[1]})" if weights else source
    return "file"
