"""SCI, the self-calibrated illumination enhancer (Ma, Ma, Liu, Fan, Luo; CVPR 2022).

Inference is one tiny illumination network (three 3x3 convolutions, 258 parameters):
illumination `i = clamp(net(x) + x, 1e-4, 1)`, enhanced `r = clamp(x / i, 0, 1)`.
Training adds a calibration network that feeds each stage a corrected input, and
minimises the authors' unsupervised loss (fidelity + smoothness) over three stages;
the calibration network is dropped at inference. Module names equal the authors'
`model.py`, so their released state dicts (`weights/*.pt`, MIT licence) load unchanged.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from .zero_dce import WeightsError, check_state_dict, read_state_dict

STAGES = 3  # training stages of the authors' Network (inference uses the first only)


class EnhanceNetwork(nn.Module):
    """The illumination estimator (authors' EnhanceNetwork, layers=1, channels=3)."""

    def __init__(self, layers: int = 1, channels: int = 3):
        super().__init__()
        self.in_conv = nn.Sequential(nn.Conv2d(3, channels, 3, 1, 1), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.BatchNorm2d(channels), nn.ReLU())
        # the authors append the same module `layers` times: its tensors appear under both names
        self.blocks = nn.ModuleList([self.conv for _ in range(layers)])
        self.out_conv = nn.Sequential(nn.Conv2d(channels, 3, 3, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.in_conv(x)
        for block in self.blocks:
            fea = fea + block(fea)
        return torch.clamp(self.out_conv(fea) + x, 0.0001, 1)


class CalibrateNetwork(nn.Module):
    """Training only: corrects the next stage's input (authors' CalibrateNetwork, layers=3, channels=16)."""

    def __init__(self, layers: int = 3, channels: int = 16):
        super().__init__()
        self.in_conv = nn.Sequential(nn.Conv2d(3, channels, 3, 1, 1), nn.BatchNorm2d(channels), nn.ReLU())
        self.convs = nn.Sequential(nn.Conv2d(channels, channels, 3, 1, 1), nn.BatchNorm2d(channels), nn.ReLU(),
                                   nn.Conv2d(channels, channels, 3, 1, 1), nn.BatchNorm2d(channels), nn.ReLU())
        self.blocks = nn.ModuleList([self.convs for _ in range(layers)])
        self.out_conv = nn.Sequential(nn.Conv2d(channels, 3, 3, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.in_conv(x)
        for block in self.blocks:
            fea = fea + block(fea)
        return x - self.out_conv(fea)


class SCI(nn.Module):
    """The authors' Network: submodules `enhance` (inference) and `calibrate` (training only).

    The submodule `enhance` keeps the authors' key prefix; the method `enhance(x)` (the
    enhancer protocol of `models.zero_dce`: x in [0, 1] -> enhanced) shadows it as an
    attribute, so the submodule is reached as `illumination_net`.
    """

    kind = "sci"
    scale_factor = 1

    def __init__(self, stages: int = STAGES):
        super().__init__()
        self.stages = stages
        self.enhance = EnhanceNetwork()
        self.calibrate = CalibrateNetwork()

    @property
    def illumination_net(self) -> EnhanceNetwork:
        return self._modules["enhance"]

    def enhance(self, x: torch.Tensor) -> torch.Tensor:  # noqa: F811 (the submodule lives in _modules)
        """x in [0, 1], (N, 3, H, W) -> enhanced, as the authors' Finetunemodel: clamp(x / i, 0, 1)."""
        return torch.clamp(x / self.illumination_net(x), 0, 1)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(stage inputs, illuminations) of the authors' Network.forward, what the loss reads."""
        inputs, illus = [], []
        op = x
        for _ in range(self.stages):
            inputs.append(op)
            i = self.illumination_net(op)
            op = x + self.calibrate(torch.clamp(x / i, 0, 1))
            illus.append(i)
        return inputs, illus


def init_weights(model: SCI, seed: int = 0) -> SCI:
    """The authors' weights_init, seeded: conv weights ~ N(0, 0.02), biases 0, BN scales ~ N(1, 0.02)."""
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * 0.02)
                m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=g) * 0.02)
    return model


def from_checkpoint(path: str | Path) -> SCI:
    """The authors' released weights (easy.pt, medium.pt, difficult.pt) or a state dict in their keys."""
    state = read_state_dict(path)
    if not any(k.startswith("enhance.") for k in state):
        raise WeightsError(f"{path}: holds no SCI weights (missing key 'enhance.in_conv.0.weight')")
    return load_weights(SCI(), state, path).eval()


def load_weights(model: SCI, state: dict, path: str | Path) -> SCI:
    """Every key checked (name and shape); BatchNorm's step counters are the only integer tensors."""
    check_state_dict(model, state, path)
    for key, value in state.items():
        if not torch.is_floating_point(value) and not key.endswith("num_batches_tracked"):
            raise WeightsError(f"{path}: key {key!r} is not a floating-point tensor")
    model.load_state_dict(state, strict=True)
    return model


# -- the authors' self-calibrated loss (loss.py: LossFunction, SmoothLoss) -------------------------

# (dy, dx) of the 12 neighbour offsets the authors' SmoothLoss compares; it lists each pair in both
# orders (w1..w24), which gives each term twice: weight 2 below.
OFFSETS = ((1, 0), (0, 1), (1, 1), (1, -1), (2, 0), (0, 2), (2, 1), (2, -1), (1, 2), (1, -2), (2, 2), (2, -2))
YCBCR = ([[0.257, -0.148, 0.439], [0.564, -0.291, -0.368], [0.098, 0.439, -0.071]],
         [16.0 / 255.0, 128.0 / 255.0, 128.0 / 255.0])


def _ycbcr_as_authors(x: torch.Tensor) -> torch.Tensor:
    # The authors view NCHW memory as rows of 3 values (not one pixel's RGB); kept as they train.
    mat = torch.tensor(YCBCR[0], dtype=x.dtype, device=x.device)
    bias = torch.tensor(YCBCR[1], dtype=x.dtype, device=x.device)
    return (x.contiguous().view(-1, 3).mm(mat) + bias).view(x.shape)


def _pair(t: torch.Tensor, dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """t at (y, x) and at (y + dy, x + dx), over the positions where both exist."""
    h, w = t.shape[-2:]
    ys, yd = slice(0, h - dy), slice(dy, h)
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    return t[..., ys, xs], t[..., yd, xd]


def smoothness(inp: torch.Tensor, illu: torch.Tensor, sigma: float = 10.0) -> torch.Tensor:
    """SmoothLoss: L1 gradients of the illumination, weighted by the input's YCbCr similarity."""
    y = _ycbcr_as_authors(inp)
    total = illu.new_zeros(())
    for dy, dx in OFFSETS:
        a, b = _pair(y, dy, dx)
        w = torch.exp(((a - b) ** 2).sum(1, keepdim=True) * (-1.0 / (2 * sigma * sigma)))
        ia, ib = _pair(illu, dy, dx)
        total = total + 2 * (w * (ia - ib).abs().sum(1, keepdim=True)).mean()
    return total


def self_calibrated_loss(inputs: list[torch.Tensor], illus: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """Sum over stages of 1.5 * MSE(illumination, stage input) + smoothness (authors' LossFunction)."""
    fidelity = sum(nn.functional.mse_loss(i, x) for x, i in zip(inputs, illus))
    smooth = sum(smoothness(x, i) for x, i in zip(inputs, illus))
    return 1.5 * fidelity + smooth, {"fidelity": fidelity.detach(), "smooth": smooth.detach()}
