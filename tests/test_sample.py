"""The synthetic dark-action sample: deterministic, well-formed, dark, small."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

try:
    from numpy._core._multiarray_umath import __cpu_dispatch__
except ImportError:  # numpy < 2
    from numpy.core._multiarray_umath import __cpu_dispatch__

from dlkdd.cli import cli
from dlkdd.pipeline.config import DataConfig
from dlkdd.pipeline.datasets.encode import rgb_to_yuv420
from dlkdd.pipeline.datasets.sample import CLASS_ORDER, DAY_DIR, make_sample, read_split, sample_stats
from dlkdd.pipeline.datasets.scenes import expose, render_video
from dlkdd.pipeline.datasets.splits import read_dataset

pytest.importorskip("av")
decord = pytest.importorskip("decord")

SMALL = dict(classes=3, videos_per_class=4, test_per_class=1, size=32, frames=(8, 12),
             day_videos_per_class=2, day_test_per_class=1)
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


def test_same_seed_same_bytes_in_another_process_on_baseline_simd(small, tmp_path):
    """Another process whose numpy runs only its baseline SIMD (as on a CPU without AVX2 or
    AVX-512) writes the same bytes: x264 runs without assembly and YUV is integer math."""
    root, _ = small
    code = ("import json, sys; from dlkdd.pipeline.datasets.sample import make_sample; "
            "make_sample(sys.argv[1], seed=0, **json.loads(sys.argv[2]))")
    env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": " ".join(__cpu_dispatch__)}
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "p"), json.dumps(SMALL)],
                   check=True, env=env)
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
    dark_files = [p for p in root.rglob("*.mp4") if p.relative_to(root).parts[0] != DAY_DIR]
    assert sorted(p.relative_to(root).as_posix() for p in dark_files) == sorted(rel for _, rel in train + test)


def test_day_set_reads_as_its_own_dataset_with_the_same_classes(small):
    root, stats = small
    day = read_dataset(DataConfig(), root / DAY_DIR)
    dark = read_dataset(DataConfig(), root)
    assert day.classes == dark.classes == (root / "classes.txt").read_text().split()
    assert (len(day.train), len(day.test)) == (3, 3)
    assert (stats["day"]["train"], stats["day"]["test"], stats["day"]["videos"]) == (3, 3, 6)
    assert stats["videos"] == 12  # the dark set's stats do not count the day videos
    assert not any(e.rel.startswith(DAY_DIR + "/") for e in dark.train + dark.test)
    assert sorted(p.relative_to(root / DAY_DIR).as_posix() for p in (root / DAY_DIR).rglob("*.mp4")) == \
        sorted(e.rel for e in day.train + day.test)
    assert 0.3 <= stats["day"]["mean_brightness"] <= 0.6
    assert stats["day"]["video_brightness"][0] > 5 * stats["video_brightness"][1]


def test_day_exposure_is_the_only_difference_in_the_generator():
    """Same seed stream through both exposures: the day clip is the dark clip's scene, brighter."""
    clean = render_video("Pour", np.random.default_rng(5), 32, 10)
    dark = expose(clean, np.random.default_rng(6), "dark").astype(float)
    day = expose(clean, np.random.default_rng(6), "day").astype(float)
    assert 0.02 <= dark.mean() / 255 <= 0.08 and 0.3 <= day.mean() / 255 <= 0.55
    corr = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]  # noqa: E731
    assert corr(day, clean) > 0.99 and corr(dark, clean) > 0.5
    snr = lambda x: x.mean() / (x - clean * x.mean() / clean.mean()).std()  # noqa: E731
    assert snr(day) > 5 * snr(dark)


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
    with pytest.raises(ValueError):
        make_sample(tmp_path, day_videos_per_class=2, day_test_per_class=2)
    with pytest.raises(ValueError):
        make_sample(tmp_path, size=33)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, needle", [
    (["--size", "33"], "size must be even"),
    (["--videos-per-class", "4", "--test-per-class", "4"], "test_per_class"),
    (["--day-videos-per-class", "3", "--day-test-per-class", "5"], "day_test_per_class"),
])
def test_cli_sample_mistakes_are_one_line_errors_and_write_nothing(args, needle, tmp_path):
    result = CliRunner().invoke(cli, ["sample", str(tmp_path / "out"), *args])
    assert result.exit_code != 0 and needle in result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not (SAMPLE / "classes.txt").exists(), reason="data/sample not generated")
def test_committed_sample():
    stats = sample_stats(SAMPLE, decode=False)
    day = sample_stats(SAMPLE / DAY_DIR, decode=False)
    assert stats["classes"] >= 6 and stats["test"] >= 100  # one test video is <= 1 point of top-1
    assert stats["train"] + stats["test"] == stats["videos"]
    assert day["class_names"] == stats["class_names"] and day["train"] > 0 and day["test"] > 0
    assert stats["bytes"] + day["bytes"] < 5e6
    on_disk = sorted(p.relative_to(SAMPLE).as_posix() for p in SAMPLE.rglob("*.mp4"))
    listed = read_split(SAMPLE / "splits/train.txt") + read_split(SAMPLE / "splits/test.txt")
    day_listed = read_split(SAMPLE / DAY_DIR / "splits/train.txt") + read_split(SAMPLE / DAY_DIR / "splits/test.txt")
    assert on_disk == sorted([rel for _, rel in listed] + [f"{DAY_DIR}/{rel}" for _, rel in day_listed])
    assert all(0 <= label < stats["classes"] for label, _ in listed + day_listed)
    # Decode one video per class and set: right size, dark or normal exposure.
    for name in stats["class_names"]:
        for folder, (lo, hi) in ((SAMPLE, (0.02, 0.10)), (SAMPLE / DAY_DIR, (0.25, 0.6))):
            vr = decord.VideoReader(str(folder / name / f"{name}_1.mp4"), ctx=decord.cpu(0))
            clip = vr.get_batch(list(range(len(vr)))).asnumpy()
            assert 16 <= len(clip) <= 24 and clip.shape[1:] == (64, 64, 3)
            assert lo <= clip.mean() / 255 <= hi
