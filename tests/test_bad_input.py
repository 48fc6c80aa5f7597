"""Bad input, end to end through the CLI: each case is a one-line error with a non-zero exit, or a
skip reported in errors.json and the summary. Nothing is lost: a failure writes nothing half-made.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections import namedtuple
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relfix import assert_one_line_error, base_args, graph_for, invoke
from videofix import dark_clip, make_video_dataset, write_video

from dlkdd.pipeline.config import DataConfig
from dlkdd.pipeline.datasets.index import DatasetError
from dlkdd.pipeline.datasets.lists import parse_list
from dlkdd.pipeline.datasets.splits import read_dataset

RNG = np.random.default_rng(7)
GOOD_ODD = {  # valid but unusual: all must end up in the cache
    "C0/short.mp4": lambda p: write_video(p, dark_clip(RNG, 3, 32, 32, 0)),  # fewer frames than a clip
    "C1/gray.mp4": lambda p: write_video(p, dark_clip(RNG, 10, 32, 32, 1), pix_fmt="gray"),
    "C0/odd.mp4": lambda p: write_video(p, dark_clip(RNG, 10, 27, 33, 0), pix_fmt="yuv444p"),  # 33x27
    "C1/long.mp4": lambda p: write_video(p, dark_clip(RNG, 600, 32, 32, 1)),
    "Café clips/vidéo 1.mp4": lambda p: write_video(p, dark_clip(RNG, 10, 32, 32, 0)),
    "C1/mpeg1.mpg": lambda p: write_video(p, dark_clip(RNG, 10, 32, 32, 1), codec="mpeg1video", fps=25),
}
GOOD_LABEL = {"C0/short.mp4": 0, "C1/gray.mp4": 1, "C0/odd.mp4": 0, "C1/long.mp4": 1,
              "Café clips/vidéo 1.mp4": 0, "C1/mpeg1.mpg": 1}


def _truncated(p: Path) -> None:
    write_video(p, dark_clip(RNG, 10, 32, 32, 0))
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 3])


def _broken_moov(p: Path) -> None:  # the metadata atom renamed: the container cannot be parsed
    write_video(p, dark_clip(RNG, 10, 32, 32, 0))
    data = p.read_bytes()
    p.write_bytes(data.replace(b"moov", b"moox", 1))


BAD = {  # unreadable: each skipped and reported, never fatal
    "C0/zero.mp4": lambda p: p.write_bytes(b""),
    "C0/truncated.mp4": _truncated,
    "C1/notvideo.mp4": lambda p: p.write_text("this is not a video\n"),
    "C1/moov.mp4": _broken_moov,
}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """2 classes x 3 ordinary videos, plus the odd and the bad ones in the train split."""
    root = make_video_dataset(tmp_path_factory.mktemp("bad") / "data", classes=2, train=2, test=1,
                              frames=10, h=32, w=32)
    lines = (root / "splits" / "train.txt").read_text().splitlines()
    for rel, make in {**GOOD_ODD, **BAD}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        make(root / rel)
        lines.append(f"{len(lines)}\t{GOOD_LABEL.get(rel, 0)}\t{rel}")
    (root / "splits" / "train.txt").write_text("\n".join(lines) + "\n")
    return root


def test_unreadable_videos_are_skipped_and_reported_odd_ones_are_cached(mixed, tmp_path):
    cache = tmp_path / "cache"
    r = invoke([*base_args(mixed, cache), "enhance"])
    assert r.exit_code == 0, r.output
    assert "4 failed (listed in" in r.stderr
    errors = json.loads((cache / "clips" / "errors.json").read_text())
    assert sorted(e["video"] for e in errors) == sorted(BAD)
    for e in errors:
        assert e["reason"].startswith(e["path"] + ": ") and "\n" not in e["reason"]
    assert json.loads((cache / "stages" / "enhance.json").read_text())["summary"]["failed"] == 4
    index = json.loads((cache / "clips" / "index.json").read_text())
    by_video = {c["video"]: c for c in index["clips"]}
    assert set(GOOD_ODD) <= set(by_video) and not set(BAD) & set(by_video)
    assert len(by_video) == 6 + len(GOOD_ODD)  # nothing lost
    T = index["T"]
    short = by_video["C0/short.mp4"]["frames"]
    assert len(short) == T == 4 and max(short) <= 2 and len(set(short)) < T  # frames repeat
    assert max(by_video["C1/long.mp4"]["frames"]) > 400  # spread over the whole long video
    for rel, c in by_video.items():
        with h5py.File(cache / "clips" / c["shard"], "r") as f:
            assert f["video"][c["row"]].decode() == rel  # non-ASCII names round-trip
            clip = f["original"][c["row"]]
        assert clip.shape == (T, index["H"], index["W"], 3)  # odd sizes fitted to the cache's
        if rel == "C1/gray.mp4":
            assert (clip[..., 0] == clip[..., 1]).all() and (clip[..., 1] == clip[..., 2]).all()


@pytest.mark.slow
def test_the_whole_pipeline_runs_over_odd_and_bad_videos(mixed, tmp_path):
    cache = tmp_path / "cache"
    r = invoke([*base_args(mixed, cache, **{"teacher.epochs": 1, "student.epochs": 1}), "run"])
    assert r.exit_code == 0, r.output
    assert (cache / "report" / "results.md").exists() and "DL-KDD" in r.stdout
    # one seed is an example: the closing line says so and names the command that gives a result
    assert r.stdout.rstrip().splitlines()[-1].startswith("one seed, so this table is a demonstration")
    assert "dlkdd study --seeds 0,1,2,3,4" in r.stdout


# ----------------------------------------------------------------------------- split lists

def _edit(root: Path, rel: str, text: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.fixture
def data(tmp_path):
    return make_video_dataset(tmp_path / "data", classes=2, train=2, test=1, frames=8, h=32, w=32)


def test_crlf_bom_blank_lines_and_comments_are_fine(data, tmp_path):
    clean = read_dataset(DataConfig(), data)
    train = data / "splits" / "train.txt"
    rows = train.read_text().splitlines()
    messy = "\ufeff# ARID split\r\n\r\n" + "\r\n".join(f"  {r}  \r\n# between" for r in rows) + "\r\n\r\n"
    train.write_text(messy, encoding="utf-8")
    messy_index = read_dataset(DataConfig(), data)
    assert [(e.rel, e.label) for e in messy_index.train] == [(e.rel, e.label) for e in clean.train]
    r = invoke([*base_args(data, tmp_path / "cache"), "enhance", "--dry-run"])
    assert r.exit_code == 0 and "enhance: would run" in r.stderr, r.output


LIST_CASES = {  # name: (file, text appended or written, line, what the error says)
    "label not a number": ("splits/train.txt", "9\tx\tC0/C0_0.mp4\n", 5, "label 'x' is not an integer"),
    "negative label": ("splits/train.txt", "9\t-1\tC0/C0_0.mp4\n", 5, "negative label -1"),
    "unknown class": ("splits/train.txt", "9\t2\tC1/C1_1.mp4\n", 5, "label 2 out of range for 2 classes"),
    "duplicate": ("splits/train.txt", "9\t0\tC0/C0_0.mp4\n", 5, "duplicate entry C0/C0_0.mp4"),
    "missing video": ("splits/train.txt", "9\t0\tC0/gone.mp4\n", 5, "video not found"),
    "fields": ("splits/train.txt", "9\tC0/C0_1.mp4\n", 5, "expected 3 tab-separated fields"),
    "in both splits": ("splits/test.txt", "9\t0\tC0/C0_0.mp4\n", 3, "is also in the train split"),
    "not utf-8": ("splits/train.txt", b"0\t0\tC0/caf\xe9.mp4\n", None, "not UTF-8 text"),
    "empty": ("splits/train.txt", "# nothing here\n", None, "no videos listed in the train split"),
    "list missing": ("splits/train.txt", None, None, "train split list not found"),
    "directory": ("splits/train.txt", "dir", None, "train split list not found"),
}


@pytest.mark.parametrize("case", LIST_CASES)
def test_bad_split_lists_are_one_line_errors_naming_file_and_line(data, tmp_path, case):
    rel, text, line, what = LIST_CASES[case]
    path = data / rel
    (data / "classes.txt").write_text("C0\nC1\n")
    if text is None:
        path.unlink()
    elif text == "dir":
        path.unlink()
        path.mkdir()
    elif line is None:
        _edit(data, rel, text)
    else:
        with open(path, "a") as f:
            f.write(text)
    cache = tmp_path / "cache"
    r = invoke([*base_args(data, cache), "enhance"])
    assert_one_line_error(r, f"{path}:{line}:" if line else str(path), what)
    assert not (cache / "clips").exists() and not (cache / "stages" / "enhance.json").exists()


# ----------------------------------------------------------------------------- config

CONFIG_CASES = {
    "unknown key": ("[teacher]\nepochz = 3\n", "unknown config key 'teacher.epochz'"),
    "unknown section": ("[trainer]\nepochs = 3\n", "unknown config section 'trainer'"),
    "wrong type": ("[teacher]\nepochs = \"three\"\n", "teacher.epochs: expected int, got 'three'"),
    "bool for int": ("[data]\nframes = true\n", "data.frames: expected int"),
    "float for int": ("[data]\nframes = 4.5\n", "data.frames: expected int"),
    "negative": ("[data]\nshort_side = -32\n", "data.short_side: must be > 0"),
    "zero": ("[teacher]\nbatch_size = 0\n", "teacher.batch_size: must be > 0"),
    "negative workers": ("[enhance]\nworkers = -1\n", "enhance.workers: must be >= 0"),
    "crop > short side": ("[data]\ncrop = 64\nshort_side = 32\n", "data.crop: 64 is larger than"),
    "bad choice": ("[enhancer]\nkind = \"retinex\"\n", "enhancer.kind: 'retinex' is not one of"),
    "not a table": ("epochs = 3\n", "top-level key 'epochs' must be a [section] table"),
    "bad toml": ("[teacher\nepochs = 3\n", "config.toml: "),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_files_are_one_line_errors(tmp_path, case):
    text, what = CONFIG_CASES[case]
    path = tmp_path / "config.toml"
    path.write_text(text)
    r = invoke(["--config", str(path), "--cache", str(tmp_path / "cache"), "status"])
    assert_one_line_error(r, what)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("item, what", [
    ("teacher.epochz=3", "unknown config key"), ("teacher.epochs=three", "expected int"),
    ("data.frames=0", "must be > 0"), ("student.alpha=1.5", "must be in [0, 1]"), ("oops", "expected section.key")])
def test_bad_set_overrides_are_one_line_errors(tmp_path, item, what):
    assert_one_line_error(invoke(["--cache", str(tmp_path / "c"), "--set", item, "status"]), what)


def test_missing_config_file_and_data_root_are_one_line_errors(tmp_path):
    assert_one_line_error(invoke(["--config", str(tmp_path / "none.toml"), "status"]), "config file not found")
    r = invoke([*base_args(tmp_path / "nowhere", tmp_path / "cache"), "enhance"])
    assert_one_line_error(r, "dataset root not found")


# ----------------------------------------------------------------------------- the cache's disk

def test_cache_that_cannot_be_created_is_a_one_line_error(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    r = invoke([*base_args(data, blocker / "cache"), "enhance"])
    assert_one_line_error(r, str(blocker), "Not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits (see the tmpfs case below)")
def test_read_only_cache_is_a_one_line_error(data, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        assert_one_line_error(invoke([*base_args(data, cache), "enhance"]), "Permission denied")
    finally:
        cache.chmod(0o755)


def test_full_disk_is_caught_before_enhance_starts(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 5000, 5000))
    r = invoke([*base_args(data, cache), "enhance"])
    assert_one_line_error(r, f"{cache / 'clips'}: not enough free space for the clip cache", "GB free")
    assert not list((cache / "clips").glob("shard-*")) and not (cache / "stages" / "enhance.json").exists()
    assert graph_for(data, cache).status("enhancer").state == "fresh"  # what was done is kept


def test_disk_full_while_checkpointing_is_a_one_line_error_and_the_rerun_completes(data, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    args = [*base_args(data, cache, **{"teacher.epochs": 2}), "teacher"]
    assert invoke([*args[:-1], "enhance"]).exit_code == 0
    real_save, real_usage = torch.save, shutil.disk_usage
    usage = namedtuple("usage", "total used free")

    def full(obj, f, *a, **kw):  # what torch says when the disk fills up mid-write
        Path(f).write_bytes(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    monkeypatch.setattr(torch, "save", full)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9, 0))
    r = invoke(args)
    assert_one_line_error(r, str(cache / "teacher" / "checkpoint.pt"), "No space left on device")
    assert not list((cache / "teacher").glob("*.tmp")) and not (cache / "teacher" / "checkpoint.pt").exists()
    g = graph_for(data, cache, **{"teacher.epochs": 2})
    assert g.status("enhance").state == "fresh" and g.status("teacher").state == "missing"
    monkeypatch.setattr(torch, "save", real_save)
    monkeypatch.setattr(shutil, "disk_usage", real_usage)
    r = invoke(args)
    assert r.exit_code == 0, r.output
    assert graph_for(data, cache, **{"teacher.epochs": 2}).status("teacher").state == "fresh"


@pytest.fixture
def tmpfs(tmp_path):
    """A real, small filesystem (root and a kernel that lets us mount); skipped elsewhere."""
    mounted = []

    def make(size: str, ro: bool = False) -> Path:
        d = tmp_path / f"fs{len(mounted)}"
        d.mkdir()
        opts = f"size={size}" + (",ro" if ro else "")
        if not shutil.which("mount") or subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(d)],
                                                       capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(d)
        return d
    yield make
    for d in mounted:
        subprocess.run(["umount", "-l", str(d)], capture_output=True)


def test_read_only_filesystem_cache_is_a_one_line_error(data, tmpfs):
    cache = tmpfs("1m", ro=True) / "cache"
    assert_one_line_error(invoke([*base_args(data, cache), "enhance"]), "Read-only file system")


@pytest.mark.slow
def test_really_full_disk_while_training_is_a_one_line_error_and_nothing_recorded_is_lost(data, tmp_path,
                                                                                          tmpfs):
    fs = tmpfs("16m")
    cache = fs / "cache"
    args = [*base_args(data, cache, **{"teacher.epochs": 2}), "teacher"]
    assert invoke([*args[:-1], "enhance"]).exit_code == 0
    filler = fs / "filler"  # leave a few kB: enough to start training, not for a checkpoint
    filler.write_bytes(b"\0" * (shutil.disk_usage(fs).free - 48 * 1024))
    r = invoke(args)
    assert_one_line_error(r, "No space left on device")
    g = graph_for(data, cache, **{"teacher.epochs": 2})
    assert g.status("enhance", verify=True).state == "fresh" and g.status("teacher").state == "missing"
    filler.unlink()
    r = invoke(args)
    assert r.exit_code == 0, r.output


# ----------------------------------------------------------------------------- property: list parsing

FILES = ["a.mp4", "b c.mp4", "Café/vidéo 1.mp4", "d/e.avi", "f\tg.mp4"]


@pytest.fixture(scope="module")
def list_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("lists")
    for rel in FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    return root


def _line(fmt: str, rel: str, label: int, idx: int) -> str:
    return {"arid": f"{idx}\t{label}\t{rel}", "arid15": f"x\t{idx}\t{label}\t{rel}",
            "mmaction": f"{rel} {label}"}[fmt]


junk = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lines=st.lists(st.one_of(junk, st.sampled_from(["../a.mp4 0", "/etc/passwd 0", "0\t0\t..", "\t\t",
                                                       "a.mp4 99999999999999999999", "a.mp4\x00 0"])),
                      max_size=6),
       fmt=st.sampled_from(["auto", "arid", "arid15", "mmaction"]),
       classes=st.one_of(st.none(), st.integers(1, 5)))
def test_parse_list_fails_only_with_dataset_error(list_root, lines, fmt, classes):
    path = list_root / "list.txt"
    path.write_text("\n".join(lines), encoding="utf-8")
    try:
        entries = parse_list(path, list_root, fmt, "train", classes)
    except DatasetError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path))
        return
    for e in entries:
        assert Path(e.path).resolve().is_relative_to(list_root.resolve())


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(picks=st.lists(st.tuples(st.sampled_from([f for f in FILES if "\t" not in f]), st.integers(0, 4)),
                      unique_by=lambda t: t[0], min_size=1),
       fmt=st.sampled_from(["arid", "arid15", "mmaction"]), newline=st.sampled_from(["\n", "\r\n"]),
       comments=st.booleans())
def test_well_formed_lists_round_trip(list_root, picks, fmt, newline, comments):
    rows = [_line(fmt, rel, label, i) for i, (rel, label) in enumerate(picks)]
    if comments:
        rows = ["# a comment", ""] + [r for row in rows for r in (row, "")]
    path = list_root / "good.txt"
    path.write_text(newline.join(rows) + newline, encoding="utf-8")
    for as_fmt in (fmt, "auto"):
        entries = parse_list(path, list_root, as_fmt, "test", 5)
        assert [(e.rel, e.label, e.split) for e in entries] == [(rel, label, "test") for rel, label in picks]
