import hashlib
import json
import multiprocessing
import os
import pickle
import sys

import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dlkdd.pipeline.datasets.shards import ClipDataset, ShardError, read_clip, read_meta, verify_shard, write_shard
from dlkdd.pipeline.engine import atomic

N, T, H, W = 3, 4, 8, 10


def make_arrays(n=N, seed=0, offset=0):
    rng = np.random.default_rng(seed)
    original = rng.integers(0, 256, (n, T, H, W, 3), dtype=np.uint8)
    enhanced = (255 - original).astype(np.uint8)
    labels = np.arange(n) % 2 + offset
    videos = [f"Class/vïdeo_{offset + i}.mp4" for i in range(n)]
    frames = np.arange(n * T).reshape(n, T) + 100 * offset
    return original, enhanced, labels, videos, frames


@pytest.fixture
def shard(tmp_path):
    arrays = make_arrays()
    path = write_shard(tmp_path / "shard-00000.h5", *arrays)
    return path, arrays


def test_round_trip(shard):
    path, (original, enhanced, labels, videos, frames) = shard
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 1
        np.testing.assert_array_equal(f["original"][()], original)
        np.testing.assert_array_equal(f["enhanced"][()], enhanced)
        assert f["label"].dtype == np.int64 and f["frames"].dtype == np.int32
        np.testing.assert_array_equal(f["label"][()], labels)
        np.testing.assert_array_equal(f["frames"][()], frames)
        assert f["video"].asstr()[()].tolist() == videos
    meta = read_meta(path)
    assert meta["video"] == videos and meta["shape"] == (T, H, W)
    np.testing.assert_array_equal(read_clip(path, 1, "enhanced"), enhanced[1])
    orig, enh = read_clip(path, 2, "both")
    np.testing.assert_array_equal(orig, original[2])
    np.testing.assert_array_equal(enh, enhanced[2])
    assert verify_shard(path) == []


def test_one_checksummed_chunk_per_clip_and_no_timestamps(shard):
    path, _ = shard
    with h5py.File(path, "r") as f:
        for name in ("original", "enhanced"):
            dset = f[name]
            assert dset.chunks == (1, T, H, W, 3)
            assert dset.fletcher32
            assert dset.compression is None
            assert dset.id.get_num_chunks() == N
            info = h5py.h5o.get_info(dset.id)
            assert info.ctime == info.mtime == 0  # no timestamps: same data, same bytes


def test_no_tmp_left(shard):
    path, _ = shard
    assert sorted(p.name for p in path.parent.iterdir()) == ["shard-00000.h5"]


def test_deterministic_bytes(tmp_path):
    arrays = make_arrays()
    a = write_shard(tmp_path / "a.h5", *arrays)
    b = write_shard(tmp_path / "b.h5", *arrays)
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for name in ("original", "enhanced", "label", "frames"):
            assert fa[name][()].tobytes() == fb[name][()].tobytes()
        assert fa["video"][()].tolist() == fb["video"][()].tolist()
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (a, b)]
    assert digest[0] == digest[1]  # whole files, not only the datasets


def test_bad_shapes_rejected(tmp_path):
    original, enhanced, labels, videos, frames = make_arrays()
    with pytest.raises(ValueError, match="differ in shape"):
        write_shard(tmp_path / "x.h5", original, enhanced[:, :2], labels, videos, frames)
    with pytest.raises(ValueError, match="uint8"):
        write_shard(tmp_path / "x.h5", original, enhanced.astype(np.int16), labels, videos, frames)
    with pytest.raises(ValueError, match="labels"):
        write_shard(tmp_path / "x.h5", original, enhanced, labels[:2], videos, frames)
    assert list(tmp_path.iterdir()) == []


def flip_byte_in_chunk(path, name, row):
    with h5py.File(path, "r") as f:
        info = f[name].id.get_chunk_info(row)
    offset = info.byte_offset + info.size // 2
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_corrupt_chunk_is_a_shard_error(shard):
    path, (original, *_) = shard
    flip_byte_in_chunk(path, "original", 1)
    with pytest.raises(ShardError, match=r"shard-00000\.h5: clip 1: original: checksum") as e:
        read_clip(path, 1)
    assert "\n" not in str(e.value)
    np.testing.assert_array_equal(read_clip(path, 0), original[0])  # other clips still read
    problems = verify_shard(path)
    assert len(problems) == 1 and "clip 1" in problems[0] and str(path) in problems[0]
    ds = ClipDataset([(path, 1)], [0])
    with pytest.raises(ShardError, match="clip 1"):
        ds[0]


def test_missing_or_garbage_shard(tmp_path):
    with pytest.raises(ShardError, match="missing"):
        read_clip(tmp_path / "nope.h5", 0)
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    with pytest.raises(ShardError, match="junk.h5"):
        read_clip(junk, 0)
    assert verify_shard(junk) and "junk.h5" in verify_shard(junk)[0]


def test_error_inside_writer_leaves_no_shard(tmp_path, monkeypatch):
    def boom(tmp, path):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "commit", boom)
    with pytest.raises(KeyboardInterrupt):
        write_shard(tmp_path / "shard-00001.h5", *make_arrays())
    assert list(tmp_path.iterdir()) == []


def _write_then_die(path):
    def die(tmp, final):
        os._exit(3)  # like kill -9: no cleanup runs

    atomic.commit = die
    write_shard(path, *make_arrays())


def test_killed_writer_leaves_no_shard(tmp_path):
    proc = multiprocessing.get_context("fork").Process(target=_write_then_die,
                                                       args=(tmp_path / "shard-00002.h5",))
    proc.start()
    proc.join(30)
    assert proc.exitcode == 3
    assert list(tmp_path.glob("shard-*.h5")) == []
    assert [p.name.endswith(".tmp") for p in tmp_path.iterdir()] == [True]  # torn tmp, never renamed


def test_lz4_without_hdf5plugin_is_clear(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "hdf5plugin", None)
    with pytest.raises(ShardError, match="hdf5plugin"):
        write_shard(tmp_path / "x.h5", *make_arrays(), compression="lz4")
    with pytest.raises(ValueError, match="gzip"):
        write_shard(tmp_path / "x.h5", *make_arrays(), compression="gzip")


def test_lz4_round_trip(tmp_path):
    pytest.importorskip("hdf5plugin")
    arrays = make_arrays()
    path = write_shard(tmp_path / "x.h5", *arrays, compression="lz4")
    np.testing.assert_array_equal(read_clip(path, 2), arrays[0][2])
    assert verify_shard(path) == []


@pytest.fixture
def two_shards(tmp_path):
    a = make_arrays(3, seed=1, offset=0)
    b = make_arrays(2, seed=2, offset=5)
    write_shard(tmp_path / "shard-00000.h5", *a)
    write_shard(tmp_path / "shard-00001.h5", *b)
    clips, cid = [], 0
    for shard_i, arrays in enumerate((a, b)):
        for row in range(len(arrays[2])):
            clips.append({"id": cid, "video": arrays[3][row], "split": "train" if cid % 2 == 0 else "test",
                          "label": int(arrays[2][row]), "shard": f"shard-0000{shard_i}.h5", "row": row,
                          "clip": 0, "frames": arrays[4][row].tolist()})
            cid += 1
    index = {"format_version": 1, "classes": [str(k) for k in range(7)], "T": T, "H": H, "W": W,
             "clips": clips}
    (tmp_path / "index.json").write_text(json.dumps(index))
    originals = np.concatenate([a[0], b[0]])
    enhanced = np.concatenate([a[1], b[1]])
    labels = np.concatenate([a[2], b[2]])
    return tmp_path / "index.json", originals, enhanced, labels


def test_clip_dataset_with_workers(two_shards):
    index, originals, _, labels = two_shards
    ds = ClipDataset.from_index(index, None)
    assert ds._files == {}  # nothing opened before first access
    ds[0]  # a handle opened in the parent must not leak into the forked workers
    loader = DataLoader(ds, batch_size=2, num_workers=2, shuffle=False)
    got = [(clip, y, i) for clip, y, i in loader]
    clips = torch.cat([c for c, _, _ in got])
    assert clips.dtype == torch.uint8 and clips.shape == (5, T, H, W, 3)
    np.testing.assert_array_equal(clips.numpy(), originals)
    np.testing.assert_array_equal(torch.cat([y for _, y, _ in got]).numpy(), labels)
    assert torch.cat([i for _, _, i in got]).tolist() == [0, 1, 2, 3, 4]
    assert ds.clip_ids == [0, 1, 2, 3, 4]
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._files == {}
    np.testing.assert_array_equal(clone[4][0].numpy(), originals[4])
    ds.close()


def test_from_index_filters_split(two_shards):
    index, originals, enhanced, labels = two_shards
    test = ClipDataset.from_index(index, "test", which="enhanced")
    assert test.clip_ids == [1, 3]
    assert test.labels == labels[[1, 3]].tolist()
    assert len(test) == 2 and test.classes[0] == "0" and test.shape == (T, H, W)
    clip, y, i = test[1]
    assert (y, i) == (labels[3], 1)
    np.testing.assert_array_equal(clip.numpy(), enhanced[3])
    train = ClipDataset.from_index(index, "train")
    assert train.clip_ids == [0, 2, 4]


def test_both(two_shards):
    index, originals, enhanced, _ = two_shards
    orig, enh = ClipDataset.from_index(index, None, which="both")[3][0]
    np.testing.assert_array_equal(orig.numpy(), originals[3])
    np.testing.assert_array_equal(enh.numpy(), enhanced[3])
    with pytest.raises(ValueError, match="which"):
        ClipDataset([], [], which="dark")


def test_from_index_errors(tmp_path):
    with pytest.raises(ShardError, match="missing"):
        ClipDataset.from_index(tmp_path / "index.json", "train")
    (tmp_path / "index.json").write_text(json.dumps({"format_version": 9, "clips": []}))
    with pytest.raises(ShardError, match="format_version"):
        ClipDataset.from_index(tmp_path / "index.json", "train")

