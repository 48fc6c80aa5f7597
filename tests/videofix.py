"""Tiny real video datasets (H.264 mp4 written with PyAV) in ARID layout, for stage tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_video(path: Path, frames: np.ndarray, fps: int = 10, codec: str = "libx264",
                pix_fmt: str = "yuv420p") -> Path:
    import av  # deferred: PyAV is optional (the `test` extra); importing this module must not need it
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = pix_fmt
        stream.options = {"threads": "1"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def dark_clip(rng, n_frames: int, h: int, w: int, label: int) -> np.ndarray:
    """A dark noisy clip with a dim square moving in a class-dependent direction."""
    frames = rng.integers(2, 14, size=(n_frames, h, w, 3)).astype(np.uint8)
    for t in range(n_frames):
        x = (t * (2 + label) + 3) % (w - 8)
        y = (h // 2 - 4 + label * 3) % (h - 8)
        frames[t, y:y + 8, x:x + 8] = 40
    return frames


def make_video_dataset(root: Path, classes: int = 2, train: int = 3, test: int = 1, frames: int = 12,
                       h: int = 48, w: int = 64, seed: int = 0) -> Path:
    """`root/C<k>/C<k>_<n>.mp4` plus ARID-format `splits/train.txt` and `splits/test.txt`."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    lines = {"train": [], "test": []}
    for k in range(classes):
        for n in range(train + test):
            rel = f"C{k}/C{k}_{n}.mp4"
            write_video(root / rel, dark_clip(rng, frames, h, w, k))
            split = "train" if n < train else "test"
            lines[split].append(f"{len(lines[split])}\t{k}\t{rel}")
    (root / "splits").mkdir(parents=True, exist_ok=True)
    for split, rows in lines.items():
        (root / "splits" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return root
