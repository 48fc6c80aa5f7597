"""`dlkdd sample --like arid | dark48`: data shaped like the real sets (frame size, container and codec,
naming, split lists), deterministic, readable by the dataset readers and by decord."""
from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from dlkdd.cli import cli
from dlkdd.pipeline.config import DataConfig
from dlkdd.pipeline.datasets import encode
from dlkdd.pipeline.datasets.expected import ARID_CLASSES
from dlkdd.pipeline.datasets.sample import (
    ARID_SPLITS,
    CLASS_ORDER,
    DARK48_LISTS,
    LIKES,
    MAPPING_TABLE,
    arid_list,
    make_arid_like,
    make_dark48_like,
    wide,
)
from dlkdd.pipeline.datasets.splits import ARID_GROUP, YOUTUBE_GROUP, group_of, read_dataset

pytest.importorskip("av")
decord = pytest.importorskip("decord")

ARID = dict(classes=3, recordings_per_class=3, clips_per_recording=2, size=32, frames=(8, 10))
DARK48 = dict(classes=2, videos_per_class=4, clips_per_video=2, size=32, frames=(8, 10))


def digests(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def arid_cfg(split: int = 1, **kw) -> DataConfig:
    return DataConfig(format="arid", dataset="arid", train_list=arid_list(split, "train"),
                      test_list=arid_list(split, "test"), split=split, **kw)


@pytest.fixture(scope="module")
def arid(tmp_path_factory):
    root = tmp_path_factory.mktemp("arid") / "ARID"
    return root, make_arid_like(root, seed=0, **ARID)


@pytest.fixture(scope="module")
def dark48(tmp_path_factory):
    root = tmp_path_factory.mktemp("dark48") / "Dark-48"
    return root, make_dark48_like(root, seed=0, **DARK48)


def test_the_generator_draws_arids_classes_in_arids_label_order():
    assert CLASS_ORDER == ARID_CLASSES == ("Drink", "Jump", "Pick", "Pour", "Push", "Run", "Sit", "Stand",
                                           "Turn", "Walk", "Wave")
    assert list(ARID_CLASSES) == sorted(ARID_CLASSES)  # mapping_table.txt: labels in alphabetical order
    assert (wide(240, 4 / 3), wide(180, 16 / 9), wide(32, 4 / 3)) == (320, 320, 42)


def test_arid_layout_lists_and_names(arid):
    root, stats = arid
    names = list(ARID_CLASSES[:3])
    assert stats["class_names"] == names and stats["videos"] == 3 * 3 * 2
    assert not (root / "classes.txt").exists()  # as in ARID: names come from the class folders
    assert (root / MAPPING_TABLE).read_text() == "".join(f"{i}\t{n}\n" for i, n in enumerate(names))
    videos = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.avi"))
    assert len(videos) == 18
    assert all(re.fullmatch(r"(\w+)/\1_[1-3]_[12]\.avi", rel) for rel in videos), videos
    for k in ARID_SPLITS:
        for part in ("train", "test"):
            lines = (root / arid_list(k, part)).read_text().splitlines()
            for i, line in enumerate(lines):
                idx, label, rel = line.split("\t")
                assert int(idx) == i and rel.split("/")[0] == names[int(label)]
        assert stats["lists"][f"split{k}_train"] + stats["lists"][f"split{k}_test"] == 18


def test_each_split_tests_other_whole_recordings(arid):
    root, _ = arid
    tested = {}
    for k in ARID_SPLITS:
        index = read_dataset(arid_cfg(k, val_fraction=0.0), root)
        assert index.classes == list(ARID_CLASSES[:3])
        test_groups = {group_of(e.rel, ARID_GROUP) for e in index.test}
        train_groups = {group_of(e.rel, ARID_GROUP) for e in index.train}
        assert not test_groups & train_groups  # a recording is wholly train or wholly test
        assert len(test_groups) == 3 and len(index.test) == 6  # one recording of each class
        tested[k] = test_groups
    assert not (tested[1] & tested[2]) and not (tested[1] & tested[3]) and not (tested[2] & tested[3])


def test_grouped_validation_finds_the_recordings(arid):
    root, _ = arid
    index = read_dataset(arid_cfg(1, val_fraction=0.2), root)
    assert index.groups["val"] == {"groups": 3, "videos": 6}  # a recording (2 clips) of each class
    assert index.groups["train"] == {"groups": 3, "videos": 6}
    val = {group_of(e.rel, ARID_GROUP) for e in index.val}
    assert not val & {group_of(e.rel, ARID_GROUP) for e in index.train}


def test_clips_of_a_recording_share_the_scene_not_the_motion(arid):
    root, _ = arid

    def frames(rel):
        return decord.VideoReader(str(root / rel), ctx=decord.cpu(0)).get_batch([0]).asnumpy()[0].astype(float)

    a, b, other = frames("Drink/Drink_1_1.avi"), frames("Drink/Drink_1_2.avi"), frames("Drink/Drink_2_1.avi")
    corr = lambda x, y: np.corrcoef(x.ravel(), y.ravel())[0, 1]  # noqa: E731
    assert corr(a, b) > corr(a, other) + 0.1


def test_avi_is_mpeg4_at_30fps_and_decodes_dark(arid):
    import av
    root, _ = arid
    with av.open(str(root / "Pick/Pick_3_2.avi")) as f:
        stream = f.streams.video[0]
        assert (f.format.name, stream.codec_context.name) == ("avi", "mpeg4")
        assert (stream.width, stream.height) == (wide(32, 4 / 3), 32)
    vr = decord.VideoReader(str(root / "Pick/Pick_3_2.avi"), ctx=decord.cpu(0), num_threads=1)
    clip = vr.get_batch(list(range(len(vr)))).asnumpy()
    assert 8 <= len(vr) <= 10 and round(vr.get_avg_fps()) == 30
    assert clip.shape[1:] == (32, 42, 3) and 0.02 <= clip.mean() / 255 <= 0.10


def test_real_size_arid_frames_are_320x240(tmp_path):
    make_arid_like(tmp_path, classes=1, recordings_per_class=3, clips_per_recording=1, frames=(6, 6))
    vr = decord.VideoReader(str(tmp_path / "Drink/Drink_1_1.avi"), ctx=decord.cpu(0), num_threads=1)
    assert vr[0].asnumpy().shape == (240, 320, 3) and len(vr) == 6


def test_same_seed_same_bytes_in_another_process_other_seed_differs(arid, tmp_path):
    root, _ = arid
    code = ("import json, sys; from dlkdd.pipeline.datasets.sample import make_arid_like as m; "
            "o = json.loads(sys.argv[2]); o['frames'] = tuple(o['frames']); m(sys.argv[1], seed=0, **o)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "p"), json.dumps(ARID)], check=True)
    assert digests(tmp_path / "p") == digests(root)
    make_arid_like(tmp_path / "q", seed=1, **ARID)
    other = digests(tmp_path / "q")
    assert all(other[k] != v for k, v in digests(root).items() if k.endswith(".avi"))


def test_dark48_naming_lists_and_groups(dark48):
    root, stats = dark48
    assert stats["class_names"] == ["Drink", "Jump"] and stats["videos"] == 16
    assert set(stats["lists"]) == {"train", "test"}
    for name in DARK48_LISTS.values():
        for line in (root / name).read_text().splitlines():
            rel, label = line.rsplit(" ", 1)
            assert re.fullmatch(r"(Drink|Jump)/[A-Za-z0-9_-]{11}_[12]\.mp4", rel), rel
            assert ["Drink", "Jump"][int(label)] == rel.split("/")[0]
    cfg = DataConfig(format="mmaction", dataset="dark48", train_list=DARK48_LISTS["train"],
                     test_list=DARK48_LISTS["test"], val_fraction=0.25)
    index = read_dataset(cfg, root)
    assert index.classes == ["Drink", "Jump"]
    test_ids = {group_of(e.rel, YOUTUBE_GROUP) for e in index.test}
    rest = {group_of(e.rel, YOUTUBE_GROUP) for e in index.train + index.val}
    assert len(test_ids) == 2 and not test_ids & rest  # one whole YouTube video per class tests
    assert index.groups["val"]["groups"] == 2 and index.groups["val"]["videos"] == 4
    vr = decord.VideoReader(str(root / index.test[0].rel), ctx=decord.cpu(0))
    assert vr[0].asnumpy().shape == (32, wide(32, 16 / 9), 3) and round(vr.get_avg_fps()) == 30


def test_cli_like_arid_writes_the_set(tmp_path):
    out = tmp_path / "a"
    result = CliRunner().invoke(cli, ["sample", str(out), "--like", "arid", "--classes", "1",
                                      "--recordings-per-class", "3", "--clips-per-recording", "1", "--size", "16"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["videos"] == 3
    assert sorted(p.name for p in (out / "list_cvt").iterdir()) == sorted(
        [Path(arid_list(k, p)).name for k in ARID_SPLITS for p in ("train", "test")] + ["mapping_table.txt"])


def test_cli_like_choices_are_the_generators():
    like = next(p for p in cli.commands["sample"].params if p.name == "like")
    assert tuple(like.type.choices) == LIKES


@pytest.mark.parametrize("args, needle", [
    (["--like", "arid", "--videos-per-class", "3"], "--videos-per-class: not an option of --like arid"),
    (["--like", "sample", "--recordings-per-class", "3"], "--recordings-per-class: not an option of --like sample"),
    (["--like", "arid", "--recordings-per-class", "2"], "recordings per class must be at least 3"),
    (["--like", "dark48", "--classes", "12"], "classes must be 1..11"),
    (["--like", "arid", "--size", "31"], "size must be even"),
])
def test_cli_like_mistakes_are_one_line_and_write_nothing(tmp_path, args, needle):
    result = CliRunner().invoke(cli, ["sample", str(tmp_path / "out"), *args])
    assert result.exit_code != 0 and needle in result.output, result.output
    assert "Traceback" not in result.output
    assert len([line for line in result.output.splitlines() if line.strip()]) <= 3  # click's usage + the line
    assert not (tmp_path / "out").exists()


def test_without_pyav_writing_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)  # `import av` raises ImportError
    with pytest.raises(encode.VideoWriterError, match="needs PyAV: pip install av"):
        encode.write_avi(tmp_path / "x.avi", np.zeros((2, 16, 16, 3), np.uint8), 30)
    assert not any(tmp_path.iterdir())
