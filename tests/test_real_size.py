"""Real size, end to end: configs/arid.toml on ARID-shaped data (320x240 MPEG-4 .avi at 30 fps, ARID's
lists and naming), the whole pipeline on the CPU, at the preset's 16 frames, short side 128 and 112 crops.

Cut so that it runs in CI: 3 of ARID's classes, 18 short clips, one epoch, a 10-step enhancer fit, 2 test
clips, and the sample's small models from random weights (the registered Kinetics / IG-65M weights are a
download, and R(2+1)D-34 a GPU's work). It checks what was written and that the report's rows exist, not
accuracy.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner

from dlkdd.cli import cli
from dlkdd.pipeline.datasets.sample import make_arid_like

pytest.importorskip("av")
pytestmark = pytest.mark.slow

PRESET = Path(__file__).resolve().parents[1] / "configs" / "arid.toml"
CUT = ["--set", "teacher.pretrained=", "--set", "student.pretrained=",  # no download in a test
       "--set", "teacher.model=r2plus1d_small", "--set", "student.model=r3d_tiny",  # CPU-sized networks
       "--set", "teacher.epochs=1", "--set", "student.epochs=1", "--set", "teacher.batch_size=4",
       "--set", "student.batch_size=4", "--set", "enhancer.steps=10", "--set", "data.test_clips=2"]


@pytest.fixture(scope="module")
def arid_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("arid") / "ARID"
    make_arid_like(root, classes=3, recordings_per_class=3, clips_per_recording=2, frames=(20, 28))
    cache = root.parent / "cache"
    result = CliRunner().invoke(cli, ["--config", str(PRESET), "--data", str(root), "--cache", str(cache),
                                      "--device", "cpu", *CUT, "run"], catch_exceptions=False)
    return result, cache


def test_the_preset_runs_the_whole_pipeline(arid_run):
    result, cache = arid_run
    assert result.exit_code == 0, result.output
    records = {p.stem.split("@")[0]: json.loads(p.read_text()) for p in (cache / "stages").glob("*.json")}
    assert set(records) == {"enhancer", "enhance", "teacher", "soft-labels", "baseline", "student", "evaluate"}
    assert all(r["params"] and r["outputs"] for r in records.values())
    assert records["enhance"]["summary"]["failed"] == 0  # decord read every MPEG-4 .avi
    assert not (cache / "pretrain").exists()  # the preset has no pretraining stage


def test_clips_are_cut_at_the_presets_size(arid_run):
    _, cache = arid_run
    index = json.loads((cache / "clips" / "index.json").read_text())
    splits = {c["split"] for c in index["clips"]}
    assert splits == {"train", "val", "test"}
    with h5py.File(next((cache / "clips").glob("shard-*.h5")), "r") as f:
        # 320x240 at short side 128: 128 x 171 (rounded), 16 frames a clip, original and enhanced
        assert f["original"].shape[1:] == f["enhanced"].shape[1:] == (16, 128, 171, 3)


def test_soft_labels_cover_every_view_of_train_and_validation_clips(arid_run):
    _, cache = arid_run
    index = json.loads((cache / "clips" / "index.json").read_text())
    with h5py.File(cache / "soft-labels" / "logits.h5", "r") as f:
        logits = f["logits"]
        assert logits.shape[1:] == (8, 3)  # the preset's 8 views x ARID's first 3 classes
        assert logits.shape[0] >= sum(c["split"] in ("train", "val") for c in index["clips"])


def test_the_report_has_its_four_rows(arid_run):
    result, cache = arid_run
    results = json.loads((cache / "report" / "results.json").read_text())
    assert results["classes"] == ["Drink", "Jump", "Pick"] and results["videos"] == 6
    for row in ("teacher", "teacher_on_original", "baseline", "student"):
        assert {"top1", "top5", "top1_multi", "top5_multi"} <= set(results[row])
    table = (cache / "report" / "results.md").read_text()
    for model, method in (("r2plus1d_small", "teacher"), ("r3d_tiny", "baseline (CE)"), ("r3d_tiny", "DL-KDD")):
        assert any(line.startswith(f"| {model} | {method}") for line in table.splitlines()), table
    assert "results" in result.output
