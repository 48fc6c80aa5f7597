"""What one task does, on a dask worker or in this process: decode, sample and resize its videos,
enhance their distinct frames together, and take each clip's statistics where its frames are made.

Torch loads on first use (each deferred import says so): with `enhance.cluster_after = 0` the
cluster starts before this process loads torch, and loads it meanwhile.
"""
from __future__ import annotations

import os

import numpy as np

from ...datasets.decode import VideoError, decode_clips
from ...datasets.moments import channel_moments
from ...datasets.shard_parts import Job

_ENHANCERS: dict[str, object] = {}


def load_enhancer_once(path: str, device: str):
    """One enhancer per process (a dask worker keeps it across tasks), reloaded when the file changes."""
    key = f"{path}:{os.stat(path).st_mtime_ns}:{device}"
    if key not in _ENHANCERS:
        from ...enhancers.build import load_enhancer  # deferred: torch (see the module docstring)
        _ENHANCERS.clear()
        _ENHANCERS[key] = load_enhancer(path).to(device)
    return _ENHANCERS[key]


def process_videos(jobs: list[Job], T: int, clips: dict, size: tuple[int, int], enhancer_path: str,
                   batch_frames: int | str, device: str, precision: str = "fp32") -> list[dict]:
    """Decode, sample and resize each video; enhance the distinct frames of all of them together.

    One result per video; a failure comes back as {"job", "error": reason}. Frames of
    different videos share enhancer batches (of `batch_frames`): a frame's result does not
    depend on its batch neighbours (tests/test_enhance.py checks it against per-video runs).
    """
    return enhance_decoded(decode_videos(jobs, T, clips, size), enhancer_path, batch_frames, device, precision)


def decode_videos(jobs: list[Job], T: int, clips: dict, size: tuple[int, int], **_) -> dict:
    """The decoding half of `process_videos`: each video's clips, resized, and its distinct frames."""
    from ...datasets.views import fit_size  # deferred: torch (see the module docstring)
    results, distinct, inverses = [], [], []
    for job in jobs:
        try:
            frames, indices = decode_clips(job.path, T, clips[job.split], min(size), max_long_side=0)
        except VideoError as e:
            results.append({"job": job, "error": str(e)})
            continue
        frames = fit_size(frames, size)
        # clips of one video share frames (and short videos repeat them): enhance each once
        _, first, inverse = np.unique(indices.ravel(), return_index=True, return_inverse=True)
        distinct.append(frames.reshape(-1, *frames.shape[2:])[first])
        inverses.append(inverse.ravel())
        st = os.stat(job.path)
        results.append({"job": job, "original": frames, "indices": indices, "size": st.st_size,
                        "moments": [{"original": channel_moments(clip)} for clip in frames]})
    return {"results": results, "distinct": distinct, "inverses": inverses}


def enhance_decoded(decoded: dict, enhancer_path: str, batch_frames: int | str, device: str, precision: str = "fp32",
                    **_) -> list[dict]:
    """The enhancing half of `process_videos`, with each clip's statistics."""
    from ...enhancers.apply import enhance_frames, frames_per_batch  # deferred: torch (module docstring)
    results, distinct, inverses = decoded["results"], decoded["distinct"], decoded["inverses"]
    if distinct:
        module, frames = load_enhancer_once(enhancer_path, device), np.concatenate(distinct)
        batch = frames_per_batch(module, frames.shape[1:3], device, batch_frames, precision)
        enhanced = enhance_frames(module, frames, batch=batch, device=device, precision=precision)
        start = 0
        for r, d, inverse in zip([r for r in results if "error" not in r], distinct, inverses):
            r["enhanced"] = enhanced[start:start + len(d)][inverse].reshape(r["original"].shape)
            start += len(d)
            # per-clip statistics where the frames are made (a dask worker; in this process the
            # original's in the decoding thread), not in the one process that writes every shard
            for moments, clip in zip(r["moments"], r["enhanced"]):
                moments["enhanced"] = channel_moments(clip)
    return results
