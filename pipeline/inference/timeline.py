"""`dlkdd predict VIDEO --window S --timeline out.png`: what happened when, in one picture.

A strip of thumbnails (enhanced for the eye: dark frames show nothing on a screen) above
the per-class probability curves over time, with the merged segments as coloured bands.
The enhancement is for the picture only; the student classified the original frames.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..engine.atomic import atomic_path

MAX_CURVES = 8  # more lines than this are unreadable: the classes that reach the highest probability


def curve_classes(probs: np.ndarray, limit: int = MAX_CURVES) -> list[int]:
    """Indices of the classes worth a curve: those that are ever on top first, by peak probability."""
    peak = probs.max(axis=0)
    ever_top = set(np.argmax(probs, axis=1).tolist())
    order = sorted(range(probs.shape[1]), key=lambda k: (k not in ever_top, -peak[k]))
    return sorted(order[:limit])


def save_timeline(result: dict, out: Path, thumbnails: dict[int, np.ndarray], title: str = "") -> Path:
    """Write the picture of one video's timeline (from `infer.predict_video_windows`) to `out`.

    `thumbnails`: {window index: uint8 (H, W, 3) frame}, already enhanced for display.
    """
    import matplotlib  # deferred: half a second to import, and only --timeline draws

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, classes = result["windows"], result["classes"]
    probs = np.array([r["probs"] for r in rows], np.float32)
    centres = np.array([(r["start"] + r["end"]) / 2 for r in rows])
    duration = max(float(result["duration"]), 1e-6)
    shown = curve_classes(probs)
    colours = {k: plt.get_cmap("tab10")(i % 10) for i, k in enumerate(shown)}

    fig = plt.figure(figsize=(10, 4.6), dpi=100)
    strip = fig.add_axes([0.07, 0.72, 0.72, 0.17])
    curves = fig.add_axes([0.07, 0.12, 0.72, 0.56], sharex=strip)
    for i, frame in sorted(thumbnails.items()):
        _place_thumbnail(strip, frame, centres[i], duration, len(thumbnails))
    strip.set_ylim(0, 1)
    strip.set_yticks([])
    strip.tick_params(labelbottom=False)
    strip.set_facecolor("black")
    strip.set_title(title or Path(result["video"]).name, fontsize=9)

    index = {name: k for k, name in enumerate(classes)}
    for seg in result["segments"]:
        k = index[seg["class"]]
        curves.axvspan(seg["start"], seg["end"], color=colours.get(k, "0.8"), alpha=0.15, lw=0)
    for k in shown:
        curves.plot(centres, probs[:, k], color=colours[k], lw=1.4, label=classes[k],
                    marker="." if len(rows) < 40 else None)
    curves.set_xlim(0, duration)
    curves.set_ylim(0, 1.02)
    curves.set_xlabel("time (s)   (bands: merged segments)")
    curves.set_ylabel("probability")
    curves.grid(alpha=0.3)
    curves.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.text(0.81, 0.78, f"window {result['window']:g} s\nstride {result['stride']:g} s\n"
                         f"{len(rows)} windows\nthumbnails enhanced\nfor display only",
             fontsize=7, va="center")
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def _place_thumbnail(ax, frame: np.ndarray, centre: float, duration: float, count: int) -> None:
    """Draw `frame` centred at time `centre`, as wide as its share of the strip allows."""
    h, w = frame.shape[:2]
    width = duration / max(count, 1) * 0.95
    height = min(1.0, width * h / w * _axes_aspect(ax, duration))
    width = height * w / h / _axes_aspect(ax, duration)
    ax.imshow(frame, extent=(centre - width / 2, centre + width / 2, 0.5 - height / 2, 0.5 + height / 2),
              interpolation="nearest", aspect="auto")


def _axes_aspect(ax, duration: float) -> float:
    """How many strip-height units one second spans on screen (so thumbnails keep their shape)."""
    bbox = ax.get_position()
    fig_w, fig_h = ax.figure.get_size_inches()
    return (bbox.width * fig_w / duration) / (bbox.height * fig_h)
