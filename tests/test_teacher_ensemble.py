"""teacher.ensemble = K: K teachers seeded teacher.seed + 1000 k, soft labels the mean of their logits
(tiny synthetic clip cache, CPU)."""
from __future__ import annotations

import json
import shutil
import time

import h5py
import numpy as np
import pytest
import torch
from rich.console import Console

from dlkdd.pipeline.config import Config, ConfigError, set_value, validate
from dlkdd.pipeline.engine.graph import Graph
from dlkdd.pipeline.engine.run import Context
from dlkdd.pipeline.engine.stage import section_keys
from dlkdd.pipeline.names import LOGITS_FILE, MODEL
from dlkdd.pipeline.stages import soft_labels, teacher
from dlkdd.pipeline.stages.table import STAGES, VIEW_KEYS, pipeline_graph
from dlkdd.pipeline.training.checkpoints import load_trained
from dlkdd.pipeline.training.ensemble import ENSEMBLE_FILE, load_teacher
from tests.cachefix import make_clip_cache

EPOCHS, V, K = 2, 3, 2


def tiny_config(ensemble: int = K) -> Config:
    cfg = Config()
    cfg.data.frames, cfg.data.short_side, cfg.data.crop, cfg.data.views = 4, 20, 16, V
    cfg.teacher.model, cfg.teacher.epochs, cfg.teacher.batch_size = "r3d_tiny", EPOCHS, 8
    cfg.teacher.ensemble, cfg.teacher.seed = ensemble, 3
    cfg.soft_labels.batch_size = 4  # several batches, the last one partial
    return cfg


def context(graph: Graph, name: str) -> Context:
    out = graph.out_dir(name)
    out.mkdir(parents=True, exist_ok=True)
    return Context(graph, name, out, "cpu", Console(quiet=True))


def run_and_record(graph: Graph, name: str, stage) -> dict:
    """Run a stage by hand and write its record, as the engine would."""
    started = time.time()
    summary = stage.run_stage(context(graph, name))
    graph.write_record(name, graph.inspect(name), started, summary)
    return summary


def weights(path) -> dict:
    return torch.load(path, weights_only=True)["model"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """A cache with clips, a K = 2 teacher and its soft labels, both recorded: (graph, teacher summary)."""
    root = tmp_path_factory.mktemp("cache")
    make_clip_cache(root / "clips", T=4, H=20, W=24)
    graph = pipeline_graph(tiny_config(), root)
    summary = run_and_record(graph, "teacher", teacher)
    run_and_record(graph, "soft-labels", soft_labels)
    return graph, summary


def test_members_have_their_own_seed_folder_and_weights(cache):
    graph, summary = cache
    out = graph.out_dir("teacher")
    assert out == graph.cache / "teacher"  # the folder of one teacher: member 0 lies where it always did
    assert (out / MODEL).exists() and (out / "member1" / MODEL).exists() and not (out / "member2").exists()
    assert json.loads((out / ENSEMBLE_FILE).read_text()) == {"members": ["", "member1"]}
    assert summary["ensemble"] == K and [m["seed"] for m in summary["members"]] == [3, 1003]
    assert [m["epochs_run"] for m in summary["members"]] == [EPOCHS, EPOCHS]
    w0, w1 = weights(out / MODEL), weights(out / "member1" / MODEL)
    assert w0.keys() == w1.keys() and not all(torch.equal(w0[k], w1[k]) for k in w0)
    for folder in (out, out / "member1"):  # each member resumes from its own checkpoint
        assert (folder / "checkpoint.pt").exists() and (folder / "meta.json").exists()
    model, meta = load_teacher(out)
    single, single_meta = load_trained(out)
    assert meta["ensemble"] == K and meta["params"] == 2 * single_meta["params"]
    assert meta["classes"] == single_meta["classes"] and meta["normalize"] == single_meta["normalize"]
    record = graph.record("teacher")
    assert "teacher/member1/model.pt" in record["outputs"] and "teacher/ensemble.json" in record["outputs"]


def test_soft_labels_are_the_mean_of_the_members_logits(cache):
    graph, _ = cache
    path = graph.out_dir("soft-labels") / LOGITS_FILE
    with h5py.File(path, "r") as f:
        cached, attrs = f["logits"][...], dict(f.attrs)
    assert attrs["teacher_ensemble"] == K
    clips, _, n = soft_labels.all_clips(graph.out_dir("enhance"))
    assert cached.shape == (n, V, 3) and cached.dtype == np.float32  # one teacher's file and shape
    per_member = []
    for folder in (graph.out_dir("teacher"), graph.out_dir("teacher") / "member1"):
        model, meta = load_trained(folder)
        z = np.full((n, V, 3), np.nan, dtype=np.float32)
        ids = np.array(clips.clip_ids)
        pos = 0
        for _, block in soft_labels.teacher_logits(model, clips, graph.cfg.data, 5, "cpu", 0,
                                                   stats=meta.get("normalize")):
            z[ids[pos:pos + len(block)]] = block
            pos += len(block)
        per_member.append(z)
    clips.close()
    labelled = np.isfinite(cached).all(axis=(1, 2))
    assert labelled.sum() == len(ids) and np.isnan(cached[~labelled]).all()  # test rows stay NaN
    a, b = per_member[0][labelled], per_member[1][labelled]
    assert np.abs(a - b).max() > 1e-3  # two different teachers: the mean is neither one
    np.testing.assert_allclose(cached[labelled], (a + b) / 2, atol=1e-5, rtol=0)
    assert soft_labels.verify_cache(graph, "cpu", k=8) == 8  # verify recomputes the ensemble's mean


def test_one_teacher_keeps_its_params_folder_and_fingerprint():
    cfg = tiny_config(ensemble=1)
    teacher_keys = STAGES["teacher"].keys(cfg)
    assert "teacher.ensemble" not in teacher_keys
    assert teacher_keys == [k for k in section_keys(cfg, "teacher") if k != "teacher.ensemble"] + list(VIEW_KEYS)
    assert STAGES["soft-labels"].keys(cfg) == list(VIEW_KEYS)
    assert STAGES["teacher"].folder(cfg) == "teacher" and STAGES["soft-labels"].folder(cfg) == "soft-labels"
    cfg2 = tiny_config(ensemble=2)
    assert STAGES["teacher"].param_values(cfg2)["teacher.ensemble"] == 2
    assert STAGES["soft-labels"].param_values(cfg2)["teacher.ensemble"] == 2
    assert STAGES["teacher"].folder(cfg2) == "teacher"


def test_changing_k_makes_teacher_and_soft_labels_stale(cache):
    graph, _ = cache
    names = ["teacher", "soft-labels"]
    assert {s.state for s in graph.statuses(names).values()} == {"fresh"}
    for k, shown in ((3, "2 -> 3"), (1, "2 -> <unset>")):
        states = pipeline_graph(tiny_config(ensemble=k), graph.cache).statuses(names)
        for name in names:
            assert states[name].state == "stale"
            assert f"param teacher.ensemble {shown}" in states[name].reasons, (name, states[name].reasons)
        assert "upstream teacher is stale" in states["soft-labels"].reasons


def test_back_to_one_teacher_reuses_member_0_and_drops_the_others(cache, tmp_path):
    graph = pipeline_graph(tiny_config(ensemble=1), tmp_path / "cache")
    shutil.copytree(cache[0].cache, graph.cache)
    out = graph.out_dir("teacher")
    before = (out / MODEL).read_bytes()
    summary = teacher.run_stage(context(graph, "teacher"))
    assert summary["epochs_run"] == 0 and "ensemble" not in summary  # member 0 is K = 1's teacher: not retrained
    assert (out / MODEL).read_bytes() == before
    assert not (out / "member1").exists() and not (out / ENSEMBLE_FILE).exists()
    model, meta = load_teacher(out)
    assert "ensemble" not in meta
    with pytest.raises(soft_labels.StageError, match="holds a teacher of 1 member"):
        soft_labels.run_stage(context(pipeline_graph(tiny_config(ensemble=2), graph.cache), "soft-labels"))


@pytest.mark.parametrize("value", [0, -1])
def test_ensemble_below_one_is_a_one_line_error(value):
    cfg = tiny_config()
    set_value(cfg, "teacher.ensemble", value)
    with pytest.raises(ConfigError, match=r"^teacher\.ensemble: must be an integer >= 1") as err:
        validate(cfg)
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="teacher.ensemble"):
        set_value(Config(), "teacher.ensemble", "two")


def test_a_member_finished_before_an_interruption_is_not_retrained(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    make_clip_cache(root / "clips", T=4, H=20, W=24)
    graph = pipeline_graph(tiny_config(), root)
    # train:epoch is reached after each epoch's checkpoint: the 3rd is member 1's first epoch
    monkeypatch.setenv("DLKDD_FAILPOINT", "train:epoch@3=SIGINT")
    with pytest.raises(KeyboardInterrupt):
        teacher.run_stage(context(graph, "teacher"))
    monkeypatch.delenv("DLKDD_FAILPOINT")
    out = graph.out_dir("teacher")
    assert not (out / ENSEMBLE_FILE).exists() and not (out / "member1" / MODEL).exists()
    first = (out / MODEL).read_bytes()
    summary = teacher.run_stage(context(graph, "teacher"))
    assert [(m["epochs_run"], m["resumed_from"]) for m in summary["members"]] == [(0, EPOCHS), (EPOCHS - 1, 1)]
    assert (out / MODEL).read_bytes() == first and (out / "member1" / MODEL).exists()
    assert (out / ENSEMBLE_FILE).exists()


def test_evaluate_scores_the_ensemble_not_member_0(cache):
    from dlkdd.pipeline.stages import evaluate
    from dlkdd.pipeline.training.ensemble import Ensemble
    graph, _ = cache
    folders = {s: graph.out_dir(s) for s in ("teacher", "baseline", "student")}
    classes = load_trained(graph.out_dir("teacher"))[1]["classes"]
    row, stage, *_, model, meta = next(evaluate._models_in_turn(folders, classes, "cpu"))
    assert (row, stage) == ("teacher", "teacher")
    assert isinstance(model, Ensemble) and len(model.members) == K and meta["ensemble"] == K
