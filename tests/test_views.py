import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import dlkdd
from dlkdd.pipeline.config import DataConfig
from dlkdd.pipeline.datasets.clips import ClipAllViews, ViewDataset
from dlkdd.pipeline.datasets.shards import ClipDataset
from dlkdd.pipeline.datasets.views import (
    View,
    _drawn_view,
    apply_view,
    box_row,
    clip_views,
    make_views,
    multi_view_crops,
    normalize,
    view_params,
    window,
)
from tests.cachefix import make_clip_cache

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


def test_view_params_memo_follows_the_config_values():
    """view_params is memoised on the values it reads, never on the config object: a config changed in
    place draws anew, and every answer equals the draw made afresh (the memo's wrapped function)."""
    c = cfg(view_seed=3)
    keys = [(clip, v) for clip in range(8) for v in range(c.views)]
    fresh = [_drawn_view.__wrapped__(3, 0.5, clip, v, H, W) for clip, v in keys]
    assert [view_params(clip, v, H, W, c) for clip, v in keys] == fresh
    assert [view_params(clip, v, H, W, c) for clip, v in keys] == fresh  # the memo's answers, the same
    c.view_seed = 4
    moved = [view_params(clip, v, H, W, c) for clip, v in keys]
    assert moved == [_drawn_view.__wrapped__(4, 0.5, clip, v, H, W) for clip, v in keys] and moved != fresh
    c.min_scale = 1.0
    assert {view_params(clip, v, H, W, c).h for clip, v in keys} == {H}  # full-side squares only now
    assert view_params(0, 1, W, H, c) == _drawn_view.__wrapped__(4, 1.0, 0, 1, W, H)  # the clip size is in the key


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


# --------------------------------------------------------------------------- views made in batch

STATS = {"mean": [0.1, 0.12, 0.09], "std": [0.05, 0.06, 0.04]}  # dark clips: small std, errors grow by 1 / std


def test_make_views_equals_the_per_clip_reference():
    """The batched path (uint8 windows + boxes -> views) against apply_view + normalize: within 1e-6 of
    pixel / 255, so within 1e-6 / std once standardised; downscaled, upscaled, same-size and flipped boxes."""
    c = cfg(crop=8, views=8, min_scale=0.5)
    for h, w in ((H, W), (W, H), (H, H)):
        clips = [torch.from_numpy(np.random.default_rng(k).integers(0, 256, (T, h, w, 3), dtype=np.uint8))
                 for k in range(6)]
        views = [(clip, v) for k, clip in enumerate(clips) for v in clip_views(k, h, w, c)]
        views += [(clips[0], View(0, 0, 8, 8, True)), (clips[1], View(1, 2, 5, 5, False))]  # same size, upscaled
        assert {v.h > 8 for _, v in views} == {True, False} and {v.flip for _, v in views} == {True, False}
        shipped = [window(clip, v) for clip, v in views]
        pixels, boxes = torch.stack([s.pixels for s in shipped]), torch.stack([s.boxes for s in shipped])
        for stats, atol in ((None, 1e-6), (STATS, 1e-6 / 0.04)):
            got = make_views(pixels, boxes, 8, stats)
            want = torch.stack([normalize(apply_view(clip, v, 8), stats) for clip, v in views])
            assert got.shape == want.shape == (len(views), 3, T, 8, 8) and got.dtype == torch.float32
            torch.testing.assert_close(got, want, rtol=0, atol=atol)


def test_make_views_of_several_views_per_clip():
    clips = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (2, T, H, W, 3), dtype=np.uint8))
    views = [clip_views(k, H, W, cfg()) for k in range(2)]
    boxes = torch.tensor([[box_row(v) for v in vs] for vs in views])
    got = make_views(clips, boxes, 8, STATS)
    assert got.shape == (2, 6, 3, T, 8, 8)
    for k in range(2):
        for j, v in enumerate(views[k]):
            want = normalize(apply_view(clips[k], v, 8), STATS)
            torch.testing.assert_close(got[k, j], want, rtol=0, atol=1e-6 / 0.04)


def test_window_is_the_short_side_square_that_holds_the_box():
    clip = torch.from_numpy(random_clip())
    for v in [*clip_views(2, H, W, cfg(views=6)), View(0, 4, 12, 12, False), View(3, 7, 9, 9, True)]:
        shipped = window(clip, v)
        y0, x0, h, w, flip = shipped.boxes.tolist()
        assert shipped.pixels.shape == (T, H, H, 3) and (h, w, flip) == (v.h, v.w, int(v.flip))
        assert torch.equal(shipped.pixels[:, y0:y0 + h, x0:x0 + w], clip[:, v.y0:v.y0 + v.h, v.x0:v.x0 + v.w])
    square = clip[:, :, :H]
    assert window(square, View(1, 1, 8, 8, False)).pixels.data_ptr() == square.data_ptr()  # its own window
    with pytest.raises(ValueError, match="does not fit"):
        window(clip, View(8, 0, 8, 8, False))


def test_make_views_refuses_what_does_not_fit():
    pixels = torch.zeros(2, T, 8, 8, 3, dtype=torch.uint8)
    with pytest.raises(ValueError, match="does not fit"):
        make_views(pixels, torch.tensor([[0, 0, 8, 8, 0], [1, 0, 8, 8, 0]]), 4)
    with pytest.raises(ValueError, match="uint8"):
        make_views(pixels.float(), torch.tensor([[0, 0, 8, 8, 0]] * 2), 4)
    with pytest.raises(ValueError, match="boxes"):
        make_views(pixels, torch.tensor([[0, 0, 8, 8, 0]]), 4)


def test_teachers_view_k_and_students_view_k_are_the_same_pixels(tmp_path):
    """What soft-labels feeds the teacher for (clip, view k), in a batch of clips x all views, is
    bit for bit what the student is fed when it draws view k of that clip, on either stream."""
    index = make_clip_cache(tmp_path / "clips", T=T, H=H, W=W)
    c = cfg(crop=8, views=4, min_scale=0.5)
    for which in ("original", "enhanced"):
        clips = ClipDataset.from_index(tmp_path / "clips" / "index.json", "train", which)
        teacher_set = ClipAllViews(clips, c, STATS)
        batch, cids = next(iter(DataLoader(teacher_set, batch_size=5)))
        teacher = teacher_set.view_maker(batch)  # (5, V, 3, T, crop, crop), as soft-labels makes them
        for k in range(c.views):
            student_set = ViewDataset(clips, c, view=k, stats=STATS)
            for i in range(5):
                shipped, y, extra = student_set[i]
                assert extra.tolist() == [int(cids[i]), k] and y == clips.labels[i]
                assert torch.equal(student_set.view_maker.one(shipped), teacher[i, k]), (which, i, k)
        clips.close()
    assert len(index["clips"]) > 5
