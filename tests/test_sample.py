"""The synthetic dark-action sample: deterministic, well-formed, dark, small."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")
decord = pytest.importorskip("decord")

from dlkdd.pipeline.sample import (CLASS_ORDER, make_sample, read_split, rgb_to_yuv420,  # noqa: E402
                                   sample_stats)

SMALL = dict(classes=3, videos_per_class=4, test_per_class=1, size=32, frames=(8, 12))
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def digests(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample") / "a"
    return root, make_sample(root, seed=0, **SMALL)


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    root, _ = small
    make_sample(tmp_path / "b", seed=0, **SMALL)
    make_sample(tmp_path / "c", seed=1, **SMALL)
    a, b, c = digests(root), digests(tmp_path / "b"), digests(tmp_path / "c")
    assert a == b
    videos = [k for k in a if k.endswith(".mp4")]
    assert all(a[k] != c[k] for k in videos)


def test_same_seed_same_bytes_in_another_process(small, tmp_path):
    root, _ = small
    code = ("import json, sys; from dlkdd.pipeline.sample import make_sample; "
            "make_sample(sys.argv[1], seed=0, **json.loads(sys.argv[2]))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "p"), json.dumps(SMALL)],
                   check=True, env=os.environ.copy())
    assert digests(tmp_path / "p") == digests(root)


def test_rgb_to_yuv420_is_bt601_limited_range():
    colours = {(0, 0, 0): (16, 128, 128), (255, 255, 255): (235, 128, 128),
               (255, 0, 0): (81, 90, 240), (0, 255, 0): (145, 54, 34), (0, 0, 255): (41, 240, 110),
               (10, 20, 30): (32, 134, 123)}  # the values swscale gives
    for rgb, (y, u, v) in colours.items():
        planes = rgb_to_yuv420(np.full((4, 6, 3), rgb, np.uint8))
        assert planes.shape == (6, 6) and planes.dtype == np.uint8
        assert (planes[:4] == y).all(), rgb
        chroma = planes[4:].ravel()
        assert (chroma[:6] == u).all() and (chroma[6:] == v).all(), rgb


def test_lists_parse_and_match_files(small):
    root, stats = small
    names = (root / "classes.txt").read_text().split()
    assert names == sorted(CLASS_ORDER[:3])
    train, test = read_split(root / "splits/train.txt"), read_split(root / "splits/test.txt")
    assert (len(train), len(test)) == (9, 3)
    assert (stats["train"], stats["test"], stats["videos"], stats["classes"]) == (9, 3, 12, 3)
    for split in ("train", "test"):
        for i, line in enumerate((root / "splits" / f"{split}.txt").read_text().splitlines()):
            idx, label, rel = line.split("\t")
            assert int(idx) == i
            assert 0 <= int(label) < 3 and rel.split("/")[0] == names[int(label)]
            assert rel == f"{names[int(label)]}/{Path(rel).stem}.mp4" and (root / rel).is_file()
    assert len({rel for _, rel in train + test}) == 12
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.mp4")) == \
        sorted(rel for _, rel in train + test)


def test_videos_decode_dark_at_right_size(small):
    root, stats = small
    assert 0.02 <= stats["mean_brightness"] <= 0.10
    for _, rel in read_split(root / "splits/train.txt") + read_split(root / "splits/test.txt"):
        vr = decord.VideoReader(str(root / rel), ctx=decord.cpu(0), num_threads=1)
        assert 8 <= len(vr) <= 12
        clip = vr.get_batch(list(range(len(vr)))).asnumpy()
        assert clip.shape[1:] == (32, 32, 3) and clip.dtype == np.uint8
        assert 0.02 <= clip.mean() / 255 <= 0.10


def test_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError):
        make_sample(tmp_path, classes=len(CLASS_ORDER) + 1)
    with pytest.raises(ValueError):
        make_sample(tmp_path, videos_per_class=2, test_per_class=2)


@pytest.mark.skipif(not (SAMPLE / "classes.txt").exists(), reason="data/sample not generated")
def test_committed_sample():
    stats = sample_stats(SAMPLE, decode=False)
    assert stats["classes"] >= 6 and stats["videos"] >= 6 * 24
    assert stats["train"] + stats["test"] == stats["videos"]
    assert stats["bytes"] < 8e6
    listed = read_split(SAMPLE / "splits/train.txt") + read_split(SAMPLE / "splits/test.txt")
    assert sorted(rel for _, rel in listed) == \
        sorted(p.relative_to(SAMPLE).as_posix() for p in SAMPLE.rglob("*.mp4"))
    assert all(0 <= label < stats["classes"] for label, _ in listed)
    # Decode one video per class: right size, dark.
    for name in stats["class_names"]:
        vr = decord.VideoReader(str(SAMPLE / name / f"{name}_1.mp4"), ctx=decord.cpu(0))
        clip = vr.get_batch(list(range(len(vr)))).asnumpy()
        assert 24 <= len(clip) <= 32 and clip.shape[1:] == (64, 64, 3)
        assert 0.02 <= clip.mean() / 255 <= 0.10
