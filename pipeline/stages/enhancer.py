"""The `enhancer` stage: `enhancer/weights.pt`, fitted on the dataset's own dark training frames,
fine-tuned from or imported as the authors' weights, or a kind without weights as configured;
a fit also writes `fit.jsonl` (its loss terms per step) and `quality.json` (judged on held-out
videos, against `enhancer.reference` when one is given).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from ...models.zero_dce import WeightsError
from ..config import Config, EnhancerConfig
from ..datasets.decode import VideoError, decode_clips
from ..datasets.splits import dataset_root, read_dataset
from ..engine import atomic
from ..engine.atomic import atomic_path
from ..engine.progress import progress_bar
from ..enhancers import get
from ..enhancers.build import make_enhancer, save_enhancer
from ..enhancers.fit import fit
from ..enhancers.quality import fit_quality, quality_warning
from ..names import ENHANCER_FILE

MAX_FIT_VIDEOS = 512  # fitting needs variety, not every video: a spread of at most this many
HOLD_OUT_EVERY = 5  # every 5th training video's frames are kept out of the fit, to judge it


def run_stage(ctx) -> dict:
    return write_enhancer(ctx.cfg, ctx.out, ctx.device, ctx.console)


def needs_fit(cfg: EnhancerConfig) -> bool:
    """Whether the stage trains: kinds with weights in mode fit or finetune (import keeps them as given)."""
    return get(cfg.kind).learned and cfg.mode in ("fit", "finetune")


def write_enhancer(cfg: Config, out: Path, device, console) -> dict:
    """Make the enhancer `cfg.enhancer` asks for (fitting it when it has weights to fit), save it
    to `out`; returns the stage's summary."""
    e = cfg.enhancer
    model = make_enhancer(e)
    summary: dict = {"kind": e.kind, "mode": e.mode if get(e.kind).learned else "none"}
    if needs_fit(e):
        summary.update(fit_and_judge(cfg, model, out, device, console))
    save_enhancer(model.cpu(), out / ENHANCER_FILE, e)
    return summary


def fit_and_judge(cfg: Config, model, out: Path, device, console) -> dict:
    """Fit `model` on the training videos' frames but the held-out ones, write `fit.jsonl` and
    `quality.json`, print the quality; returns the summary's fit entries."""
    e = cfg.enhancer
    frames, failed = training_frames(cfg, e.frames_per_video)
    fit_frames, held = split_held_out(frames, e.frames_per_video)
    console.print(f"  fitting {e.kind} ({e.mode}, init {e.init}) on {len(fit_frames)} dark "
                  f"training frames, {e.steps} steps; {len(held)} held out for the report")
    history = _fit_with_progress(model, fit_frames, e, device, console)
    with atomic_path(out / "fit.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(h) + "\n" for h in history))
    quality = {"held_out_frames": len(held), "held_out": len(held) < len(frames),
               "fitted": fit_quality(model, held, e)}
    if e.reference:
        reference = make_enhancer(dataclasses.replace(e, mode="import", weights=e.reference))
        quality["reference"] = {"weights": e.reference, **fit_quality(reference, held, e)}
    atomic.write_json(out / "quality.json", quality)
    _report_quality(console, quality, e)
    q = quality["fitted"]
    return dict(steps=e.steps, frames=len(fit_frames), unreadable=len(failed),
                final_loss={k: round(v, 5) for k, v in history[-1].items() if k != "step"},
                quality=quality, mean_before=q["mean_before"], mean_after=q["mean_after"])


def training_frames(cfg: Config, frames_per_video: int) -> tuple[np.ndarray, list[str]]:
    """`frames_per_video` uniformly spaced frames from (a spread of) the training videos."""
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


def split_held_out(frames: np.ndarray, per_video: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit frames, held-out frames): whole videos held out, so the report sees unseen scenes.
    With fewer than HOLD_OUT_EVERY videos nothing is held out and both are all frames."""
    videos = len(frames) // per_video
    if videos < HOLD_OUT_EVERY:
        return frames, frames
    held = (np.arange(len(frames)) // per_video) % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1
    return frames[~held], frames[held]


def _report_quality(console, quality: dict, cfg: EnhancerConfig) -> None:
    rows = [("fitted", quality["fitted"])] + ([("reference", quality["reference"])] if "reference" in quality else [])
    where = "held-out frames" if quality["held_out"] else "the fitting frames (too few videos to hold any out)"
    target = f" (target E = {cfg.exposure})" if "enhancer.exposure" in get(cfg.kind).fit_keys else ""
    for name, q in rows:
        curve = (f"zero-reference loss {q['loss']:.4f}, curve spread {q['curve_spread']:.4f}, "
                 if "curve_spread" in q else "")
        console.print(f"  {name}: on {where}: {curve}value spread {q['value_spread']:.2f} levels, brightness "
                      f"{q['mean_before']:.3f} -> {q['mean_after']:.3f}" + target)
    warning = quality_warning(quality["fitted"], quality.get("reference"))
    if warning:
        console.print(f"  [yellow]warning:[/] {warning}")


def _fit_with_progress(model, frames: np.ndarray, cfg: EnhancerConfig, device, console) -> list[dict]:
    with progress_bar(console, "  fit", cfg.steps) as update:
        def on_step(step: int, rec: dict) -> None:
            if step % 5 == 0 or step == cfg.steps - 1:
                terms = " ".join(f"{k} {v:.4f}" for k, v in rec.items() if k != "step")  # per kind's loss
                update(step + 1, terms)
        return fit(model, frames, cfg, on_step=on_step, device=device)
