"""The commands besides the stages, which put the cache's models to use: the enhancer preview,
windowed predictions with timeline pictures, export, and the table of registered models.

They load torch, so the command line imports this module only when one of them runs.
"""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from ... import models
from ...models.profile import count_params, gflops_per_clip
from ..config import Config
from ..inference import windows as infer
from ..inference.export import export_onnx
from ..inference.predict import export_student
from ..inference.timeline import save_timeline
from ..names import ENHANCER_FILE
from .run import pick_device, run_target
from .table import pipeline_graph

THUMBNAILS = 12  # enhanced frames above a timeline picture


def preview_png(cfg: Config, cache: Path, videos: list[str], clips: int, frames: int, out: Path, device: str,
                console) -> list[str]:
    """Write the preview grid to `out`: original, enhanced and curve-map rows of VIDEOS (enhanced by
    the cache's enhancer, fitted first if needed) or of cached clips (built first if needed).
    Returns the names of the clips shown."""
    # deferred, as in _thumbnail_enhancer: only the commands that show enhanced frames load an enhancer
    from ..enhancers import preview as pv
    from ..enhancers.build import load_enhancer
    graph = pipeline_graph(cfg, cache)
    run_target(cfg, cache, "enhancer" if videos else "enhance", device, console)
    enhancer = load_enhancer(graph.out_dir("enhancer") / ENHANCER_FILE)
    if videos:
        pairs = pv.video_pairs(list(videos)[:clips], enhancer, frames, cfg.data.short_side, pick_device(device))
    else:
        pairs = pv.cache_pairs(graph.out_dir("enhance"), clips)
    pairs = pv.with_curves(pairs, enhancer)
    title = f"{cfg.enhancer.kind} enhancer — {pv.describe(pairs)}"
    pv.save_png(pv.grid(pairs, frames), pairs, out, title)
    return [p[0] for p in pairs]


def predict_timelines(cfg: Config, cache: Path, paths: list[str], window: float, stride: float,
                      min_prob: float | None, crops: int, batch: int, timeline_png: Path | None, device: str,
                      console) -> Iterator[tuple[dict, Path | None]]:
    """Each video's timeline as it finishes, with the picture written for it (`timeline_png`: one per
    video, thumbnails enhanced by the cache's enhancer) or None; {"video", "error"} for a video that
    cannot be read."""
    student = pipeline_graph(cfg, cache).out_dir("student")
    enhance = _thumbnail_enhancer(cfg, cache, device, console) if timeline_png is not None else None
    pictures = iter(infer.timeline_paths(timeline_png, paths)) if timeline_png is not None else None
    for r in infer.predict_many_windows(student, paths, window, stride, min_prob or 0.0, crops, batch,
                                        pick_device(device), THUMBNAILS if enhance else 0, console,
                                        cfg.evaluate.crop_scale):
        png = next(pictures) if pictures is not None else None
        if "error" in r or png is None:
            yield infer.public(r), None
            continue
        shots = r["_thumbnails"]
        frames = enhance(np.stack(list(shots.values()))) if shots else []
        save_timeline(r, png, dict(zip(shots, frames)))
        yield infer.public(r), png


def _thumbnail_enhancer(cfg: Config, cache: Path, device: str, console):
    """The cache's enhancer (fitted first if needed), for the timeline's thumbnails only."""
    # deferred: `predict` without --timeline never loads an enhancer (tests/test_infer.py checks)
    from ..enhancers.apply import enhance_frames
    from ..enhancers.build import load_enhancer
    run_target(cfg, cache, "enhancer", device, console)
    module = load_enhancer(pipeline_graph(cfg, cache).out_dir("enhancer") / ENHANCER_FILE)
    return lambda frames: enhance_frames(module, frames, device=pick_device(device))


def export_model(student_dir: Path, out: Path) -> Path:
    """ONNX when `out` ends in .onnx, else TorchScript; the path written."""
    if out.suffix.lower() == ".onnx":
        return export_onnx(student_dir, out)
    return export_student(student_dir, out)


def model_table(classes: int, frames: int, crop: int) -> list[dict]:
    """Every registered video model: parameters and GFLOPs per clip of frames x crop x crop."""
    rows = []
    for name in models.names():
        with torch.device("meta"):  # sizes only: no weights allocated
            m = models.build(name, classes)
        rows.append({"model": name, "params": count_params(m), "gflops": gflops_per_clip(m, frames, crop, crop)})
    return rows
