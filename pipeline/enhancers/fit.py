"""The `enhancer` stage's work: build, fit (zero-reference), save, load and apply an enhancer.

Fitting needs no labels and no bright references: the four zero-reference
losses of Zero-DCE are minimised on random crops of the dataset's own dark
training frames. `enhance_frames` is the hot path of the `enhance` stage.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ...models import sci, zero_dce
from ...models.torchfile import safe_load
from ...models.zero_dce import WeightsError
from ..config import EnhancerConfig
from ..engine import atomic
from ..engine.atomic import atomic_path
from ..engine.progress import progress_bar
from ..names import ENHANCER_FILE
from ..training.device import autocast

LEARNED = ("zero_dce", "zero_dce++", "sci")
KINDS = (*zero_dce.KINDS, sci.KIND)


def needs_fit(cfg: EnhancerConfig) -> bool:
    """Whether the stage trains: learned kinds in mode fit or finetune (import keeps weights as given)."""
    return cfg.kind in LEARNED and cfg.mode in ("fit", "finetune")


def make_enhancer(cfg: EnhancerConfig, weights_override: str | Path | None = None) -> nn.Module:
    """The enhancer `cfg` asks for: seeded fresh init ("fit") or the weights file ("finetune"/"import")."""
    if cfg.kind not in LEARNED:
        return zero_dce.build(cfg.kind, gamma=cfg.gamma).eval()
    if cfg.mode == "fit":
        if cfg.kind == sci.KIND:
            return sci.init_weights(sci.build(), cfg.seed).eval()
        model = zero_dce.build(cfg.kind, cfg.scale_factor)
        return zero_dce.init_weights(model, cfg.seed, cfg.init).eval()
    weights = weights_override or cfg.weights
    if not weights:
        raise WeightsError(f"enhancer.mode={cfg.mode} needs enhancer.weights = PATH")
    if cfg.kind == sci.KIND:
        return sci.from_checkpoint(weights)
    return zero_dce.from_checkpoint(weights, cfg.scale_factor, kind=cfg.kind)


def _random_crops(frames: torch.Tensor, batch: int, crop: int, g: torch.Generator) -> torch.Tensor:
    """`batch` crops (uint8, B x 3 x c x c) at seeded random frames and offsets of N x 3 x H x W frames."""
    n, _, h, w = frames.shape
    ch, cw = min(crop, h), min(crop, w)
    idx = torch.randint(n, (batch,), generator=g).tolist()
    ys = torch.randint(h - ch + 1, (batch,), generator=g).tolist()
    xs = torch.randint(w - cw + 1, (batch,), generator=g).tolist()
    return torch.stack([frames[i, :, y:y + ch, x:x + cw] for i, y, x in zip(idx, ys, xs)])


def fit(model: nn.Module, frames: np.ndarray, cfg: EnhancerConfig,
        on_step: Callable[[int, dict], None] | None = None, device: str | torch.device = "cpu") -> list[dict]:
    """Minimise the zero-reference loss on random crops of dark uint8 frames (N, H, W, 3).

    Returns one dict of floats per step (step, loss and the unweighted terms); the
    model is left in eval mode. Deterministic on the CPU for a given cfg.seed.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"fit: expected uint8 frames of shape (N, H, W, 3), got {frames.dtype} {frames.shape}")
    device = torch.device(device)
    data = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # uint8 view, no copy
    g = torch.Generator().manual_seed(int(cfg.seed))
    if getattr(model, "kind", None) == sci.KIND:  # its own (self-calibrated) loss and stages
        model.to(device)
        crops = lambda step: _random_crops(data, cfg.batch_size, cfg.crop, g).to(device).float().div_(255.0)  # noqa: E731
        return sci.fit(model, crops, cfg.steps, cfg.lr, cfg.weight_decay, cfg.grad_clip, on_step)
    weights = {"spa": cfg.w_spa, "exp": cfg.w_exp, "col": cfg.w_col, "tv": cfg.w_tv}
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    # Cosine decay after a short warm-up: the large early steps shape the curve network, the
    # small late ones settle it (a constant rate leaves the fit oscillating around its optimum).
    warmup = max(1, cfg.steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (
        1 + math.cos(math.pi * min(1.0, s / max(1, cfg.steps)))))
    history = []
    for step in range(cfg.steps):
        x = _random_crops(data, cfg.batch_size, cfg.crop, g).to(device).float().div_(255.0)
        enhanced, curves = model(x)
        loss, terms = zero_dce.zero_reference_loss(enhanced, x, curves, weights, cfg.exposure)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        record = {"step": step, "loss": loss.item(), **{k: v.item() for k, v in terms.items()}}
        history.append(record)
        if on_step is not None:
            on_step(step, record)
    model.eval()
    return history


def save_enhancer(module: nn.Module, path: str | Path, cfg: EnhancerConfig) -> None:
    """Write {"kind", "scale_factor", "gamma", "state_dict"} atomically (loadable with weights_only)."""
    kind = getattr(module, "kind", cfg.kind)
    record = {
        "kind": kind,
        "scale_factor": int(getattr(module, "scale_factor", cfg.scale_factor)),
        "gamma": float(getattr(module, "gamma", cfg.gamma)),
        "state_dict": {k: v.detach().cpu() for k, v in module.state_dict().items()},
    }
    with atomic_path(Path(path)) as tmp:
        torch.save(record, tmp)


def load_enhancer(path: str | Path) -> nn.Module:
    """The enhancer saved by `save_enhancer`, in eval mode; a bad file is a WeightsError."""
    record = safe_load(path, WeightsError, "cannot load enhancer")
    if not isinstance(record, dict) or not {"kind", "state_dict"} <= record.keys():
        raise WeightsError(f"{path}: not an enhancer saved by dlkdd (expected keys kind, state_dict)")
    kind = record["kind"]
    if kind not in KINDS:
        raise WeightsError(f"{path}: unknown enhancer kind {kind!r}")
    if kind == sci.KIND:
        return sci.load_weights(sci.build(), dict(record["state_dict"]), path).eval()
    module = zero_dce.build(kind, int(record.get("scale_factor", 1)), float(record.get("gamma", 2.2)))
    if kind in LEARNED:
        zero_dce.load_weights(module, dict(record["state_dict"]), path)
    return module.eval()


def enhance_frames(module: nn.Module, frames_uint8: np.ndarray, batch: int = 64,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Enhance uint8 frames (N, H, W, 3) in batches; returns uint8 of the same shape."""
    frames = np.asarray(frames_uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"enhance_frames: expected uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
    device = torch.device(device)
    out = np.empty_like(frames)
    module.to(device).eval()
    lut = getattr(module, "enhance_uint8", None)
    with torch.inference_mode():
        for start in range(0, len(frames), batch):
            chunk = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch])).to(device)
            if lut is not None:  # gamma / identity: a table lookup, no float round trip
                y = lut(chunk)
            else:
                x = chunk.permute(0, 3, 1, 2).float().div_(255.0)
                with autocast(device, torch.float16):
                    e = module.enhance(x)
                y = e.float().mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            out[start:start + batch] = y.cpu().numpy()
    return out


# --- fit quality ----------------------------------------------------------------------------

COLLAPSED_CURVE_SPREAD = 1e-3  # curve maps flatter than this across pixels are one global curve


def value_spread(original: np.ndarray, enhanced: np.ndarray, min_count: int = 10) -> float:
    """How pixel-adaptive an enhancement is, in uint8 levels.

    For each channel and original value, the standard deviation of the enhanced values of the
    pixels that had that value, averaged with pixel counts as weights (values seen fewer than
    `min_count` times are skipped). A global curve (a lookup table) scores 0; Zero-DCE's point,
    a curve that depends on the neighbourhood, scores above it.
    """
    o = np.asarray(original).reshape(-1, 3).astype(np.int64)
    e = np.asarray(enhanced).reshape(-1, 3).astype(np.float64)
    total = weight = 0.0
    for c in range(3):
        n = np.bincount(o[:, c], minlength=256)
        s = np.bincount(o[:, c], weights=e[:, c], minlength=256)
        s2 = np.bincount(o[:, c], weights=e[:, c] ** 2, minlength=256)
        keep = n >= min_count
        var = np.maximum(s2[keep] / n[keep] - (s[keep] / n[keep]) ** 2, 0.0)
        total += float((np.sqrt(var) * n[keep]).sum())
        weight += float(n[keep].sum())
    return total / weight if weight else 0.0


@torch.no_grad()
def fit_quality(model: nn.Module, frames: np.ndarray, cfg: EnhancerConfig, batch: int = 16) -> dict:
    """On uint8 frames (N, H, W, 3) the model was not fitted on: value spread and brightness, and
    for the curve enhancers (Zero-DCE, Zero-DCE++) the zero-reference loss (weighted total and
    terms) and the curve map's spread across pixels."""
    model = model.cpu().eval()
    out: dict = {}
    if hasattr(model, "curves"):
        weights = {"spa": cfg.w_spa, "exp": cfg.w_exp, "col": cfg.w_col, "tv": cfg.w_tv}
        sums: dict[str, float] = {}
        spreads = []
        for start in range(0, len(frames), batch):
            x = torch.from_numpy(np.ascontiguousarray(frames[start:start + batch])).permute(0, 3, 1, 2).float() / 255
            enhanced, curves = model(x)
            loss, terms = zero_dce.zero_reference_loss(enhanced, x, curves, weights, cfg.exposure)
            for k, v in {"loss": loss, **terms}.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(x)
            spreads.append(curves.flatten(2).std(dim=2).mean(dim=1))  # per image: std over pixels
        out = {**{k: round(v / len(frames), 6) for k, v in sums.items()},
               "curve_spread": round(float(torch.cat(spreads).mean()), 6)}
    enhanced = enhance_frames(model, frames)
    return {**out, "value_spread": round(value_spread(frames, enhanced), 4),
            "mean_before": round(float(frames.mean()) / 255, 4),
            "mean_after": round(float(enhanced.mean()) / 255, 4)}


def quality_warning(ours: dict, reference: dict | None) -> str | None:
    """One line when the fit has collapsed to a global curve (or adapts far less than the reference)."""
    if ours.get("curve_spread", 1.0) < COLLAPSED_CURVE_SPREAD:
        return (f"the fitted enhancer collapsed to one global curve (its curve map varies by "
                f"{ours['curve_spread']:.1e} across pixels): raise enhancer.steps, or use enhancer.init = he")
    if reference and ours["value_spread"] < 0.5 * reference["value_spread"]:
        return (f"the fitted enhancer adapts to the neighbourhood less than half as much as the reference "
                f"(value spread {ours['value_spread']:.2f} vs {reference['value_spread']:.2f} levels)")
    return None


# --- the `enhancer` stage ------------------------------------------------------------------

MAX_FIT_VIDEOS = 512  # fitting needs variety, not every video: a spread of at most this many


def training_frames(cfg, frames_per_video: int) -> tuple[np.ndarray, list[str]]:
    """`frames_per_video` uniformly spaced frames from (a spread of) the training videos."""
    from ..datasets.videos import VideoError, dataset_root, decode_clips, read_dataset
    entries = read_dataset(cfg.data, dataset_root(cfg)).entries("train")
    if len(entries) > MAX_FIT_VIDEOS:
        entries = [entries[i] for i in np.linspace(0, len(entries) - 1, MAX_FIT_VIDEOS).astype(int)]
    frames, failed = [], []
    for e in entries:
        try:
            clip, _ = decode_clips(e.path, frames_per_video, 1, cfg.data.short_side, cfg.data.max_long_side)
        except VideoError as err:
            failed.append(str(err))
            continue
        frames.extend(list(clip[0]))
    if not frames:
        raise WeightsError(f"no training video could be read to fit the enhancer "
                           f"({len(failed)} failed; first: {failed[0] if failed else 'none listed'})")
    h = min(f.shape[0] for f in frames)
    w = min(f.shape[1] for f in frames)
    return np.stack([f[:h, :w] for f in frames]), failed


HOLD_OUT_EVERY = 5  # every 5th training video's frames are kept out of the fit, to judge it


def split_held_out(frames: np.ndarray, per_video: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit frames, held-out frames): whole videos held out, so the report sees unseen scenes.
    With fewer than HOLD_OUT_EVERY videos nothing is held out and both are all frames."""
    videos = len(frames) // per_video
    if videos < HOLD_OUT_EVERY:
        return frames, frames
    held = (np.arange(len(frames)) // per_video) % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
    return frames[~held], frames[held]


def run_stage(ctx) -> dict:
    """Write `enhancer/weights.pt` (fitted, fine-tuned, imported, or a parameter-free gamma) and,
    for a fit, `fit.jsonl` (loss terms per step) and `quality.json` (held-out fit quality)."""
    import json
    cfg = ctx.cfg.enhancer
    model = make_enhancer(cfg)
    summary: dict = {"kind": cfg.kind, "mode": cfg.mode if cfg.kind in LEARNED else "none"}
    if needs_fit(cfg):
        frames, failed = training_frames(ctx.cfg, cfg.frames_per_video)
        fit_frames, held = split_held_out(frames, cfg.frames_per_video)
        ctx.console.print(f"  fitting {cfg.kind} ({cfg.mode}, init {cfg.init}) on {len(fit_frames)} dark "
                          f"training frames, {cfg.steps} steps; {len(held)} held out for the report")
        history = _fit_with_progress(ctx, model, fit_frames, cfg)
        with atomic_path(ctx.out / "fit.jsonl") as tmp:
            tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
        quality = {"held_out_frames": len(held), "held_out": len(held) < len(frames),
                   "fitted": fit_quality(model, held, cfg)}
        if cfg.reference:
            reference = make_enhancer(dataclasses.replace(cfg, mode="import", weights=cfg.reference))
            quality["reference"] = {"weights": cfg.reference, **fit_quality(reference, held, cfg)}
        atomic.write_json(ctx.out / "quality.json", quality)
        q = quality["fitted"]
        summary.update(steps=cfg.steps, frames=len(fit_frames), unreadable=len(failed),
                       final_loss={k: round(v, 5) for k, v in history[-1].items() if k != "step"},
                       quality=quality, mean_before=q["mean_before"], mean_after=q["mean_after"])
        _report_quality(ctx.console, quality, cfg)
    save_enhancer(model.cpu(), ctx.out / ENHANCER_FILE, cfg)
    return summary


def _report_quality(console, quality: dict, cfg: EnhancerConfig) -> None:
    rows = [("fitted", quality["fitted"])] + ([("reference", quality["reference"])] if "reference" in quality else [])
    where = "held-out frames" if quality["held_out"] else "the fitting frames (too few videos to hold any out)"
    for name, q in rows:
        curve = (f"zero-reference loss {q['loss']:.4f}, curve spread {q['curve_spread']:.4f}, "
                 if "curve_spread" in q else "")
        console.print(f"  {name}: on {where}: {curve}value spread {q['value_spread']:.2f} levels, brightness "
                      f"{q['mean_before']:.3f} -> {q['mean_after']:.3f}"
                      + (f" (target E = {cfg.exposure})" if cfg.kind != sci.KIND else ""))
    warning = quality_warning(quality["fitted"], quality.get("reference"))
    if warning:
        console.print(f"  [yellow]warning:[/] {warning}")


def _fit_with_progress(ctx, model, frames, cfg) -> list[dict]:
    with progress_bar(ctx.console, "  fit", cfg.steps) as update:
        def on_step(step: int, rec: dict) -> None:
            if step % 5 == 0 or step == cfg.steps - 1:
                terms = " ".join(f"{k} {v:.4f}" for k, v in rec.items() if k != "step")  # per kind's loss
                update(step + 1, terms)
        return fit(model, frames, cfg, on_step=on_step, device=ctx.device)
