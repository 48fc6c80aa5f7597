"""Frames out of video files with decord: which frames a clip takes (sample_indices), the size
they are decoded at (resize_shape), probe and decode_clips. A video decord cannot read is a
one-line VideoError "<path>: <reason>", the reason dug out of decord's and FFmpeg's logs.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading

import decord
import numpy as np

from ...errors import UserError

log = logging.getLogger("dlkdd")


class VideoError(UserError, RuntimeError):
    """A video decord cannot decode: "<path>: <reason>" (one line)."""


# ------------------------------------------------------------------ frame sampling

def sample_indices(num_frames: int, T: int, clips: int = 1, mode: str = "uniform") -> np.ndarray:
    """Segment-based uniform sampling (TSN; ARID's test protocol): (clips, T) int64 frame indices.

    The video is cut into T equal segments and one frame taken per segment, at
    offset (c + 0.5) / clips within the segment for clip c. Shorter videos than
    T repeat frames (still covering every frame).
    """
    if mode != "uniform":
        raise ValueError(f"unknown sampling mode {mode!r} (expected 'uniform')")
    if num_frames <= 0:
        raise ValueError(f"video has {num_frames} frames; cannot sample a clip")
    if T <= 0 or clips <= 0:
        raise ValueError(f"T and clips must be positive, got T={T}, clips={clips}")
    if num_frames < T:
        log.debug("video has %d frames, fewer than T=%d: frames repeat", num_frames, T)
    t = np.arange(T, dtype=np.int64)[None, :]
    c = np.arange(clips, dtype=np.int64)[:, None]
    # floor((t + (c + 0.5) / clips) * n / T) in exact integer arithmetic
    return (2 * t * clips + 2 * c + 1) * num_frames // (2 * T * clips)


def resize_shape(h: int, w: int, short_side: int, max_long_side: int = 0) -> tuple[int, int]:
    """(h2, w2): short side at `short_side`, aspect kept (rounded), long side capped if asked."""
    if h <= 0 or w <= 0 or short_side <= 0:
        raise ValueError(f"bad sizes: h={h}, w={w}, short_side={short_side}")
    scale = short_side / min(h, w)
    if max_long_side > 0 and max(h, w) * scale > max_long_side:
        scale = max_long_side / max(h, w)
    return max(1, int(h * scale + 0.5)), max(1, int(w * scale + 0.5))


# ------------------------------------------------------------------ decord's errors

_OPEN_LOCK = threading.Lock()  # decord's open errors go to fd 2, which is process-wide
_AV_ERRORS = {  # FFmpeg AVERROR codes decord reports as numbers
    1094995529: "Invalid data found when processing input",
    541478725: "End of file",
    1414092869: "Immediate exit requested",
    558323010: "Internal bug in FFmpeg",
}
_LOG_PREFIX = re.compile(r"^\[[\d:]+\]\s+\S+:\d+:\s*")  # "[06:16:32] /src/video_reader.cc:486: "
# "[mov,mp4,m4a @ 0x55d0..] moov atom not found"
_FFMPEG_LINE = re.compile(r"^\[[^\]]* @ 0x[0-9a-fA-F]+\]\s*(.*)$")


def decord_reason(message: str) -> str:
    """The first meaningful line of a decord error, without its timestamp and source location."""
    for line in str(message).splitlines():
        line = _LOG_PREFIX.sub("", line.strip())
        if line and not line.lower().startswith("stack trace"):
            code = re.search(r"failed with (-?\d+)", line)
            if code and abs(int(code.group(1))) in _AV_ERRORS:
                name = _AV_ERRORS[abs(int(code.group(1)))]
                line = line.replace(code.group(0), f"failed: {name} [{code.group(1)}]")
            return line
    return "unknown decord error"


@contextlib.contextmanager
def _capture_stderr():
    """Collect what C++ code writes to fd 2 meanwhile into box[0] (decord logs open errors there)."""
    box = [""]
    try:
        saved = os.dup(2)
    except OSError:  # no fd 2: nothing to capture
        yield box
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield box
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box[0] = tmp.read().decode("utf-8", "replace")


def _open_reason(captured: str, reason: str = "") -> tuple[str, str]:
    """(reason with FFmpeg's details, the captured text that is not about this failure)."""
    details, rest = [], []
    for line in captured.splitlines():
        m = re.search(r"ERROR opening: .*, (.+)$", line)
        f = _FFMPEG_LINE.match(line.strip())
        if m and not reason:
            reason = m.group(1).strip()
        elif f:
            details.append(f.group(1).strip())
        elif line.strip() and not m:
            rest.append(line)
    reason = reason or "decord cannot open it (not a video, or an unsupported or corrupt file)"
    details = [d for d in dict.fromkeys(details) if d and d != reason]
    if details:
        reason += f" ({'; '.join(details)})"
    return reason, "\n".join(rest)


# ------------------------------------------------------------------ opening and decoding

def precheck(path: str) -> None:
    """VideoError for a path that is no readable, non-empty file, before decord gets to guess why."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise VideoError(f"{path}: file not found") from None
    except OSError as e:
        raise VideoError(f"{path}: {e.strerror}") from None
    if not os.path.isfile(path):
        raise VideoError(f"{path}: not a file")
    if st.st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise VideoError(f"{path}: permission denied")


def open_video(path: str, width: int = -1, height: int = -1, num_threads: int = 1):
    """A decord VideoReader, or VideoError naming the path and decord's reason."""
    decord.bridge.set_bridge("native")  # get_batch returns decord NDArrays; .asnumpy() below
    with _OPEN_LOCK:
        failure = None
        with _capture_stderr() as box:
            try:
                vr = decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height,
                                        num_threads=num_threads)
            except (RuntimeError, decord.DECORDError, AssertionError, ValueError) as e:
                failure = e
    if failure is None:
        if box[0]:
            os.write(2, box[0].encode())  # warnings of a video that opened: pass them on
        return vr
    if isinstance(failure, AssertionError):  # decord asserts a positive frame count
        raise VideoError(f"{path}: no video frames ({decord_reason(failure)})") from None
    # "Error reading <path>..." says nothing: decord logged the reason to stderr
    own = "" if str(failure).startswith("Error reading ") else decord_reason(failure)
    reason, rest = _open_reason(box[0], own)
    if rest:
        os.write(2, (rest + "\n").encode())
    raise VideoError(f"{path}: {reason}") from None


def frame_shape(vr, path: str) -> tuple[int, int]:
    """(height, width) of the next frame `vr` decodes (the first, on a fresh reader)."""
    try:
        first = vr.next()
    except StopIteration:
        raise VideoError(f"{path}: no decodable frames") from None
    except Exception as e:  # DECORDError and friends
        raise VideoError(f"{path}: {decord_reason(e)}") from None
    shape = first.shape
    return int(shape[0]), int(shape[1])


def probe(path, num_threads: int = 1) -> tuple[int, int, int, float]:
    """(num_frames, height, width, fps) as decord sees the video (decodes the first frame)."""
    path = os.fspath(path)
    precheck(path)
    vr = open_video(path, num_threads=num_threads)
    h, w = frame_shape(vr, path)
    try:
        fps = float(vr.get_avg_fps())
    except Exception as e:
        raise VideoError(f"{path}: {decord_reason(e)}") from None
    return len(vr), h, w, fps


def decode_clips(path, T: int, clips: int, short_side: int, max_long_side: int = 0,
                 num_threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Decode `clips` clips of T frames, resized while decoding: (frames, indices).

    frames: (clips, T, H, W, 3) uint8 RGB; indices: (clips, T) int64 source frames.
    Each needed frame is decoded once, however many clips share it.
    """
    path = os.fspath(path)
    precheck(path)
    vr = open_video(path, num_threads=num_threads)
    h, w = frame_shape(vr, path)
    h2, w2 = resize_shape(h, w, short_side, max_long_side)
    if (h2, w2) != (h, w):
        vr = open_video(path, width=w2, height=h2, num_threads=num_threads)
    indices = sample_indices(len(vr), T, clips)
    unique, inverse = np.unique(indices.ravel(), return_inverse=True)
    try:
        batch = vr.get_batch(unique.tolist())
    except Exception as e:  # DECORDError, or IndexError when the container overstates its length
        raise VideoError(f"{path}: {decord_reason(e)}") from None
    batch = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
    if batch.shape != (len(unique), h2, w2, 3):
        raise VideoError(f"{path}: decord returned frames of shape {batch.shape[1:]}, "
                         f"expected {(h2, w2, 3)}")
    frames = batch[inverse.reshape(indices.shape)]
    return np.ascontiguousarray(frames, dtype=np.uint8), indices
