"""Where models start: the `pretrain` stage, registered (downloaded) weights, state dict files.

Downloads are served by a local HTTP server on 127.0.0.1 that each test starts and stops;
nothing here reaches the internet.
"""
from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import socket
import threading
from pathlib import Path

import pytest
import torch
from rich.console import Console

from dlkdd import models
from dlkdd.errors import StageError
from dlkdd.pipeline import published
from dlkdd.pipeline.config import Config, ConfigError, validate
from dlkdd.pipeline.datasets.splits import SAMPLE
from dlkdd.pipeline.engine.run import Context, execute
from dlkdd.pipeline.stages import pretrain as pretrain_stage
from dlkdd.pipeline.stages import student as student_stage
from dlkdd.pipeline.stages import teacher as teacher_stage
from dlkdd.pipeline.stages.run import resolve_config
from dlkdd.pipeline.stages.table import closure, pipeline_graph
from dlkdd.pipeline.training import classifiers, weights
from dlkdd.pipeline.training.checkpoints import load_trained, save_checkpoint, write_meta
from tests.cachefix import make_clip_cache
from tests.videofix import make_video_dataset

QUIET = Console(quiet=True)


# --------------------------------------------------------------------------------- a local server

@pytest.fixture
def server(tmp_path):
    """(folder served, base URL) on 127.0.0.1; stopped after the test."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """torch's hub cache in a temporary folder."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
    return tmp_path / "hub" / "checkpoints"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def publish(folder: Path, state: dict, stem: str, wrong_hash: bool = False) -> str:
    """Save `state` as `<stem>-<sha256 prefix>.pth` in the served folder; returns the file name."""
    tmp = folder / "tmp.pth"
    torch.save(state, tmp)
    prefix = _sha256(tmp)[:8]
    if wrong_hash:
        prefix = "0" * 8 if prefix != "0" * 8 else "1" * 8
    name = f"{stem}-{prefix}.pth"
    tmp.rename(folder / name)
    return name


def register(monkeypatch, name: str, arch: str, url: str, classes: int = 400) -> None:
    table = dict(published.REGISTERED)
    table[(name, arch)] = published.Published(url, classes, published.KINETICS_NORMALIZE)
    monkeypatch.setattr(published, "REGISTERED", table)


def train_cfg(model="r3d_tiny", pretrained="", seed=0):
    cfg = Config()
    cfg.teacher.model, cfg.teacher.pretrained, cfg.teacher.seed = model, pretrained, seed
    return cfg, cfg.teacher


def published_state(classes=400, seed=5):
    torch.manual_seed(seed)
    return models.build("r3d_tiny", classes).state_dict()


# --------------------------------------------------------------------------------- registered names

def test_the_published_urls_embed_their_hash_and_the_base_can_be_overridden(monkeypatch):
    for (_name, _arch), w in published.REGISTERED.items():
        assert weights.HASH_IN_NAME.search(w.url.rsplit("/", 1)[1]), w.url
        assert w.normalize == {"mean": [0.43216, 0.394666, 0.37645], "std": [0.22803, 0.22145, 0.216989]}
    assert published.published("kinetics400", "r2plus1d_18").url.endswith("/r2plus1d_18-91a641e6.pth")
    assert published.published("kinetics400", "r2plus1d_18_bert") == published.published("kinetics400", "r2plus1d_18")
    assert published.published("ig65m", "r2plus1d_34").model_kwargs == {"bn_eps": 1e-3, "vmz_mid": True}
    monkeypatch.setenv(weights.BASE_URL_ENV, "http://127.0.0.1:9/mirror/")
    assert weights.url_of(published.published("kinetics400", "r3d_18")) == \
        "http://127.0.0.1:9/mirror/r3d_18-b3b3357e.pth"


def test_kinetics400_loads_the_served_tensors_once_with_a_fresh_classifier(server, hub, monkeypatch):
    folder, base = server
    state = published_state()
    name = publish(folder, state, "r3d_tiny")
    register(monkeypatch, "kinetics400", "r3d_tiny", f"https://example.invalid/models/{name}")
    monkeypatch.setenv(weights.BASE_URL_ENV, base)
    cfg, t = train_cfg(pretrained="kinetics400", seed=3)
    model, init = weights.initial_model(t, ["a", "b", "c"], cfg, Path("unused"), QUIET)
    assert (hub / name).is_file() and _sha256(hub / name).startswith(name.split("-")[1][:8])
    ours = model.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in state.items() if not k.startswith("fc."))
    assert ours["fc.weight"].shape == (3, 64)
    torch.manual_seed(3)
    fresh = models.build("r3d_tiny", 3).state_dict()  # the seeded random classifier
    assert torch.equal(ours["fc.weight"], fresh["fc.weight"])
    assert init.normalize == published.KINETICS_NORMALIZE
    assert weights.input_normalization(init, {"mean": [0.1] * 3, "std": [0.2] * 3}) == published.KINETICS_NORMALIZE
    # once downloaded, the server is not needed again
    (folder / name).unlink()
    again, _ = weights.initial_model(t, ["a", "b", "c"], cfg, Path("unused"), QUIET)
    assert all(torch.equal(again.state_dict()[k], v) for k, v in ours.items())


def test_a_download_with_the_wrong_hash_is_refused_and_not_kept(server, hub, monkeypatch):
    folder, base = server
    name = publish(folder, published_state(), "r3d_tiny", wrong_hash=True)
    register(monkeypatch, "kinetics400", "r3d_tiny", f"{base}/{name}")
    cfg, t = train_cfg(pretrained="kinetics400")
    with pytest.raises(weights.WeightsDownloadError, match="refused") as e:
        weights.initial_model(t, ["a", "b"], cfg, Path("unused"))
    assert len(str(e.value).splitlines()) == 1 and name in str(e.value)
    assert not hub.exists() or list(hub.iterdir()) == []


def test_offline_is_one_line_naming_the_url_and_where_to_put_the_file(hub, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/r3d_tiny-12345678.pth"
    register(monkeypatch, "kinetics400", "r3d_tiny", url)
    cfg, t = train_cfg(pretrained="kinetics400")
    with pytest.raises(weights.WeightsDownloadError) as e:
        weights.initial_model(t, ["a", "b"], cfg, Path("unused"))
    text = str(e.value)
    assert len(text.splitlines()) == 1
    assert url in text and str(hub / "r3d_tiny-12345678.pth") in text and "by hand" in text


def test_a_registered_name_for_another_architecture_is_a_config_error():
    cfg = Config()
    cfg.teacher.model, cfg.teacher.pretrained = "r3d_tiny", "kinetics400"
    with pytest.raises(ConfigError, match="teacher.pretrained: kinetics400 weights exist for mc3_18, "
                                          "r2plus1d_18, r3d_18, not for r3d_tiny"):
        validate(cfg)
    cfg.teacher.model, cfg.student.pretrained = "r2plus1d_18", "no/such/file.pt"
    with pytest.raises(ConfigError, match="student.pretrained: no/such/file.pt: no such file"):
        validate(cfg)


def test_ig65m_architecture_matches_vmz_and_travels_with_the_model(tmp_path):
    with torch.device("meta"):
        vmz = models.build("r2plus1d_34", 359, **published.VMZ_KWARGS)
    tv = models.build("r2plus1d_tiny", 2)
    # VMZ's widths (moabitcoin's fix of pytorch/vision#1265): 288, 576, 1152 in each stage's first block
    assert [vmz.layer2[0].conv2[0][0].out_channels, vmz.layer3[0].conv2[0][0].out_channels,
            vmz.layer4[0].conv2[0][0].out_channels] == [288, 576, 1152]
    assert vmz.layer2[1].conv2[0][0].out_channels == 288
    assert tv.layer2[0].conv2[0][0].out_channels == tv.layer2[0].conv1[0][0].out_channels == 28
    assert {m.eps for m in vmz.modules() if isinstance(m, torch.nn.BatchNorm3d)} == {1e-3}
    assert {m.eps for m in tv.modules() if isinstance(m, torch.nn.BatchNorm3d)} == {1e-5}
    # meta.json's model_kwargs rebuild the same network (eps is not in the state dict)
    model = models.build("r3d_tiny", 2, bn_eps=1e-3)
    save_checkpoint({"model": model.state_dict(), "epoch": 1}, tmp_path / "model.pt")
    write_meta(tmp_path, model_name="r3d_tiny", num_classes=2, classes=["a", "b"], input="enhanced",
               data_cfg=Config().data, H=20, W=24, model_kwargs={"bn_eps": 1e-3})
    loaded, meta = load_trained(tmp_path)
    assert meta["model_kwargs"] == {"bn_eps": 1e-3}
    assert {m.eps for m in loaded.modules() if isinstance(m, torch.nn.BatchNorm3d)} == {1e-3}


# --------------------------------------------------------------------------------- class names

def _trained_folder(folder: Path, classes: list[str], seed=7) -> dict:
    torch.manual_seed(seed)
    state = models.build("r3d_tiny", len(classes)).state_dict()
    folder.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": state, "epoch": 1}, folder / "model.pt")
    (folder / "meta.json").write_text(json.dumps({"model": "r3d_tiny", "classes": classes,
                                                  "normalize": {"mean": [0.5] * 3, "std": [0.25] * 3}}))
    return state


def test_same_class_names_keep_the_classifier_in_our_order(tmp_path):
    state = _trained_folder(tmp_path / "m", ["run", "jump", "drink"])
    cfg, t = train_cfg(pretrained=str(tmp_path / "m" / "model.pt"))
    model, init = weights.initial_model(t, ["drink", "jump", "run"], cfg, tmp_path)
    ours = model.state_dict()
    assert not init.reinit_fc and init.normalize == {"mean": [0.5] * 3, "std": [0.25] * 3}
    assert torch.equal(ours["fc.weight"], state["fc.weight"][[2, 1, 0]])
    assert torch.equal(ours["fc.bias"], state["fc.bias"][[2, 1, 0]])
    assert all(torch.equal(ours[k], v) for k, v in state.items() if not k.startswith("fc."))


def test_other_class_names_reinitialise_the_classifier_even_at_the_same_count(tmp_path):
    state = _trained_folder(tmp_path / "m", ["run", "jump", "drink"])
    cfg, t = train_cfg(pretrained=str(tmp_path / "m" / "model.pt"), seed=4)
    model, init = weights.initial_model(t, ["push", "jump", "run"], cfg, tmp_path)
    torch.manual_seed(4)
    fresh = models.build("r3d_tiny", 3).state_dict()
    ours = model.state_dict()
    assert init.reinit_fc and "other class names" in model.pretrained_note
    assert torch.equal(ours["fc.weight"], fresh["fc.weight"]) and not torch.equal(ours["fc.weight"], state["fc.weight"])
    assert all(torch.equal(ours[k], v) for k, v in state.items() if not k.startswith("fc."))


# --------------------------------------------------------------------------------- the stage

def stage_config(day: Path) -> Config:
    cfg = Config()
    cfg.data.frames, cfg.data.short_side, cfg.data.crop, cfg.data.views = 4, 20, 16, 2
    cfg.enhance.workers = 0
    cfg.pretrain.root, cfg.pretrain.epochs, cfg.pretrain.batch_size = str(day), 1, 4
    cfg.teacher.model, cfg.student.model = "r3d_tiny", "r2plus1d_tiny"
    for section in (cfg.teacher, cfg.student):
        section.epochs, section.batch_size = 1, 8
    return cfg


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    return make_video_dataset(tmp_path_factory.mktemp("day"), classes=2, train=3, test=1, frames=10, seed=3)


@pytest.fixture(scope="module")
def pretrained_cache(day, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    graph = pipeline_graph(stage_config(day), cache)
    ran = execute(graph, "pretrain", "cpu", QUIET)
    return cache, ran


def test_pretrain_trains_both_architectures(pretrained_cache):
    cache, ran = pretrained_cache
    assert ran == ["pretrain"]
    for name in ("r3d_tiny", "r2plus1d_tiny"):
        model, meta = load_trained(cache / "pretrain" / name)
        assert meta["model"] == name and meta["classes"] == ["C0", "C1"] and meta["input"] == "normal-light"
    index = json.loads((cache / "pretrain" / "clips" / "index.json").read_text())
    d = Config().data  # 3 train (some carved out for validation) + 1 test videos per class
    videos = {s: len({c["video"] for c in index["clips"] if c["split"] == s}) for s in ("train", "val", "test")}
    assert videos["train"] + videos["val"] == 6 and videos["test"] == 2 and videos["val"] >= 1
    assert len(index["clips"]) == videos["train"] * d.clips_per_video + (videos["val"] + 2) * d.test_clips
    rec = json.loads((cache / "stages" / "pretrain.json").read_text())
    assert set(rec["summary"]["models"]) == {"r3d_tiny", "r2plus1d_tiny"}


def test_pretrain_is_fresh_until_its_data_or_params_change(pretrained_cache, day):
    cache, _ = pretrained_cache
    cfg = stage_config(day)
    assert pipeline_graph(cfg, cache).status("pretrain").state == "fresh"
    assert execute(pipeline_graph(cfg, cache), "pretrain", "cpu", QUIET) == []
    cfg.teacher.epochs = 9  # the teacher's own training is not pretrain's business
    assert pipeline_graph(cfg, cache).status("pretrain").state == "fresh"
    changed = stage_config(day)
    changed.pretrain.lr = 1e-3
    st_ = pipeline_graph(changed, cache).status("pretrain")
    assert st_.state == "stale" and any("pretrain.lr" in r for r in st_.reasons)
    video = day / "C1" / "C1_0.mp4"
    before = video.stat()
    os.utime(video, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    try:
        st_ = pipeline_graph(stage_config(day), cache).status("pretrain")
        assert st_.state == "stale" and any("C1_0.mp4" in r for r in st_.reasons)
    finally:
        os.utime(video, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert pipeline_graph(stage_config(day), cache).status("pretrain").state == "fresh"


def test_pretrain_is_an_upstream_only_where_a_model_starts_from_it(day):
    cfg = stage_config(day)
    assert "pretrain" in closure("teacher", cfg=cfg)
    assert "pretrain" in closure("baseline", cfg=cfg)
    assert "pretrain" in closure("evaluate", cfg=cfg)
    cfg.teacher.pretrained = ""
    assert "pretrain" not in closure("teacher", cfg=cfg)
    assert "pretrain" in closure("student", cfg=cfg)
    cfg.pretrain.root = ""  # pretraining off: "pretrain" means random, nothing upstream
    assert "pretrain" not in closure("evaluate", cfg=cfg)
    with pytest.raises(StageError, match="pretrain.root is empty"):
        pretrain_stage.run_stage(Context(pipeline_graph(cfg, Path("unused")), "pretrain", Path("unused"), "cpu", QUIET))


def test_pretrain_init_loads_the_pretrain_stage_tensors(pretrained_cache, day):
    cache, _ = pretrained_cache
    cfg = stage_config(day)
    for section in (cfg.teacher, cfg.student):
        saved = torch.load(cache / "pretrain" / section.model / "model.pt", weights_only=True)["model"]
        model, init = weights.initial_model(section, ["C0", "C1"], cfg, cache)
        assert not init.reinit_fc
        assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
        other, init = weights.initial_model(section, ["Drink", "Jump", "Run"], cfg, cache)
        assert init.reinit_fc and other.fc.weight.shape[0] == 3
        assert all(torch.equal(other.state_dict()[k], v) for k, v in saved.items() if not k.startswith("fc."))


@pytest.mark.parametrize("source", ["", "pretrain", "file"])
def test_baseline_and_student_start_from_identical_weights(pretrained_cache, day, tmp_path, monkeypatch, source):
    cache, _ = pretrained_cache
    cfg = stage_config(day)
    cfg.student.seed = 11
    if source == "file":
        _trained_folder(tmp_path / "m", ["x", "y", "z"])
        cfg.student.model, source = "r3d_tiny", str(tmp_path / "m" / "model.pt")
    cfg.student.pretrained = source
    graph = pipeline_graph(cfg, cache)
    make_clip_cache(graph.out_dir("enhance"), classes=3, T=4, H=20, W=24)
    starts = {}

    class Started(Exception):
        pass

    def capture(model, *args, desc, **kw):
        starts[desc] = {k: v.clone() for k, v in model.state_dict().items()}
        raise Started

    monkeypatch.setattr(classifiers, "train", capture)
    monkeypatch.setattr(student_stage, "load_soft_labels", lambda path, data_cfg, n, classes:
                        torch.randn(n, data_cfg.views, len(classes)).numpy())
    for name, run in (("baseline", student_stage.run_baseline), ("student", student_stage.run_student)):
        with pytest.raises(Started):
            run(Context(graph, name, cache / name, "cpu", QUIET))
    a, b = starts["baseline"], starts["student"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if source == "pretrain":  # and they really start from the pretrained backbone
        saved = torch.load(cache / "pretrain" / cfg.student.model / "model.pt", weights_only=True)["model"]
        assert all(torch.equal(a[k], v) for k, v in saved.items() if not k.startswith("fc."))


def test_a_teacher_from_published_weights_is_standardised_with_their_statistics(server, hub, monkeypatch, tmp_path):
    folder, base = server
    name = publish(folder, published_state(), "r3d_tiny")
    register(monkeypatch, "kinetics400", "r3d_tiny", f"{base}/{name}")
    cfg = Config()
    cfg.data.frames, cfg.data.short_side, cfg.data.crop, cfg.data.views = 4, 20, 16, 2
    cfg.teacher.model, cfg.teacher.pretrained, cfg.teacher.epochs = "r3d_tiny", "kinetics400", 1
    graph = pipeline_graph(cfg, tmp_path / "cache")
    make_clip_cache(graph.out_dir("enhance"), classes=3, T=4, H=20, W=24)
    seen = {}
    real_train = classifiers.train

    def spy(model, train_set, val_set, *args, **kw):
        seen["train"], seen["val"] = train_set, val_set
        return real_train(model, train_set, val_set, *args, **kw)

    monkeypatch.setattr(classifiers, "train", spy)
    out = graph.out_dir("teacher")
    out.mkdir(parents=True)
    teacher_stage.run_stage(Context(graph, "teacher", out, "cpu", QUIET))
    _, meta = load_trained(out)
    assert meta["normalize"] == published.KINETICS_NORMALIZE and meta["init"] == "kinetics400"
    for split in ("train", "val"):  # both sets standardise with the weights' statistics
        assert seen[split].stats == published.KINETICS_NORMALIZE


def test_a_relative_pretrain_root_is_relative_to_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = resolve_config(None, ["pretrain.root=footage/day"])
    assert cfg.pretrain.root == str(tmp_path / "footage" / "day")
    # by default a dataset's own day/ set: the bundled sample has one, a folder without one none
    assert resolve_config().pretrain.root == \
        str((SAMPLE / "day").resolve())
    (tmp_path / "night").mkdir()
    assert resolve_config(data=tmp_path / "night").pretrain.root == ""
    assert resolve_config(None, ["pretrain.root=none"]).pretrain.root == ""
