"""Model size and cost: parameter count and GFLOPs per clip (2 x multiply-adds).

Counted: Conv3d/Conv2d, Linear, and attention (projections + the two L x L matmuls).
BatchNorm, activations and pooling are left out, as is usual for video models.
Note torchvision's model tables quote multiply-adds as "GFLOPS": half of ours.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _conv_macs(m: nn.Module, out: torch.Tensor) -> int:
    return out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)


def _linear_macs(m: nn.Linear, out: torch.Tensor) -> int:
    return out.numel() * m.in_features


def _attention_macs(lq: int, lk: int, dim: int) -> int:
    """q/k/v/out projections plus scores (Q K^T) and the weighted sum (A V)."""
    return 2 * lq * dim * dim + 2 * lk * dim * dim + 2 * lq * lk * dim


def _seq_len(x: torch.Tensor, batch_first: bool) -> int:
    if x.dim() == 2:  # unbatched (L, E)
        return x.shape[0]
    return x.shape[1] if batch_first else x.shape[0]


def _encoder_layer_macs(m: nn.TransformerEncoderLayer, x: torch.Tensor) -> int:
    # Counted as a whole: in eval/no-grad PyTorch may run the layer as one fused kernel
    # and its submodules' hooks never fire.
    n = x.shape[0] if x.dim() == 3 else 1
    seq = _seq_len(x, m.self_attn.batch_first)
    dim = m.self_attn.embed_dim
    ff = m.linear1.out_features
    return n * (_attention_macs(seq, seq, dim) + 2 * seq * dim * ff)


def _mha_macs(m: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor) -> int:
    n = query.shape[0 if m.batch_first else 1] if query.dim() == 3 else 1
    return n * _attention_macs(_seq_len(query, m.batch_first), _seq_len(key, m.batch_first),
                               m.embed_dim)


@torch.no_grad()
def gflops_per_clip(model: nn.Module, T: int, H: int, W: int) -> float:
    """GFLOPs (2 x multiply-adds) of one forward pass on one (3, T, H, W) clip."""
    total = 0
    hooks = []
    inside_encoder = {id(sub) for m in model.modules()
                      if isinstance(m, nn.TransformerEncoderLayer)
                      for sub in m.modules() if sub is not m}

    def add(macs: int) -> None:
        nonlocal total
        total += macs

    for m in model.modules():
        if id(m) in inside_encoder:
            continue
        if isinstance(m, (nn.Conv3d, nn.Conv2d, nn.Conv1d)):
            hooks.append(m.register_forward_hook(lambda m, i, o: add(_conv_macs(m, o))))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lambda m, i, o: add(_linear_macs(m, o))))
        elif isinstance(m, nn.TransformerEncoderLayer):
            hooks.append(m.register_forward_hook(
                lambda m, i, o: add(_encoder_layer_macs(m, i[0]))))
        elif isinstance(m, nn.MultiheadAttention):
            # MHA applies its projections functionally: Linear hooks would miss them.
            hooks.append(m.register_forward_hook(
                lambda m, i, o: add(_mha_macs(m, i[0], i[1] if len(i) > 1 else i[0]))))
    was_training = model.training
    param = next(model.parameters(), None)
    clip = torch.zeros(1, 3, T, H, W, device=param.device if param is not None else "cpu",
                       dtype=param.dtype if param is not None else torch.float32)
    try:
        model.eval()  # no BatchNorm statistics updated by the dummy clip
        model(clip)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return 2 * total / 1e9
