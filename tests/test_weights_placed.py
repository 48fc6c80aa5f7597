"""Registered weights placed by hand are hash-checked before loading; a run that cannot have its
registered weights stops before its first stage."""
from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
from rich.console import Console

from dlkdd.pipeline.config import set_value
from dlkdd.pipeline.stages.run import resolve_config, run_target
from dlkdd.pipeline.training import weights
from tests.test_pretrain import hub, publish, published_state, register, train_cfg  # noqa: F401 (fixture)
from tests.videofix import make_video_dataset

QUIET = Console(quiet=True)


def dead_url(name: str) -> str:
    """A URL on a port nobody listens on: any download fails at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def test_a_truncated_file_placed_by_hand_is_refused_naming_file_and_hash(hub, monkeypatch, tmp_path):  # noqa: F811
    served = tmp_path / "made"
    served.mkdir()
    name = publish(served, published_state(), "r3d_tiny")  # r3d_tiny-<sha256 prefix>.pth
    url = dead_url(name)
    register(monkeypatch, "kinetics400", "r3d_tiny", url)
    hub.mkdir(parents=True)
    placed = hub / name
    placed.write_bytes((served / name).read_bytes()[:1000])  # a cut-off copy, no network to fetch another
    loads = []
    monkeypatch.setattr(weights, "_read", lambda path: loads.append(path))
    cfg, t = train_cfg(pretrained="kinetics400")
    with pytest.raises(weights.WeightsDownloadError) as e:
        weights.initial_model(t, ["a", "b"], cfg, Path("unused"))
    text = str(e.value)
    prefix = name.rsplit("-", 1)[1].split(".")[0]
    assert len(text.splitlines()) == 1 and str(placed) in text and prefix in text and url in text
    assert loads == []  # never loaded
    placed.write_bytes((served / name).read_bytes())  # the whole file: checked, then loaded
    monkeypatch.undo()
    register(monkeypatch, "kinetics400", "r3d_tiny", url)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(hub.parent))
    model, init = weights.initial_model(t, ["a", "b"], cfg, Path("unused"))
    assert init.state is not None and init.note.startswith("kinetics400 weights")


def test_a_run_without_its_registered_weights_stops_before_any_stage(hub, monkeypatch, tmp_path):  # noqa: F811
    register(monkeypatch, "kinetics400", "r3d_tiny", dead_url("r3d_tiny-12345678.pth"))
    data = tmp_path / "data"
    make_video_dataset(data, classes=2, train=2, test=1, frames=12, h=24, w=32)
    overrides = [f"{k}={v}" for k, v in {"pretrain.root": "none", "enhancer.kind": "gamma",
                                         "teacher.model": "r3d_tiny", "data.frames": 4, "data.crop": 16,
                                         "data.short_side": 20}.items()]
    cfg = resolve_config(None, overrides, data)
    set_value(cfg, "teacher.pretrained", "kinetics400")  # r3d_tiny is registered for this test only
    cache = tmp_path / "cache"
    with pytest.raises(weights.WeightsDownloadError, match=r"cannot download .*r3d_tiny-12345678\.pth.*place it at"):
        run_target(cfg, cache, "teacher", "cpu", QUIET)
    written = [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    assert not [p for p in written if p.parts[-2] in ("enhancer", "clips")], written  # no stage ran


def test_released_weights_missing_in_ci_fail_instead_of_skipping(monkeypatch, tmp_path):
    from tests import weightsfix
    missing = tmp_path / "no-such-weights.pth"
    monkeypatch.setattr(weightsfix, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception):
        weightsfix.require(missing)
    monkeypatch.setattr(weightsfix, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match="CI has ../shared beside the clone"):
        weightsfix.require(missing)
