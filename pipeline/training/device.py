"""Where models run: the one place "auto" becomes a device, mixed precision is chosen and the CUDA
speed settings (cudnn.benchmark, torch.compile) are applied."""
from __future__ import annotations

import contextlib
from contextlib import nullcontext

import torch


def resolve_device(name) -> torch.device:
    """"auto" -> CUDA when torch sees a GPU, else the CPU; anything else as torch.device reads it."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def amp_dtype(device: torch.device):
    """The autocast dtype on CUDA (bfloat16 where the GPU has bf16 units, else float16 with the
    GradScaler); None elsewhere (full float32). Emulated bf16 (older GPUs, where torch reports bf16
    as supported by default) runs much slower than fp16, so it does not count."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def autocast(device: torch.device, dtype=None):
    """Mixed precision on CUDA in `dtype` (default `amp_dtype`); a no-op on the CPU."""
    if device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=dtype or amp_dtype(device))


def fast_kernels(device: torch.device) -> None:
    """On CUDA, let cuDNN time its convolution algorithms once per input shape and keep the fastest
    (`cudnn.benchmark`): clips of one shape repeat every step. The choice may differ between runs,
    so results agree to float rounding, as between GPUs; nothing changes on the CPU."""
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.benchmark = True


def compiled(module: torch.nn.Module) -> torch.nn.Module:
    """`module` under torch.compile (`train.compile`): the same weights, shared with `module`, so
    its state dict and checkpoints are unchanged; it needs a C++ compiler on the CPU, Triton on CUDA."""
    return torch.compile(module)


@contextlib.contextmanager
def exact_float32():
    """Turn TF32 off where float32 must mean float32 (CUDA would otherwise round convs and matmuls
    to 10-bit mantissas): the teacher's soft labels and an fp32 enhancer."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
