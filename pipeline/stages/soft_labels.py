"""The `soft-labels` stage: run the teacher once over every (clip, view) and cache the logits.

Every train and validation clip is read once and all V views are cut from it on the device
(`ClipAllViews` ships the uint8 clip and the V boxes; `views.make_views`, the function that makes
the student's views too); B clips x V views go through the teacher in one forward pass.
Rows of `logits.h5` follow the clip ids of `clips/index.json` (0..N-1), so the
student looks up `logits[clip_id, view]` for the view it drew. Test clips are
never read here (the test split belongs to `evaluate` alone): their rows are NaN. The file is
written to a temporary sibling and renamed: it is whole or absent.

Logits are computed in float32 with TF32 off, so `verify` can recompute any
entry and expect agreement to 1e-4 whatever the batch size.

A teacher of K > 1 members (`teacher.ensemble`) is labelled as one: each batch of views goes
through every member and the file holds the mean of their logits (`training.ensemble.Ensemble`,
which says why logits and not probabilities), in the same file, shape and rows, so the student
reads it as it reads one teacher's; the file's `teacher_ensemble` attribute says K (absent for one).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path

import h5py
import numpy as np
import torch

from ...errors import StageError, UserError, first_line
from ..datasets.clips import ClipAllViews, all_boxes, clips_index
from ..datasets.shards import ClipDataset
from ..datasets.views import make_views, view_params
from ..engine import failpoints
from ..engine.atomic import atomic_path
from ..engine.progress import progress_bar
from ..names import LOGITS_FILE
from ..training.device import exact_float32, fast_kernels
from ..training.ensemble import load_teacher
from ..training.loaders import make_loader

# Relative to the logits' scale: what batching, kernel choice and another BLAS may change in a
# logit (a float32 sum's error grows with its magnitude), never less than the stored dtype resolves.
TOLERANCE = 1e-4
CHUNK_BYTES = 1 << 18  # ~256 KB chunks of rows: small enough for h5py's chunk cache


class VerifyError(UserError, RuntimeError):
    """Cached logits that disagree with the teacher, or cannot be read (one line naming the file)."""


LABELLED_SPLITS = ("train", "val")  # the splits soft labels are computed for


def all_clips(clips_dir: Path, which: str = "enhanced") -> tuple[ClipDataset, list[str]]:
    """The train and validation clips of the cache in clip-id order, of stream `which` (the one the
    teacher was trained on), each one's split, and the number of clips in the index (the logits' rows)."""
    index_path = clips_index(clips_dir)
    rows = json.loads(index_path.read_text())["clips"]
    if [c["id"] for c in rows] != list(range(len(rows))):
        raise StageError(f"{index_path}: clip ids are not 0..N-1 in index order")
    parts = [ClipDataset.from_index(index_path, split, which) for split in LABELLED_SPLITS]
    order = sorted((cid, k, i) for k, part in enumerate(parts) for i, cid in enumerate(part.clip_ids))
    clips = ClipDataset([parts[k].rows[i] for _, k, i in order], [parts[k].labels[i] for _, k, i in order],
                        which, clip_ids=[cid for cid, _, _ in order])
    clips.shape, clips.classes = parts[0].shape, parts[0].classes
    return clips, [LABELLED_SPLITS[k] for _, k, _ in order], len(rows)


@torch.inference_mode()
def teacher_logits(model, clips: ClipDataset, data_cfg, batch_size: int, device="cpu", num_workers="auto",
                   stats: dict | None = None):
    """Yield (first clip id, logits (B, V, K) float32 numpy) over all clips, in order; inputs are
    standardised with `stats` (the teacher's meta.json "normalize"). `batch_size` clips per batch,
    each with its V views; `num_workers` as `loaders.worker_count` reads it."""
    device = torch.device(device)
    fast_kernels(device)
    data = ClipAllViews(clips, data_cfg, stats)
    loader, views = make_loader(data, batch_size, device, num_workers, persistent=False), data.view_maker
    with exact_float32():
        for x, cids in loader:
            x = views(x, device)  # (B, V, 3, T, crop, crop), made on the device
            b, v = x.shape[:2]
            z = model(x.flatten(0, 1)).float()
            yield int(cids[0]), z.reshape(b, v, -1).cpu().numpy()


def write_logits(path: Path, batches, n: int, views: int, classes: int, attrs: dict, on_batch=None) -> None:
    """Stream (first row, (B, V, K) block) pairs into `path`'s `logits` dataset, atomically."""
    rows = max(1, min(n, CHUNK_BYTES // (4 * views * classes)))
    with atomic_path(path) as tmp:
        # No timestamps or creation order: the same logits give the same bytes (and output digest).
        with h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
            dset = f.create_dataset("logits", shape=(n, views, classes), dtype="f4",
                                    chunks=(rows, views, classes) if n else None, fletcher32=bool(n),
                                    track_times=False, track_order=False)
            for key, value in attrs.items():
                f.attrs[key] = value
            filled = 0
            for start, block in batches:
                if start != filled:
                    raise StageError(f"{path}: rows out of order (got clip {start}, expected {filled})")
                dset[start:start + len(block)] = block
                filled += len(block)
                if on_batch is not None:
                    on_batch(start, block)
            if filled != n:
                raise StageError(f"{path}: wrote {filled} of {n} rows")


def run_stage(ctx) -> dict:
    cfg = ctx.cfg
    model, meta = load_teacher(ctx.dir_of("teacher"), ctx.device)
    members = meta.get("ensemble", 1)
    if members != cfg.teacher.ensemble:
        raise StageError(f"{ctx.dir_of('teacher')}: holds a teacher of {members} member(s), teacher.ensemble is "
                         f"{cfg.teacher.ensemble}; run `dlkdd teacher`")
    clips, splits, n = all_clips(ctx.dir_of("enhance"), meta.get("input", "enhanced"))
    V, K = cfg.data.views, meta["num_classes"]
    record = ctx.graph.record("teacher")
    attrs = {"teacher_fingerprint": (record or {}).get("outputs_digest", "unknown"),
             "views": V, "view_seed": cfg.data.view_seed, "crop": cfg.data.crop,
             "min_scale": cfg.data.min_scale, "classes": json.dumps(meta["classes"]), "clip_ids": n,
             "teacher_model": meta["model"], **({"teacher_ensemble": members} if members > 1 else {})}
    logits = np.full((n, V, K), np.nan, dtype=np.float32)
    val = np.array([s == "val" for s in splits])
    labels, ids = np.array(clips.labels), np.array(clips.clip_ids, dtype=np.int64)
    t0, pos = time.perf_counter(), 0
    with progress_bar(ctx.console, "  soft-labels", len(clips), "clips") as update:
        batches = teacher_logits(model, clips, cfg.data, cfg.soft_labels.batch_size, ctx.device,
                                 cfg.teacher.num_workers, stats=meta.get("normalize"))
        with contextlib.closing(batches):  # restores TF32 settings now, even on an error
            for _, block in batches:
                logits[ids[pos:pos + len(block)]] = block
                pos += len(block)
                update(pos)
                failpoints.reached("soft-labels:batch")  # tests: a stop between teacher batches
    write_logits(ctx.out / LOGITS_FILE, [(0, logits)], n, V, K, attrs)
    seconds = time.perf_counter() - t0
    clips.close()
    hits = logits[ids[val], 0].argmax(-1) == labels[val]
    agreement = 100.0 * float(hits.mean()) if len(hits) else None
    summary = {"clips": len(clips), "views": V, "classes": K, "seconds": round(seconds, 2),
               "clips_per_s": round(len(clips) / max(seconds, 1e-9), 2),
               "teacher_top1_val_view0": None if agreement is None else round(agreement, 2),
               **({"teacher_ensemble": members} if members > 1 else {})}  # top-1 of the mean logits
    ctx.console.print(f"  {len(clips)} train and validation clips x {V} views -> {ctx.out / LOGITS_FILE} in "
                      f"{seconds:.1f} s ({summary['clips_per_s']:.1f} clips/s); teacher "
                      + (f"(mean of {members}) " if members > 1 else "") + "top-1 on validation "
                      "(view 0): " + ("n/a" if agreement is None else f"{agreement:.1f}%"))
    return summary


# --- verification ---------------------------------------------------------------------------

def _read_entry(dset, path, c: int, v: int) -> np.ndarray:
    try:
        return dset[c, v]
    except OSError as e:
        raise VerifyError(f"{path}: entry (clip {c}, view {v}) unreadable: "
                          f"{first_line(e)}") from None


def tolerance(fresh: np.ndarray, stored_dtype) -> float:
    """How far a stored logit row may differ from the teacher's fresh one: `TOLERANCE` (or a few units
    of the stored precision, if coarser) times the row's largest magnitude (at least 1)."""
    eps = float(np.finfo(stored_dtype).eps) if np.issubdtype(stored_dtype, np.floating) else 0.0
    return max(TOLERANCE, 4 * eps) * max(1.0, float(np.abs(fresh).max()))


def verify(logits_path: Path, teacher_dir: Path, clips_dir: Path, data_cfg, k: int, device: str = "cpu",
           seed: int = 0, console=None) -> int:
    """Recompute `k` random (clip, view) entries with the teacher and compare to the file.

    Views are recomputed from the file's own view attributes. Raises VerifyError on the first
    entry (in (clip, view) order) that differs by more than `tolerance`; returns the number checked.
    """
    logits_path = Path(logits_path)
    model, meta = load_teacher(teacher_dir, device)  # an ensemble: the mean of its members' logits
    clips, _, n = all_clips(clips_dir, meta.get("input", "enhanced"))
    try:
        return _verify(model, meta, clips, n, logits_path, data_cfg, k, device, seed, console)
    finally:
        clips.close()


def _verify(model, meta, clips, n_index, logits_path, data_cfg, k, device, seed, console) -> int:
    try:
        f = h5py.File(logits_path, "r")
    except FileNotFoundError:
        raise VerifyError(f"{logits_path}: missing; run `dlkdd soft-labels`") from None
    except OSError as e:
        raise VerifyError(f"{logits_path}: not a readable HDF5 file ({first_line(e)})") from None
    with f, exact_float32(), torch.inference_mode():
        if "logits" not in f:
            raise VerifyError(f"{logits_path}: no dataset 'logits'")
        dset = f["logits"]
        if dset.ndim != 3:
            raise VerifyError(f"{logits_path}: logits of shape {dset.shape}, expected (N, V, K)")
        n, V, K = dset.shape
        if (n, K) != (n_index, meta["num_classes"]):
            raise VerifyError(f"{logits_path}: shape {dset.shape} does not fit {n_index} clips and "
                              f"a {meta['num_classes']}-class teacher")
        views_cfg = dataclasses.replace(data_cfg, **{key: type(getattr(data_cfg, key))(f.attrs[key])
                                                     for key in ("views", "view_seed", "crop", "min_scale")
                                                     if key in f.attrs})
        if views_cfg.views != V:
            raise VerifyError(f"{logits_path}: attribute views = {views_cfg.views} but {V} views stored")
        total = len(clips) * V  # entries of train and validation clips (test rows are NaN)
        picks = np.random.default_rng(seed).choice(total, size=min(max(k, 0), total), replace=False)
        by_clip: dict[int, list[int]] = {}
        for e in sorted(int(p) for p in picks):
            by_clip.setdefault(e // V, []).append(e % V)  # position in `clips`, view
        _, H, W = clips.shape
        done = 0
        with progress_bar(console, "  verify", len(picks), "entries") as update:
            for pos, vs in by_clip.items():
                clip, _, _ = clips[pos]
                c = clips.clip_ids[pos]
                boxes = all_boxes([view_params(c, v, H, W, views_cfg) for v in vs])
                x = make_views(clip[None].to(device), boxes[None], views_cfg.crop, meta.get("normalize"))[0]
                z = model(x).float().cpu().numpy()
                for v, fresh in zip(vs, z):
                    d = float(np.abs(_read_entry(dset, logits_path, c, v) - fresh).max())
                    tol = tolerance(fresh, dset.dtype)
                    if not d <= tol:  # NaN counts as a mismatch
                        raise VerifyError(f"{logits_path}: entry (clip {c}, view {v}) differs from the "
                                          f"teacher by {d:.2e} > {tol:.2e}")
                done += len(vs)
                update(done)
    return len(picks)


def verify_cache(graph, device: str, k: int, console=None) -> int:
    """`verify` on a cache's soft labels, teacher and clips; also checks which teacher made them."""
    path = graph.out_dir("soft-labels") / LOGITS_FILE
    record = graph.record("teacher")
    if record and "outputs_digest" in record and path.exists():
        try:
            with h5py.File(path, "r") as f:
                made_by = f.attrs.get("teacher_fingerprint", "unknown")
        except OSError as e:
            raise VerifyError(f"{path}: not a readable HDF5 file ({first_line(e)})") from None
        if made_by not in ("unknown", record["outputs_digest"]):
            raise VerifyError(f"{path}: made by another teacher than {graph.out_dir('teacher')} holds "
                              f"now; run `dlkdd soft-labels`")
    return verify(path, graph.out_dir("teacher"), graph.out_dir("enhance"), graph.cfg.data, k,
                  device=device, console=console)
