"""Inference with the student alone: `dlkdd predict` and `dlkdd export`.

The point of DL-KDD is that only the student runs at inference, on original
video with no enhancement cost, so nothing here imports the enhancer
(`pipeline.enhancer`, `models.zero_dce`). A video is decoded into `clips`
temporal clips the way the enhance stage cut the cache (segment-based uniform
sampling, short side resized, resized to the cache's H x W when the aspect
differs), each cut into `crops` spatial crops; softmax probabilities are averaged.

A model's input statistics (meta.json `normalize`) travel with it: `NormalizedInput`
applies them (through `views.normalize`) inside the model that predict runs and that
export writes, so every caller feeds pixel / 255.
"""
from __future__ import annotations

import json
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from ..config import EvaluateConfig
from ..datasets.decode import VideoError, decode_clips
from ..datasets.views import apply_view, fit_size, normalize, test_views
from ..engine import atomic
from ..names import META
from ..training.checkpoints import load_trained
from ..training.device import resolve_device


def _reason(error: Exception, path: str) -> str:
    """The error text without the leading "<path>: " (the result names the video already)."""
    text = str(error)
    return text[len(path) + 2:] if text.startswith(f"{path}: ") else text


class NormalizedInput(torch.nn.Module):
    """The trained network behind its input statistics: takes pixel / 255, returns logits."""

    def __init__(self, model: torch.nn.Module, stats: dict | None):
        super().__init__()
        self.model = model
        self.stats = dict(stats) if stats else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(normalize(x, self.stats))


def load_student(student_dir, device="cpu") -> tuple[NormalizedInput, dict]:
    """(the trained model wrapped to take pixel / 255, in eval mode on `device`, its meta)."""
    model, meta = load_trained(Path(student_dir), str(device))
    return NormalizedInput(model, meta.get("normalize")).eval(), meta


def clip_inputs(frames, meta: dict, crops: int, scale: float = EvaluateConfig.crop_scale) -> torch.Tensor:
    """(clips, T, H, W, 3) uint8 at the model's clip size -> (clips x crops, 3, T, crop, crop) in [0, 1]:
    the test views `evaluate` scores (`views.test_views`; `scale` is evaluate.crop_scale)."""
    views = test_views(int(meta["H"]), int(meta["W"]), crops, scale)
    return torch.stack([apply_view(clip, v, int(meta["crop"])) for clip in frames for v in views])


def video_inputs(path, meta: dict, clips: int, crops: int, scale: float = EvaluateConfig.crop_scale) -> torch.Tensor:
    """(clips x crops, 3, T, crop, crop) float network inputs of one video; VideoError if unreadable."""
    H, W = int(meta["H"]), int(meta["W"])
    # Decode as the enhance stage did: short side at the cache's short side, then fit to (H, W).
    frames, _ = decode_clips(path, int(meta["frames"]), clips, min(H, W), 0)
    return clip_inputs(fit_size(frames, (H, W)), meta, crops, scale)


@torch.inference_mode()
def predict_videos(student_dir, paths, device="cpu", clips: int | None = None, crops: int | None = None,
                   topk: int = 5, scale: float = EvaluateConfig.crop_scale) -> list[dict]:
    """Top-k classes of each video by the student: [{"video", "top": [{"class", "prob"}, ...]}],
    or {"video", "error"} for a video that cannot be decoded. `clips` temporal clips x `crops` test
    views of side `scale` (data.test_clips, evaluate.crops, evaluate.crop_scale: then the
    probabilities are those `evaluate` averages for the video)."""
    device = resolve_device(device)
    model, meta = load_student(student_dir, device)
    classes = list(meta["classes"])
    k = max(1, min(int(topk), len(classes)))
    out = []
    for path in paths:
        name = str(path)
        try:
            x = video_inputs(name, meta, clips or 2, crops or 3, scale)
        except VideoError as e:
            out.append({"video": name, "error": _reason(e, name)})
            continue
        probs = torch.softmax(model(x.to(device)).float(), dim=1).mean(dim=0).cpu()
        p, idx = probs.topk(k)
        out.append({"video": name, "top": [{"class": classes[i], "prob": float(q)}
                                           for q, i in zip(p.tolist(), idx.tolist())]})
    return out


# ----------------------------------------------------------------------------------- export

def export_meta(meta: dict, T: int) -> dict:
    """What a user of an exported file (TorchScript or ONNX) needs to know, stored in it."""
    crop = int(meta["crop"])
    stats = meta.get("normalize") or None
    norm = ("inside the model: (x - normalize.mean) / normalize.std; feed pixel / 255" if stats
            else "none (pixel / 255)")
    return {
        "model": meta["model"], "num_classes": meta["num_classes"], "classes": list(meta["classes"]),
        "trained_on": meta.get("input", "original"),
        "input": {"shape": [-1, 3, T, crop, crop], "layout": "N, C=RGB, T, H, W", "dtype": "float32",
                  "range": [0.0, 1.0], "normalization": norm, "frames": T, "crop": crop,
                  "clip_size": [int(meta["H"]), int(meta["W"])], "short_side": meta.get("short_side"),
                  "max_long_side": meta.get("max_long_side"),
                  "sampling": "segment-based uniform: T equal segments, one frame per segment",
                  "crops": "short-side squares resized to crop x crop (centre for one view)"},
        "normalize": stats,
        "output": "logits (N, num_classes); softmax and average over clips and crops",
        "params": meta.get("params"), "gflops_per_clip": meta.get("gflops_per_clip"),
        **{k: meta[k] for k in ("alpha", "temperature", "variant") if k in meta},
    }


@contextmanager
def _quiet_jit():
    """torch >= 2.9 flags TorchScript as deprecated; it is still the format that loads with torch alone."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # normalize's constants, by design
        yield


class _ScriptedInput(torch.nn.Module):
    """The exported form of `NormalizedInput`: the statistics are buffers, so they move with the
    module's `.to()` and the scripted code holds no device (a traced `torch.as_tensor` would bake in
    the device it was traced on); without statistics, the network alone."""

    def __init__(self, net: torch.nn.Module, stats: dict):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(stats["mean"], dtype=torch.float32).reshape(3, 1, 1, 1))
        self.register_buffer("std", torch.tensor(stats["std"], dtype=torch.float32).reshape(3, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))


def _to_torchscript(model: NormalizedInput, example: torch.Tensor) -> torch.jit.ScriptModule:
    """Scripted (any batch and T, any device); traced if scripting the network fails (then fixed to
    the example's T). The input statistics are scripted around the network as buffers."""
    with _quiet_jit():
        try:
            net = torch.jit.script(model.model)
        except Exception:
            with torch.no_grad():
                net = torch.jit.trace(model.model, example, check_trace=False)
        if not model.stats:
            return net
        return torch.jit.script(_ScriptedInput(net, model.stats))


def check_export(out_path, model: torch.nn.Module, example: torch.Tensor) -> float:
    """Max |logits difference| between the TorchScript file and `model` on `example`."""
    with _quiet_jit():
        loaded = torch.jit.load(str(out_path), map_location="cpu")
    loaded.eval()
    model = model.eval()
    with torch.inference_mode():
        return float((loaded(example) - model(example)).abs().max())


def export_student(student_dir, out_path, example_T: int | None = None) -> Path:
    """Write the student as TorchScript that needs only `torch.jit.load`; class names and the input
    spec are in the file's extra file meta.json; input statistics are applied inside it. Checked against
    the model before it replaces `out_path`."""
    model, meta = load_student(student_dir, "cpu")
    T = int(example_T or meta["frames"])
    crop = int(meta["crop"])
    example = torch.rand(2, 3, T, crop, crop, generator=torch.Generator().manual_seed(0))
    scripted = _to_torchscript(model, example)
    extra = {META: json.dumps(export_meta(meta, T), indent=2)}
    out_path = Path(out_path)
    with atomic.atomic_path(out_path) as tmp:
        with _quiet_jit():
            torch.jit.save(scripted, str(tmp), _extra_files=extra)
        diff = check_export(tmp, model, example)
        if not diff <= 1e-4:
            raise RuntimeError(f"{out_path}: exported model differs from the student by {diff:.3g}; not written")
    return out_path


def read_export_meta(path) -> dict:
    """The meta.json stored in an exported file (needs only torch)."""
    files = {META: ""}
    with _quiet_jit():
        torch.jit.load(str(path), map_location="cpu", _extra_files=files)
    return json.loads(files[META])
