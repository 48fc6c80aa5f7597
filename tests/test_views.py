import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dlkdd
from dlkdd.pipeline.config import DataConfig
from dlkdd.pipeline.datasets.views import View, apply_view, clip_views, multi_view_crops, view_params

REPO = Path(__file__).resolve().parents[1]
T, H, W = 3, 12, 16


def cfg(**kw):
    return DataConfig(**{"crop": 8, "views": 6, "min_scale": 0.5, "view_seed": 0, **kw})


def all_views(c, H=H, W=W, clips=20):
    return [view_params(clip, v, H, W, c) for clip in range(clips) for v in range(c.views)]


def test_reproducible_in_this_and_another_process():
    c = cfg(view_seed=7)
    here = all_views(c)
    assert here == all_views(c)
    code = ("import json; from dlkdd.pipeline.config import DataConfig;"
            " from dlkdd.pipeline.datasets.views import view_params;"
            "c = DataConfig(crop=8, views=6, min_scale=0.5, view_seed=7);"
            f"print(json.dumps([list(view_params(k, v, {H}, {W}, c).__dict__.values())"
            " for k in range(20) for v in range(6)]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True, env={"PYTHONHASHSEED": "123", "OMP_NUM_THREADS": "1",
                                             "PYTHONPATH": str(Path(dlkdd.__file__).parents[1])})
    there = [View(*row) for row in json.loads(out.stdout)]
    assert there == here


def test_seeds_and_clips_differ():
    assert all_views(cfg(view_seed=0)) != all_views(cfg(view_seed=1))
    assert clip_views(0, H, W, cfg())[1:] != clip_views(1, H, W, cfg())[1:]


def test_view_zero_is_centre_crop_unflipped():
    for h, w in ((H, W), (W, H), (H, H)):
        for clip in range(5):
            side = min(h, w)
            assert view_params(clip, 0, h, w, cfg()) == View((h - side) // 2, (w - side) // 2, side, side, False)


def test_boxes_inside_frame_square_and_scaled():
    for h, w in ((H, W), (W, H), (7, 7)):
        c = cfg(min_scale=0.5)
        views = all_views(c, h, w, clips=50)
        short = min(h, w)
        for v in views:
            assert v.h == v.w and round(0.5 * short) <= v.h <= short
            assert 0 <= v.y0 and v.y0 + v.h <= h and 0 <= v.x0 and v.x0 + v.w <= w
        assert {v.flip for v in views} == {True, False}
        assert len({(v.y0, v.x0, v.h) for v in views}) > 10


def test_view_out_of_range():
    with pytest.raises(ValueError, match="data.views"):
        view_params(0, 6, H, W, cfg())


def random_clip(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (T, H, W, 3), dtype=np.uint8)


def test_apply_view_shape_and_range():
    clip = random_clip()
    for v in clip_views(3, H, W, cfg()):
        x = apply_view(clip, v, 8)
        assert x.shape == (3, T, 8, 8) and x.dtype == torch.float32
        assert 0.0 <= x.min() and x.max() <= 1.0
    assert apply_view(torch.from_numpy(clip), View(0, 0, 12, 12, False), 5).shape == (3, T, 5, 5)


def test_apply_view_exact_box_and_flip():
    clip = random_clip()
    x = apply_view(clip, View(2, 3, 8, 8, False), 8)
    expected = torch.from_numpy(clip[:, 2:10, 3:11, :]).permute(3, 0, 1, 2).float() / 255
    torch.testing.assert_close(x, expected, rtol=0, atol=0)
    flipped = apply_view(clip, View(2, 3, 8, 8, True), 8)
    torch.testing.assert_close(flipped, expected.flip(-1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not fit"):
        apply_view(clip, View(8, 0, 8, 8, False), 8)


def test_original_and_enhanced_stay_pixel_aligned():
    lut = np.sqrt(np.arange(256) / 255.0)  # a pointwise "enhancer"
    original = random_clip(1)
    enhanced = np.round(lut[original] * 255).astype(np.uint8)
    views = clip_views(5, H, W, cfg(crop=H, min_scale=1.0))  # boxes of side H: no resize
    assert len({(v.x0, v.flip) for v in views}) > 1
    for v in views:
        orig_view = apply_view(original, v, H)
        expected = np.round(lut[np.round(orig_view.numpy() * 255).astype(int)] * 255) / 255
        torch.testing.assert_close(apply_view(enhanced, v, H), torch.from_numpy(expected).float(),
                                   rtol=0, atol=1e-6)
    # with resize: a linear map commutes with bilinear interpolation, so the geometry matches too
    negative = (255 - original).astype(np.uint8)
    for v in clip_views(5, H, W, cfg(crop=8)):
        torch.testing.assert_close(apply_view(negative, v, 8), 1 - apply_view(original, v, 8),
                                   rtol=0, atol=1e-5)


def test_multi_view_crops():
    assert multi_view_crops(H, W, 1, 8) == [view_params(0, 0, H, W, cfg())]
    left, centre, right = multi_view_crops(H, W, 3, 8)
    assert (left.x0, centre.x0, right.x0) == (0, 2, 4) and {left.y0, left.h, left.flip} == {0, 12}
    assert centre == view_params(0, 0, H, W, cfg())
    top, mid, bottom = multi_view_crops(W, H, 3)
    assert (top.y0, mid.y0, bottom.y0) == (0, 2, 4) and top.x0 == 0
    odd = multi_view_crops(12, 19, 3)
    assert odd[1] == view_params(0, 0, 12, 19, cfg()) and odd[2].x0 + odd[2].w == 19
    with pytest.raises(ValueError):
        multi_view_crops(H, W, 0)
