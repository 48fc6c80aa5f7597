"""R(2+1)D, R3D and MC3 video ResNets (Tran et al., CVPR 2018) with BasicBlocks.

Module names and shapes follow torchvision's `r2plus1d_18` / `r3d_18` / `mc3_18`, so a
state dict saved from torchvision loads with `load_state_dict(strict=True)` without
torchvision installed. The small and tiny variants are the same classes with other
widths and block counts.

Families differ only in which convolution each stage uses:
  r3d       3x3x3 everywhere ("3d")
  mc3       3x3x3 in the stem and layer1, 1x3x3 in layer2..4 ("2d": mixed convolutions)
  r2plus1d  1x3x3 spatial then 3x1x1 temporal with a BN+ReLU between ("2plus1d")
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import UserError
from .bert_head import TemporalBERTHead
from .torchfile import safe_load

FAMILIES = {  # conv kind of layer1..layer4 (the stem follows layer1's kind)
    "r3d": ("3d", "3d", "3d", "3d"),
    "mc3": ("3d", "2d", "2d", "2d"),
    "r2plus1d": ("2plus1d", "2plus1d", "2plus1d", "2plus1d"),
}
DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
FULL_WIDTHS = (64, 128, 256, 512)
R2PLUS1D_STEM_MID = 45  # torchvision's fixed mid width of the (2+1)D stem at width 64


def mid_planes(cin: int, cout: int) -> int:
    """(2+1)D mid width that keeps the parameter count of a full 3x3x3 conv."""
    return (cin * cout * 3 * 3 * 3) // (cin * 3 * 3 + 3 * cout)


def conv3x3(kind: str, cin: int, cout: int, mid: int, stride: int) -> nn.Module:
    """The block's 3x3(x3) convolution; a Sequential for (2+1)D so keys read `.0.0`, `.0.3`."""
    if kind == "3d":
        return nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False)
    if kind == "2d":
        return nn.Conv3d(cin, cout, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1),
                         bias=False)
    if kind == "2plus1d":
        return nn.Sequential(
            nn.Conv3d(cin, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1),
                      bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, cout, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0),
                      bias=False))
    raise ValueError(f"unknown conv kind {kind!r}")


def shortcut_stride(kind: str, stride: int) -> tuple[int, int, int]:
    """The 1x1x1 shortcut must subsample time exactly as the block's convs do."""
    return (1, stride, stride) if kind == "2d" else (stride, stride, stride)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, kind: str, cin: int, cout: int, stride: int = 1, vmz_mid: bool = False):
        super().__init__()
        mid = mid_planes(cin, cout)  # torchvision uses the block's input width for both convs
        # VMZ (Caffe2, the IG-65M weights) sizes the second conv from its own widths
        # (pytorch/vision#1265): they differ only in a stage's first block.
        mid2 = mid_planes(cout, cout) if vmz_mid else mid
        self.conv1 = nn.Sequential(conv3x3(kind, cin, cout, mid, stride),
                                   nn.BatchNorm3d(cout), nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv3x3(kind, cout, cout, mid2, 1), nn.BatchNorm3d(cout))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv3d(cin, cout, 1, stride=shortcut_stride(kind, stride), bias=False),
                nn.BatchNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(self.conv2(self.conv1(x)) + identity)


def make_stem(kind: str, width: int) -> nn.Sequential:
    """Stride 2 in space only; no max-pool in video ResNets."""
    if kind == "2plus1d":
        mid = max(1, round(R2PLUS1D_STEM_MID * width / FULL_WIDTHS[0]))
        return nn.Sequential(
            nn.Conv3d(3, mid, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, width, (3, 1, 1), stride=1, padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(width), nn.ReLU(inplace=True))
    return nn.Sequential(
        nn.Conv3d(3, width, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
        nn.BatchNorm3d(width), nn.ReLU(inplace=True))


class VideoResNet(nn.Module):
    """(N, 3, T, H, W) clips -> (N, num_classes) logits; `features` gives the (N, D) vector."""

    def __init__(self, family: str, blocks: Sequence[int] = DEPTHS[18],
                 widths: Sequence[int] = FULL_WIDTHS, num_classes: int = 400,
                 dropout: float = 0.0, bert: bool = False, bert_heads: int | None = None,
                 bert_dropout: float = 0.1, bn_eps: float = 1e-5, vmz_mid: bool = False):
        """`bn_eps` and `vmz_mid` reproduce other frameworks' networks (IG-65M: 1e-3 and True)."""
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}; known: {sorted(FAMILIES)}")
        if len(blocks) != 4 or len(widths) != 4:
            raise ValueError("blocks and widths need one entry per stage (4)")
        kinds = FAMILIES[family]
        self.family, self.blocks, self.widths = family, tuple(blocks), tuple(widths)
        self.num_classes = num_classes
        self.feature_dim = widths[-1]

        self.stem = make_stem(kinds[0], widths[0])
        cin = widths[0]
        for i, (kind, n, cout) in enumerate(zip(kinds, blocks, widths)):
            stride = 1 if i == 0 else 2
            layer = [BasicBlock(kind, cin, cout, stride, vmz_mid)]
            layer += [BasicBlock(kind, cout, cout, vmz_mid=vmz_mid) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.feature_dim, num_classes)
        self._init_weights()
        for m in self.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.eps = bn_eps
        # Attached after _init_weights: the transformer keeps PyTorch's own initialisation.
        self.bert = (TemporalBERTHead(self.feature_dim, heads=bert_heads, dropout=bert_dropout)
                     if bert else None)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, T', H', W') output of layer4."""
        x = self.stem(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled (N, feature_dim) vector: global average, or the BERT head's CLS output."""
        x = self.feature_maps(x)
        if self.bert is None:
            return self.avgpool(x).flatten(1)
        return self.bert(x.mean(dim=(3, 4)).transpose(1, 2))  # (N, T', C) time-step tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.features(x)))


class PretrainedWeightsError(UserError, ValueError):
    """A pretrained state dict that does not fit the model (wrong architecture or width)."""


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    obj = safe_load(path, PretrainedWeightsError, "cannot load pretrained weights")
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]  # our own checkpoints (and torchvision references') nest it
    if not isinstance(obj, dict):
        raise PretrainedWeightsError(f"{path}: not a state dict (got {type(obj).__name__})")
    # Weights saved from a DistributedDataParallel wrapper carry a `module.` prefix.
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def load_pretrained(model: VideoResNet, source, reinit_fc: bool = False) -> str:
    """Load a torchvision-format state dict (a file, or the dict itself); returns a one-line note.

    A different class count, or `reinit_fc` (the file's classes are not ours), re-initialises
    `fc` (fine-tuning); a BERT head absent from the file stays freshly initialised; anything
    else that differs is an error.
    """
    path = "pretrained weights" if isinstance(source, dict) else str(source)
    theirs = dict(source) if isinstance(source, dict) else read_state_dict(path)
    ours = model.state_dict()
    notes = []
    their_fc, our_fc = theirs.get("fc.weight"), ours["fc.weight"]
    if (their_fc is not None and their_fc.ndim == 2 and their_fc.shape[1] == our_fc.shape[1]
            and (reinit_fc or their_fc.shape[0] != our_fc.shape[0])):
        theirs = {k: v for k, v in theirs.items() if not k.startswith("fc.")}
        notes.append(f"fc re-initialised: {their_fc.shape[0]} -> {our_fc.shape[0]} classes"
                     + (" (other class names)" if their_fc.shape[0] == our_fc.shape[0] else ""))
    for key, value in theirs.items():
        if key not in ours:
            raise PretrainedWeightsError(f"{path}: unexpected key {key!r} (not in the model)")
        if tuple(value.shape) != tuple(ours[key].shape):
            raise PretrainedWeightsError(
                f"{path}: shape mismatch at {key!r}: file {tuple(value.shape)}, "
                f"model {tuple(ours[key].shape)}")
    fresh_ok = ("fc.", "bert.") if notes else ("bert.",)
    missing = [k for k in ours if k not in theirs and not k.startswith(fresh_ok)]
    if missing:
        raise PretrainedWeightsError(f"{path}: missing key {missing[0]!r} "
                                     f"({len(missing)} model tensors absent from the file)")
    model.load_state_dict(theirs, strict=False)
    fresh_bert = sum(k.startswith("bert.") and k not in theirs for k in ours)
    if fresh_bert:
        if not notes:
            notes.append(f"loaded {len(theirs)} tensors")
        notes.append(f"BERT head initialised fresh ({fresh_bert} tensors)")
    return "; ".join(notes) if notes else f"loaded all {len(theirs)} tensors"
