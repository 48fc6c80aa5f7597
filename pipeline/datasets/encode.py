"""Frames into video files through PyAV: the sample's H.264 mp4 videos byte for byte the same on
every x86 CPU (write_mp4), ARID-shaped MPEG-4 Part 2 .avi (write_avi), and long test videos made by
concatenating clips (write_long_video).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UserError
from ..engine.atomic import atomic_path

CRF = 18  # x264 constant rate factor: ~9 KB per video; at 23 the codec erased most of the dark motion (measured)
# MPEG-4 Part 2 quantiser of write_avi (fixed: qmin = qmax). Measured on a dark 320x240 60-frame
# Run clip: q 2 writes 199 KB, q 4 22 KB, q 6 18 KB; the decoded frames' motion (frame minus the
# clip mean) correlates with the clean scene's at 0.93 (q 2, which keeps the sensor noise), 0.97
# (q 4), 0.96 (q 6): q 4 keeps the motion at a ninth of the bytes.
QSCALE = 4


class VideoWriterError(UserError, RuntimeError):
    """Writing sample videos needs PyAV, which the base install does not pull in (one line)."""


def _av():
    """PyAV, imported when a video is written: it is optional (the `test` extra), so importing this
    module, or the package, never needs it."""
    try:
        import av
    except ImportError:
        raise VideoWriterError("writing sample videos needs PyAV: pip install av "
                               "(or install dlkdd with its test extra: pip install 'dlkdd[test]')") from None
    return av


# x264 options for identical bytes from identical frames: one thread, and no
# assembly. With its CPU-detected assembly, x264 core 165's AVX-512 macroblock-tree
# code made the same frames encode to different bytes from run to run (heap
# dependent: reads past the data it owns), and its other SIMD levels round the
# macroblock-tree floats differently from each other (AVX2 vs C: other bytes). The
# plain C path is the same on every x86 CPU; it costs ~0.05 s per 64x64 video.
X264_OPTIONS = {"preset": "medium", "threads": "1", "x264-params": "asm=0"}


def rgb_to_yuv420(frame: np.ndarray) -> np.ndarray:
    """BT.601 limited-range YUV 4:2:0 of an RGB uint8 frame in exact integer math.

    The matrix is swscale's default for rgb24 -> yuv420p (what a decoder assumes
    for untagged video); doing it here rather than in swscale keeps CPU-specific
    SIMD rounding out of the bytes. Chroma is taken from each 2x2 block's sum.
    Returns PyAV's yuv420p layout: Y, U, V planes flattened into (H*3/2, W).
    """
    h, w = frame.shape[:2]
    r, g, b = (frame[..., c].astype(np.int32) for c in range(3))
    # Coefficients: (65.481, 128.553, 24.966; -37.797, -74.203, 112; 112, -93.786, -18.214) / 255, in 1/65536.
    y = ((16829 * r + 33039 * g + 6416 * b + (1 << 15)) >> 16) + 16
    r4, g4, b4 = (x.reshape(h // 2, 2, w // 2, 2).sum(axis=(1, 3)) for x in (r, g, b))
    u = ((-9714 * r4 - 19070 * g4 + 28784 * b4 + (1 << 17)) >> 18) + 128
    v = ((28784 * r4 - 24103 * g4 - 4681 * b4 + (1 << 17)) >> 18) + 128
    planes = np.concatenate([y.ravel(), u.ravel(), v.ravel()]).astype(np.uint8)
    return planes.reshape(h * 3 // 2, w)


def write_mp4(path: Path, frames: np.ndarray, fps: int, crf: int = CRF) -> None:
    """H.264 yuv420p mp4 via PyAV, bytes determined by the frames alone (see X264_OPTIONS)."""
    av = _av()
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="mp4",
                                            container_options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("libx264", rate=fps, options={"crf": str(crf), **X264_OPTIONS})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for frame in frames:
            yuv = av.VideoFrame.from_ndarray(rgb_to_yuv420(frame), format="yuv420p")
            for packet in stream.encode(yuv):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


# FFmpeg's own MPEG-4 encoder, one thread, bit-exact mode and the integer (C) DCT and IDCT: the
# bytes depend on the frames alone (two runs, and another process, write the same file: tested).
MPEG4_OPTIONS = {"flags": "+bitexact", "dct": "int", "idct": "int", "threads": "1"}


def write_avi(path: Path, frames: np.ndarray, fps: int, qscale: int = QSCALE) -> None:
    """MPEG-4 Part 2 (FFmpeg's mpeg4, the codec of ARID's .avi clips) yuv420p in an AVI container,
    at a fixed quantiser; frames are (T, H, W, 3) uint8 RGB with H and W even."""
    av = _av()
    with atomic_path(path) as tmp, av.open(str(tmp), "w", format="avi",
                                            container_options={"fflags": "+bitexact"}) as out:
        stream = out.add_stream("mpeg4", rate=fps, options={"qmin": str(qscale), "qmax": str(qscale),
                                                             **MPEG4_OPTIONS})
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420(frame), format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def write_long_video(out: Path, clips: list, seconds: float | None = None, fps: int | None = None,
                     size: tuple[int, int] | None = None) -> dict:
    """Concatenate `clips` (video files of one frame size), looping over them until `seconds`
    (default: once through), into one H.264 mp4 at `fps` (default: the first clip's rate),
    its frames scaled to `size` = (width, height) if given.

    Streams frame by frame (never the whole video in memory), so an hour-long test video is
    as cheap to hold as a short one. Returns {"frames", "fps", "seconds", "parts": [(clip,
    first frame, end frame), ...]}: the ground truth of what plays when.
    """
    av = _av()
    out = Path(out)
    with av.open(str(clips[0])) as first:
        rate = int(fps or round(float(first.streams.video[0].average_rate)))
        w, h = first.streams.video[0].width, first.streams.video[0].height
    limit = None if seconds is None else int(round(seconds * rate))
    parts, n = [], 0
    tmp = out.with_name(out.name + ".tmp")
    with av.open(str(tmp), "w", format="mp4") as dst:
        stream = dst.add_stream("libx264", rate=rate, options={"crf": str(CRF), "preset": "veryfast",
                                                               "threads": "1"})
        stream.width, stream.height = size or (w, h)
        stream.pix_fmt = "yuv420p"
        k = 0
        while (limit is None and k < len(clips)) or (limit is not None and n < limit):
            clip = clips[k % len(clips)]
            start = n
            with av.open(str(clip)) as src:
                for frame in src.decode(video=0):
                    if limit is not None and n >= limit:
                        break
                    if (frame.width, frame.height) != (w, h):
                        raise ValueError(f"{clip}: frames are {frame.width}x{frame.height}, "
                                         f"the first clip's are {w}x{h}")
                    image = frame.reformat(*size, format="rgb24") if size else frame.reformat(format="rgb24")
                    for packet in stream.encode(av.VideoFrame.from_ndarray(image.to_ndarray(), format="rgb24")):
                        dst.mux(packet)
                    n += 1
            parts.append((str(clip), start, n))
            k += 1
        for packet in stream.encode():
            dst.mux(packet)
    tmp.replace(out)
    return {"frames": n, "fps": rate, "seconds": n / rate, "parts": parts}
