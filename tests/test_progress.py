"""Console output: live bars on a terminal only; whole lines in a log; one resize for train and serve."""
import inspect
import io
import sys

import numpy as np
from rich.console import Console

from dlkdd.pipeline.datasets import views
from dlkdd.pipeline.engine.progress import make_console, progress_bar, say
from dlkdd.pipeline.inference import predict
from dlkdd.pipeline.stages.enhancing import task


def test_outside_a_terminal_no_bar_is_drawn_and_long_lines_stay_whole(monkeypatch):
    out = io.StringIO()
    console = Console(file=out, width=80)
    with progress_bar(console, "  enhance", 10, "videos") as update:
        for n in range(1, 11):
            update(n, "loss 0.123")
    assert out.getvalue() == ""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)  # stderr to a file, as in `dlkdd run 2> log.txt`
    plain = make_console()
    assert plain.soft_wrap and not plain.is_terminal
    line = "teacher epoch 1/30  " + "figure " * 20
    say(plain, line)
    assert log.getvalue() == line + "\n"  # 160 characters, one line


def test_on_a_terminal_the_bar_shows_count_rate_and_text_then_goes():
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with progress_bar(console, "  soft-labels", 4, "clips") as update:
        update(2, "agree 50.0%")
        update(4)  # text=None keeps the last text
    text = out.getvalue()
    assert "soft-labels" in text and "4/4" in text and "clips/s" in text and "agree 50.0%" in text


def test_enhance_and_predict_resize_with_the_one_fit_size():
    assert predict.fit_size is views.fit_size
    assert "from ...datasets.views import fit_size" in inspect.getsource(task.decode_videos)
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 12, 20, 3), dtype=np.uint8)
    assert views.fit_size(frames, (12, 20)) is frames
    out = views.fit_size(frames, (8, 16))
    assert out.shape == (2, 3, 8, 16, 3) and out.dtype == np.uint8
    flat = np.full((1, 1, 12, 20, 3), 77, np.uint8)
    assert (views.fit_size(flat, (6, 10)) == 77).all()  # a flat frame stays flat: no drift in level
