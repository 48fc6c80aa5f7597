"""Zero-DCE and Zero-DCE++ low-light enhancers, a gamma baseline, and the zero-reference losses.

DCE-Net (Guo et al., CVPR 2020) predicts per-pixel curve parameters and applies
the quadratic light-enhancement curve `x = x + r * (x*x - x)` eight times.
DCE-Net++ (Li et al., TPAMI 2021) uses depthwise-separable convolutions, one
curve map reused for all eight iterations, and may estimate it at 1/s of the
input resolution. State-dict keys equal the authors' released checkpoints, so
their weights load unchanged. Sign convention of those weights: the network
outputs r = -alpha, so a negative r brightens.

The enhancer protocol (these modules and `models.sci`): `kind`, `scale_factor`, `enhance(x)`
(float N x 3 x H x W in [0, 1] -> enhanced) and, for a table lookup, `enhance_uint8(frames)`.
`pipeline.enhancers` registers each kind: how it is built, fitted, imported and loaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError
from .torchfile import safe_load

ITERATIONS = 8  # curve applications, as the authors


class WeightsError(UserError, ValueError):
    """An enhancer weights file that cannot be used (one line: the file and why)."""


def apply_curves(x: torch.Tensor, curves: list[torch.Tensor]) -> torch.Tensor:
    for r in curves:
        x = x + r * (x * x - x)
    return x


class _CurveNet(nn.Module):
    """What Zero-DCE and Zero-DCE++ share: seven layers e_conv1..7 with symmetric skips, tanh curve maps."""

    def curve_maps(self, x: torch.Tensor) -> torch.Tensor:
        x1 = F.relu(self.e_conv1(x))
        x2 = F.relu(self.e_conv2(x1))
        x3 = F.relu(self.e_conv3(x2))
        x4 = F.relu(self.e_conv4(x3))
        x5 = F.relu(self.e_conv5(torch.cat([x3, x4], 1)))
        x6 = F.relu(self.e_conv6(torch.cat([x2, x5], 1)))
        return torch.tanh(self.e_conv7(torch.cat([x1, x6], 1)))

    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        return self(x)[0].clamp_(0.0, 1.0)


class DCENet(_CurveNet):
    """Zero-DCE: seven 3x3 convolutions with symmetric skips; 24 output channels = 8 RGB curve maps."""

    kind = "zero_dce"

    def __init__(self, width: int = 32):
        super().__init__()
        self.e_conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.e_conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.e_conv3 = nn.Conv2d(width, width, 3, padding=1)
        self.e_conv4 = nn.Conv2d(width, width, 3, padding=1)
        self.e_conv5 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.e_conv6 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.e_conv7 = nn.Conv2d(2 * width, 3 * ITERATIONS, 3, padding=1)

    @property
    def scale_factor(self) -> int:
        return 1

    def curves(self, x: torch.Tensor) -> torch.Tensor:
        return self.curve_maps(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.curves(x)
        return apply_curves(x, list(torch.split(r, 3, dim=1))), r


class SeparableConv(nn.Module):
    """A depthwise 3x3 convolution followed by a pointwise 1x1 one (the authors' CSDN_Tem)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.depth_conv = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch)
        self.point_conv = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_conv(self.depth_conv(x))


class DCENetPP(_CurveNet):
    """Zero-DCE++: separable convolutions, one 3-channel curve map, optionally estimated at 1/s size."""

    kind = "zero_dce++"

    def __init__(self, scale_factor: int = 1, width: int = 32):
        super().__init__()
        if int(scale_factor) < 1:
            raise ValueError(f"scale_factor must be >= 1, got {scale_factor!r}")
        self.scale_factor = int(scale_factor)
        self.e_conv1 = SeparableConv(3, width)
        self.e_conv2 = SeparableConv(width, width)
        self.e_conv3 = SeparableConv(width, width)
        self.e_conv4 = SeparableConv(width, width)
        self.e_conv5 = SeparableConv(2 * width, width)
        self.e_conv6 = SeparableConv(2 * width, width)
        self.e_conv7 = SeparableConv(2 * width, 3)

    def _downsample(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scale_factor
        h, w = x.shape[-2:]
        if s == 1:
            return x
        if h >= s and w >= s:  # as the authors: the scale itself sets the sampling grid
            return F.interpolate(x, scale_factor=1.0 / s, mode="bilinear", align_corners=False)
        return F.interpolate(x, size=(max(1, h // s), max(1, w // s)), mode="bilinear", align_corners=False)

    def curves(self, x: torch.Tensor) -> torch.Tensor:
        r = self.curve_maps(self._downsample(x))
        if r.shape[-2:] != x.shape[-2:]:
            # align_corners=True, as the authors' UpsamplingBilinear2d; size= also covers sizes not divisible by s
            r = F.interpolate(r, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return r

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r = self.curves(x)
        return apply_curves(x, [r] * ITERATIONS), r


def gamma_lut(gamma: float) -> torch.Tensor:
    """uint8 table of round(255 * (i / 255) ** (1 / gamma)) for i in 0..255."""
    i = torch.arange(256, dtype=torch.float64)
    return torch.round(255.0 * (i / 255.0) ** (1.0 / gamma)).clamp_(0, 255).to(torch.uint8)


class GammaEnhancer(nn.Module):
    """Gamma intensity correction through a 256-entry lookup table; no parameters."""

    kind = "gamma"
    scale_factor = 1

    def __init__(self, gamma: float = 2.2):
        super().__init__()
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        self.gamma = float(gamma)
        # not persistent: the table is a function of gamma, which the saved dict carries
        self.register_buffer("lut", gamma_lut(self.gamma), persistent=False)

    def enhance_uint8(self, frames: torch.Tensor) -> torch.Tensor:
        """Any-shape uint8 tensor -> the same shape, looked up."""
        if frames.device.type == "cpu":  # numpy's uint8 fancy indexing is ~5x faster than int64 torch
            return torch.from_numpy(self.lut.numpy()[frames.numpy()])
        return self.lut.to(frames.device)[frames.long()]

    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        index = torch.round(x.clamp(0.0, 1.0) * 255.0).long()
        return self.lut[index].to(x.dtype) / 255.0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.enhance(x), None


class IdentityEnhancer(nn.Module):
    """Kind "none": frames pass through unchanged."""

    kind = "none"
    scale_factor = 1

    def enhance_uint8(self, frames: torch.Tensor) -> torch.Tensor:
        return frames

    def enhance(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return x, None


INITS = ("he", "authors")


def init_weights(model: nn.Module, seed: int = 0, scheme: str = "he") -> nn.Module:
    """Seeded initialisation of the convolutions.

    "authors": weights ~ N(0, 0.02), the authors' choice for their 200-epoch schedule. With the
    network's 3x3x32 fan-in that shrinks activations ~3x per layer, so a fit of a few hundred steps
    leaves every layer but the last bias dead and the curve one global lookup table (measured on the
    sample: curve maps varied by 2e-4 across pixels). "he": N(0, 2 / fan_in) keeps the activations'
    scale through the ReLUs, so the whole curve network trains and the curve adapts per pixel.
    Biases: PyTorch's default for "authors" (as their code), zero for "he".
    """
    if scheme not in INITS:
        raise ValueError(f"unknown init {scheme!r} (choose from {', '.join(INITS)})")
    g = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.weight[0].numel()
                std = 0.02 if scheme == "authors" else (2.0 / fan_in) ** 0.5
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                if m.bias is None:
                    continue
                if scheme == "authors":  # their code keeps PyTorch's default bias initialisation
                    bound = 1.0 / fan_in ** 0.5
                    m.bias.copy_((torch.rand(m.bias.shape, generator=g) * 2 - 1) * bound)
                else:
                    m.bias.zero_()
    return model


# -- loading ---------------------------------------------------------------------------------------

def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (authors' bare state dict, or one under "state_dict"/"model")."""
    obj = safe_load(path, WeightsError, "cannot load enhancer weights")
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj:
        raise WeightsError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    state = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise WeightsError(f"{path}: key {key!r} holds a {type(value).__name__}, not a tensor")
        # nn.DataParallel prefixes every key; such files are otherwise the authors' format
        state[key[len("module."):] if str(key).startswith("module.") else key] = value
    return state


def detect_kind(state: dict) -> str:
    return "zero_dce++" if any("depth_conv" in k for k in state) else "zero_dce"


def check_state_dict(model: nn.Module, state: dict, path: str | Path) -> None:
    """Raise WeightsError naming the first key that is missing, mis-shaped or unexpected."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            raise WeightsError(f"{path}: missing key {key!r} for {model.kind}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise WeightsError(f"{path}: key {key!r} has shape {tuple(state[key].shape)}, "
                               f"{model.kind} expects {tuple(tensor.shape)}")
    for key in state:
        if key not in expected:
            raise WeightsError(f"{path}: unexpected key {key!r} for {model.kind}")


def load_weights(model: nn.Module, state: dict, path: str | Path) -> nn.Module:
    check_state_dict(model, state, path)
    if any(not torch.is_floating_point(v) for v in state.values()):
        raise WeightsError(f"{path}: non-floating-point tensor in enhancer weights")
    model.load_state_dict(state, strict=True)
    return model


def from_checkpoint(path: str | Path, scale_factor: int = 1, kind: str | None = None) -> nn.Module:
    """Load authors'-format weights; the kind is detected from the keys unless `kind` demands one."""
    state = read_state_dict(path)
    found = detect_kind(state)
    kind = kind or found
    if kind not in (DCENet.kind, DCENetPP.kind):
        raise WeightsError(f"{path}: enhancer kind {kind!r} takes no weights")
    model = DCENetPP(scale_factor) if kind == DCENetPP.kind else DCENet()
    if found != kind:
        missing = next(iter(model.state_dict()))
        raise WeightsError(f"{path}: holds {found} weights, not {kind} (missing key {missing!r})")
    return load_weights(model, state, path).eval()


# -- zero-reference losses (Guo et al. 2020, section 3.3) ------------------------------------------

def _pool(x: torch.Tensor, size: int) -> torch.Tensor:
    k = min(size, x.shape[-2], x.shape[-1])  # crops smaller than the patch still give a loss
    return F.avg_pool2d(x, k)


def _neighbour_differences(x: torch.Tensor) -> list[torch.Tensor]:
    """x minus its left, right, upper and lower neighbours, zero-padded like the authors' conv kernels."""
    p = F.pad(x, (1, 1, 1, 1))
    c = p[..., 1:-1, 1:-1]
    return [c - p[..., 1:-1, :-2], c - p[..., 1:-1, 2:], c - p[..., :-2, 1:-1], c - p[..., 2:, 1:-1]]


def spatial_consistency(enhanced: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """L_spa: neighbour contrasts of 4x4 regions are kept from the original image."""
    e = _pool(enhanced.mean(1, keepdim=True), 4)
    o = _pool(original.mean(1, keepdim=True), 4)
    d = sum((de - do) ** 2 for de, do in zip(_neighbour_differences(e), _neighbour_differences(o)))
    return d.mean()


def exposure(enhanced: torch.Tensor, E: float = 0.6) -> torch.Tensor:
    """L_exp: mean brightness of 16x16 patches pulled toward the well-exposedness level E."""
    return ((_pool(enhanced.mean(1, keepdim=True), 16) - E) ** 2).mean()


def color_constancy(enhanced: torch.Tensor) -> torch.Tensor:
    """L_col: the grey-world assumption, on the channel means of each image."""
    m = enhanced.mean((2, 3))
    mr, mg, mb = m[:, 0], m[:, 1], m[:, 2]
    drg, drb, dgb = (mr - mg) ** 2, (mr - mb) ** 2, (mb - mg) ** 2
    return torch.sqrt(drg ** 2 + drb ** 2 + dgb ** 2).mean()


def illumination_smoothness(curves: torch.Tensor) -> torch.Tensor:
    """L_TV of the curve maps, normalised as the authors (per-channel sums over per-plane counts)."""
    n, _, h, w = curves.shape
    dh = ((curves[:, :, 1:, :] - curves[:, :, :-1, :]) ** 2).sum() / max((h - 1) * w, 1)
    dw = ((curves[:, :, :, 1:] - curves[:, :, :, :-1]) ** 2).sum() / max(h * (w - 1), 1)
    return 2 * (dh + dw) / n


DEFAULT_WEIGHTS = {"spa": 1.0, "exp": 10.0, "col": 5.0, "tv": 200.0}


def zero_reference_loss(enhanced: torch.Tensor, original: torch.Tensor, curves: torch.Tensor,
                        weights: dict | None = None, E: float = 0.6) -> tuple[torch.Tensor, dict]:
    """Weighted sum of the four losses; `weights` has keys spa, exp, col, tv. Terms are unweighted."""
    w = {**DEFAULT_WEIGHTS, **(weights or {})}
    terms = {
        "spa": spatial_consistency(enhanced, original),
        "exp": exposure(enhanced, E),
        "col": color_constancy(enhanced),
        "tv": illumination_smoothness(curves),
    }
    total = sum(w[k] * v for k, v in terms.items())
    return total, terms
