"""Split lists, class folders, the dataset's splits, frame sampling and decord decoding
(pipeline/datasets/: lists, folders, splits, decode)."""
import logging
import os
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from videofix import write_video

from dlkdd.pipeline.config import DataConfig
from dlkdd.pipeline.datasets.decode import VideoError, decode_clips, decord_reason, probe, resize_shape, sample_indices
from dlkdd.pipeline.datasets.folders import read_folders
from dlkdd.pipeline.datasets.index import DatasetError, DatasetIndex, VideoEntry, held_out_count
from dlkdd.pipeline.datasets.lists import detect_format, parse_list
from dlkdd.pipeline.datasets.splits import read_dataset

# ------------------------------------------------------------------ helpers

def touch(root, *rels):
    """Placeholder video files: list parsing only checks that they exist."""
    for rel in rels:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"not decoded here")


def write_list(path, text, encoding="utf-8", newline="\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode(encoding))
    return path


def one_line_error(exc_info, *parts):
    msg = str(exc_info.value)
    assert "\n" not in msg, msg
    for part in parts:
        assert part in msg, f"{part!r} not in {msg!r}"
    return msg


ARID = ["Drink/Drink_1_1.avi", "Jump/Jump_1_1.avi", "Drink/Drink_2_1.avi", "Wave/Wave_1_1.avi"]


@pytest.fixture
def arid_root(tmp_path):
    touch(tmp_path, *ARID)
    return tmp_path


# ------------------------------------------------------------------ list formats

def test_arid_list(arid_root):
    lst = write_list(arid_root / "splits/train.txt",
                     "0\t0\tDrink/Drink_1_1.avi\n1\t1\tJump/Jump_1_1.avi\n2\t0\tDrink/Drink_2_1.avi\n")
    for fmt in ("auto", "arid"):
        entries = parse_list(lst, arid_root, fmt)
        assert [(e.label, e.rel, e.line) for e in entries] == [
            (0, "Drink/Drink_1_1.avi", 1), (1, "Jump/Jump_1_1.avi", 2), (0, "Drink/Drink_2_1.avi", 3)]
        e = entries[0]
        assert os.path.isabs(e.path) and e.path == str(arid_root / "Drink/Drink_1_1.avi")
        assert e.split == "train" and e.source == str(lst)
    assert detect_format("0\t0\tDrink/Drink_1_1.avi") == "arid"


def test_arid15_list(arid_root):
    lst = write_list(arid_root / "l.txt",
                     "a\tb\tc\t0\tDrink/Drink_1_1.avi\nx\ty\tz\t2\tWave/Wave_1_1.avi\n")
    assert detect_format("a\tb\tc\t0\tDrink/Drink_1_1.avi") == "arid15"
    for fmt in ("auto", "arid15"):
        assert [(e.label, e.rel) for e in parse_list(lst, arid_root, fmt)] == [
            (0, "Drink/Drink_1_1.avi"), (2, "Wave/Wave_1_1.avi")]
    two = write_list(arid_root / "two.txt", "1\tJump/Jump_1_1.avi\n")
    assert [(e.label, e.rel) for e in parse_list(two, arid_root)] == [(1, "Jump/Jump_1_1.avi")]


def test_mmaction_list_with_spaces(tmp_path):
    touch(tmp_path, "My Class/clip one.mp4", "b.mp4", "c/d.mkv")
    lst = write_list(tmp_path / "list.txt", "My Class/clip one.mp4 3\nb.mp4\t0\n  c\\d.mkv   1  \n")
    assert detect_format("My Class/clip one.mp4 3") == "mmaction"
    for fmt in ("auto", "mmaction"):
        assert [(e.label, e.rel) for e in parse_list(lst, tmp_path, fmt)] == [
            (3, "My Class/clip one.mp4"), (0, "b.mp4"), (1, "c/d.mkv")]


def test_crlf_bom_blank_lines_and_comments(arid_root):
    text = "# ARID split\n\n0\t0\tDrink/Drink_1_1.avi\n   \n# more\n1\t1\tJump/Jump_1_1.avi\n\n"
    lst = write_list(arid_root / "t.txt", "\ufeff" + text, newline="\r\n")
    entries = parse_list(lst, arid_root)
    assert [(e.rel, e.line) for e in entries] == [("Drink/Drink_1_1.avi", 3), ("Jump/Jump_1_1.avi", 6)]
    # line numbers stay right after CRLFs: an error on the 8th line says :8:
    bad = write_list(arid_root / "bad.txt", "\ufeff" + text + "2\tX\tWave/Wave_1_1.avi\n", newline="\r\n")
    with pytest.raises(DatasetError) as e:
        parse_list(bad, arid_root)
    one_line_error(e, "bad.txt:8:", "'X'")


def test_read_dataset_arid_infers_class_names(arid_root):
    write_list(arid_root / "splits/train.txt", "0\t0\tDrink/Drink_1_1.avi\n1\t2\tWave/Wave_1_1.avi\n")
    write_list(arid_root / "splits/test.txt", "0\t0\tDrink/Drink_2_1.avi\n")
    index = read_dataset(DataConfig(), arid_root)
    assert isinstance(index, DatasetIndex)
    assert index.classes == ["Drink", "class1", "Wave"]  # label 1 has no videos
    assert [e.rel for e in index.entries("train")] == ["Drink/Drink_1_1.avi", "Wave/Wave_1_1.avi"]
    assert [e.split for e in index.entries("test")] == ["test"]
    assert index.entries("val") == []  # one train video per class: nothing to hold out
    with pytest.raises(ValueError):
        index.entries("validation")


def test_read_dataset_class_names_disagree_or_no_folder(tmp_path):
    touch(tmp_path, "A/x.mp4", "B/y.mp4", "z.mp4", "C/w.mp4")
    write_list(tmp_path / "splits/train.txt", "A/x.mp4 0\nB/y.mp4 0\nz.mp4 1\n")
    write_list(tmp_path / "splits/test.txt", "C/w.mp4 2\n")
    assert read_dataset(DataConfig(), tmp_path).classes == ["class0", "class1", "C"]


def test_read_dataset_classes_txt_and_label_range(arid_root):
    write_list(arid_root / "classes.txt", "\ufeffDrink\r\nJump\r\n")
    write_list(arid_root / "splits/train.txt", "0\t0\tDrink/Drink_1_1.avi\n1\t1\tJump/Jump_1_1.avi\n")
    write_list(arid_root / "splits/test.txt", "0\t0\tDrink/Drink_2_1.avi\n1\t2\tWave/Wave_1_1.avi\n")
    with pytest.raises(DatasetError) as e:
        read_dataset(DataConfig(), arid_root)
    one_line_error(e, "test.txt:2:", "label 2 out of range for 2 classes")
    write_list(arid_root / "splits/test.txt", "0\t0\tDrink/Drink_2_1.avi\n")
    assert read_dataset(DataConfig(), arid_root).classes == ["Drink", "Jump"]


def test_read_dataset_missing_list_names_path(arid_root):
    write_list(arid_root / "splits/train.txt", "0\t0\tDrink/Drink_1_1.avi\n")
    with pytest.raises(DatasetError) as e:
        read_dataset(DataConfig(), arid_root)
    one_line_error(e, str(arid_root / "splits/test.txt"), "not found")
    with pytest.raises(DatasetError):
        read_dataset(DataConfig(), arid_root / "nope")


def test_folders_format(tmp_path):
    names = {"Run": [f"r{i}.MP4" for i in range(8)], "Jump": ["a.avi", "sub/b.mkv", "c.MOV", "d.webm"],
             "Sit": ["only.mp4"]}
    for cls, files in names.items():
        touch(tmp_path, *(f"{cls}/{f}" for f in files))
    touch(tmp_path, "Run/notes.txt", "Run/.hidden.mp4", "splits/train.txt")
    cfg = DataConfig(format="folders", test_fraction=0.25, val_fraction=0.0)
    index = read_dataset(cfg, tmp_path)
    assert index.classes == ["Jump", "Run", "Sit"]  # sorted; splits/ holds no video
    by = lambda entries, k: sorted(e.rel for e in entries if e.label == k)  # noqa: E731
    assert len(by(index.test, 0)) == 1 and len(by(index.train, 0)) == 3
    assert "Jump/sub/b.mkv" in by(index.train, 0) + by(index.test, 0)
    assert len(by(index.test, 1)) == 2 and len(by(index.train, 1)) == 6
    assert by(index.train, 2) == ["Sit/only.mp4"] and by(index.test, 2) == []
    assert all(e.line == 0 and os.path.isabs(e.path) for e in index.train + index.test)
    # the split depends on the relative paths only, not on creation or listing order
    other = tmp_path.parent / (tmp_path.name + "_copy")
    for cls, files in names.items():
        touch(other, *(f"{cls}/{f}" for f in reversed(files)))
    again = read_dataset(cfg, other)
    assert [e.rel for e in again.test] == [e.rel for e in index.test]
    assert held_out_count(2, 0.1) == 1 and held_out_count(1, 0.5) == 0 and held_out_count(10, 0.99) == 9


def test_folders_without_videos(tmp_path):
    touch(tmp_path, "A/readme.txt")
    with pytest.raises(DatasetError) as e:
        read_folders(tmp_path)
    one_line_error(e, "no class folders")


# ------------------------------------------------------------------ bad lines

BAD_LINES = [
    ("0\t0\tDrink/Drink_1_1.avi\n0\t1\n", "arid", 2, "expected 3 tab-separated fields"),
    ("0\t0\tDrink/Drink_1_1.avi\n1\tone\tJump/Jump_1_1.avi\n", "auto", 2, "'one' is not an integer"),
    ("Drink/Drink_1_1.avi 0\nJump/Jump_1_1.avi 1.5\n", "auto", 2, "'1.5' is not an integer"),
    ("Drink/Drink_1_1.avi\n", "mmaction", 1, "expected '<path> <label>'"),
    ("0\t0\tDrink/Drink_1_1.avi\n1\t-1\tJump/Jump_1_1.avi\n", "auto", 2, "negative label -1"),
    ("0\t0\tDrink/Drink_1_1.avi\n1\t5\tJump/Jump_1_1.avi\n", "auto", 2, "label 5 out of range for 3 classes"),
    ("0\t0\tDrink/Drink_1_1.avi\n\n1\t1\tJump/Jump_9_9.avi\n", "auto", 3, "video not found"),
    ("0\t0\tDrink/Drink_1_1.avi\n1\t1\tJump/Jump_1_1.avi\n2\t0\tDrink/./Drink_1_1.avi\n", "auto", 3,
     "duplicate entry Drink/Drink_1_1.avi (first listed at line 1)"),
    ("0\t0\tDrink/Drink_1_1.avi\n1\t0\t../outside.mp4\n", "auto", 2, "escapes the dataset root"),
    ("0\t0\tDrink/../../outside.mp4\n", "auto", 1, "escapes the dataset root"),
    ("0\t0\tDrink/Drink_1_1.avi\n1\t0\t{outside}\n", "auto", 2, "absolute path"),
    ("0\t0\tDrink/Drink_1_1.avi\n1\t0\tC:\\data\\x.avi\n", "auto", 2, "absolute path"),
]


@pytest.mark.parametrize("text,fmt,line,what", BAD_LINES)
def test_bad_line_errors(tmp_path, text, fmt, line, what):
    root = tmp_path / "root"
    touch(root, *ARID)
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"x")
    lst = write_list(root / "my list.txt", text.replace("{outside}", str(outside)))
    with pytest.raises(DatasetError) as e:
        parse_list(lst, root, fmt, num_classes=3)
    one_line_error(e, f"my list.txt:{line}:", what)


def test_symlink_escaping_root_is_an_error(tmp_path):
    root = tmp_path / "root"
    touch(root, "A/in.mp4")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere/out.mp4").write_bytes(b"x")
    try:
        (root / "B").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    except OSError:
        pytest.skip("no symlinks here")
    lst = write_list(root / "l.txt", "A/in.mp4 0\nB/out.mp4 1\n")
    with pytest.raises(DatasetError) as e:
        parse_list(lst, root)
    one_line_error(e, "l.txt:2:", "resolves outside the dataset root")
    with pytest.raises(DatasetError) as e:
        read_folders(root)
    one_line_error(e, "B/out.mp4", "outside the dataset root")


def test_train_test_overlap_is_an_error(arid_root):
    write_list(arid_root / "splits/train.txt", "0\t0\tDrink/Drink_1_1.avi\n1\t1\tJump/Jump_1_1.avi\n")
    write_list(arid_root / "splits/test.txt", "# test\n0\t0\tDrink/Drink_2_1.avi\n1\t1\tJump/Jump_1_1.avi\n")
    with pytest.raises(DatasetError) as e:
        read_dataset(DataConfig(), arid_root)
    one_line_error(e, "test.txt:3:", "Jump/Jump_1_1.avi is also in the train split", "train.txt:2")


def test_empty_split_and_unreadable_list(arid_root):
    write_list(arid_root / "splits/train.txt", "# nothing\n")
    write_list(arid_root / "splits/test.txt", "0\t0\tDrink/Drink_2_1.avi\n")
    with pytest.raises(DatasetError) as e:
        read_dataset(DataConfig(), arid_root)
    one_line_error(e, "train.txt", "no videos")
    (arid_root / "splits/train.txt").write_bytes(b"0\t0\t\xff\xfe.avi\n")
    with pytest.raises(DatasetError) as e:
        read_dataset(DataConfig(), arid_root)
    one_line_error(e, "train.txt", "not UTF-8")


# ------------------------------------------------------------------ sampling

def test_sample_indices_uniform():
    idx = sample_indices(100, 8)
    assert idx.shape == (1, 8) and idx.dtype == np.int64
    assert idx[0].tolist() == [6, 18, 31, 43, 56, 68, 81, 93]  # segment centres
    assert np.all(np.diff(idx[0]) > 0)
    assert sample_indices(8, 8)[0].tolist() == list(range(8))


def test_sample_indices_short_video_repeats_and_logs(caplog):
    with caplog.at_level(logging.DEBUG, logger="dlkdd"):
        idx = sample_indices(5, 8)[0]
    assert np.all(np.diff(idx) >= 0) and set(idx.tolist()) == set(range(5))
    assert "fewer than T=8" in caplog.text
    assert sample_indices(1, 4).tolist() == [[0, 0, 0, 0]]


def test_sample_indices_clips_differ_and_stay_in_range():
    idx = sample_indices(40, 8, clips=3)
    assert idx.shape == (3, 8)
    assert len({tuple(r) for r in idx.tolist()}) == 3
    assert idx.min() >= 0 and idx.max() < 40
    assert np.all(idx[0] < idx[1]) and np.all(idx[1] < idx[2])  # offsets grow within each segment


def test_sample_indices_rejects_bad_arguments():
    for args in ((0, 8), (-3, 8), (10, 0), (10, 4, 0)):
        with pytest.raises(ValueError):
            sample_indices(*args)
    with pytest.raises(ValueError):
        sample_indices(10, 4, mode="dense")


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 500), T=st.integers(1, 64), clips=st.integers(1, 4))
def test_sample_indices_property(n, T, clips):
    idx = sample_indices(n, T, clips)
    assert idx.shape == (clips, T) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() < n
    assert np.all(np.diff(idx, axis=1) >= 0)
    if T <= n:
        assert np.all(np.diff(idx, axis=1) > 0)
    else:
        assert set(idx[0].tolist()) == set(range(n))


def test_resize_shape():
    assert resize_shape(240, 320, 64) == (64, 85)
    assert resize_shape(320, 240, 64) == (85, 64)
    assert resize_shape(48, 64, 48) == (48, 64)
    assert resize_shape(240, 960, 64, max_long_side=128) == (32, 128)  # cap wins
    assert resize_shape(240, 320, 64, max_long_side=128) == (64, 85)  # cap not reached
    with pytest.raises(ValueError):
        resize_shape(0, 10, 64)


# ------------------------------------------------------------------ decoding

N_FRAMES = 20


@pytest.fixture(scope="module")
def ramp_video(tmp_path_factory):
    """20 frames of 48x64 whose brightness encodes the frame number: frame i is 10*i."""
    path = tmp_path_factory.mktemp("videos") / "ramp.mp4"
    frames = np.stack([np.full((48, 64, 3), 10 * i, np.uint8) for i in range(N_FRAMES)])
    write_video(path, frames)
    return path


def test_probe(ramp_video):
    assert probe(ramp_video) == (N_FRAMES, 48, 64, 10.0)


def test_decode_clips_resizes_and_matches_indices(ramp_video):
    frames, idx = decode_clips(ramp_video, T=8, clips=2, short_side=32)
    assert frames.shape == (2, 8, 32, 43, 3) and frames.dtype == np.uint8
    assert idx.tolist() == sample_indices(N_FRAMES, 8, 2).tolist()
    np.testing.assert_allclose(frames.mean(axis=(2, 3, 4)), 10.0 * idx, atol=4)


def test_decode_clips_native_size_cap_and_short_video(ramp_video):
    frames, idx = decode_clips(ramp_video, T=4, clips=1, short_side=48)
    assert frames.shape == (1, 4, 48, 64, 3)
    frames, idx = decode_clips(ramp_video, T=3, clips=1, short_side=48, max_long_side=32)
    assert frames.shape == (1, 3, 24, 32, 3)
    frames, idx = decode_clips(ramp_video, T=32, clips=1, short_side=16)  # longer than the video
    assert frames.shape == (1, 32, 16, 21, 3) and set(idx[0].tolist()) == set(range(N_FRAMES))
    np.testing.assert_allclose(frames.mean(axis=(2, 3, 4)), 10.0 * idx, atol=4)


def test_decode_mpeg4_avi(tmp_path):
    path = tmp_path / "clip.avi"
    write_video(path, np.stack([np.full((32, 32, 3), 20 * i, np.uint8) for i in range(6)]), codec="mpeg4")
    frames, idx = decode_clips(path, T=3, clips=1, short_side=32)
    assert frames.shape == (1, 3, 32, 32, 3)
    np.testing.assert_allclose(frames.mean(axis=(2, 3, 4)), 20.0 * idx, atol=5)


def test_grayscale_video_comes_out_rgb(tmp_path):
    path = tmp_path / "gray.mp4"
    frames = np.stack([np.full((32, 32, 3), 100, np.uint8)] * 4)
    try:
        write_video(path, frames, pix_fmt="gray")
    except Exception:
        pytest.skip("this x264 build cannot encode gray")
    out, _ = decode_clips(path, T=2, clips=1, short_side=32)
    assert out.shape == (1, 2, 32, 32, 3)
    assert abs(float(out.mean()) - 100) < 5


@pytest.mark.parametrize("kind,reason", [("missing", "file not found"), ("empty", "empty file"),
                                         ("text", "Invalid data")])
def test_unreadable_videos_raise_video_error(tmp_path, kind, reason):
    path = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n" * 20)
    for call in (lambda: decode_clips(path, 4, 1, 32), lambda: probe(path)):
        with pytest.raises(VideoError) as e:
            call()
        one_line_error(e, str(path), reason)


def test_decord_reason_strips_trace():
    msg = ("[06:16:32] /github/workspace/src/video/video_reader.cc:486: Error: av_read_frame failed "
           "with 1094995529\n\nStack trace returned 10 entries:\n[bt] (0) libdecord.so(+0x1)\n")
    assert decord_reason(msg) == ("Error: av_read_frame failed: Invalid data found when processing "
                                  "input [1094995529]")


def test_video_entry_is_frozen():
    e = VideoEntry("/a/b.mp4", "b.mp4", 0, "train", "l.txt", 1)
    with pytest.raises(AttributeError):
        e.label = 2  # type: ignore[misc]
    assert SimpleNamespace(**e.__dict__).rel == "b.mp4"
