"""`data.normalize` = stream | source | none: which statistics teacher and student are standardised with,
the old boolean switch, the refused file without statistics, the fingerprints, and evaluate's two
teacher-on-original rows."""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from rich.console import Console

from dlkdd import models
from dlkdd.errors import StageError
from dlkdd.pipeline.config import ConfigError, build_config, set_value, validate
from dlkdd.pipeline.datasets.clips import split_statistics
from dlkdd.pipeline.datasets.shards import ClipDataset
from dlkdd.pipeline.engine.run import Context
from dlkdd.pipeline.inference.predict import export_meta
from dlkdd.pipeline.published import KINETICS_NORMALIZE
from dlkdd.pipeline.stages import evaluate as ev
from dlkdd.pipeline.stages.table import STAGES, pipeline_graph
from dlkdd.pipeline.training import weights
from dlkdd.pipeline.training.checkpoints import load_trained, save_checkpoint
from dlkdd.pipeline.training.classifiers import model_statistics, train_classifier, view_datasets
from dlkdd.pipeline.training.distill import make_loss_fn
from tests.cachefix import make_clip_cache, mark_all_fresh
from tests.relfix import assert_one_line_error, invoke
from tests.test_evaluate_predict import fake_trained, small_config

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
MODES = ("stream", "source", "none")
DAY = {"mean": [0.31, 0.32, 0.33], "std": [0.21, 0.22, 0.23]}  # a pretrain folder's (the day footage's)
FILE_STATS = {"mean": [0.5] * 3, "std": [0.25] * 3}


# --------------------------------------------------------------------------------- the key

def test_the_old_booleans_read_as_modes_from_a_file_and_from_set(tmp_path):
    for old, mode in ((True, "stream"), (False, "none")):
        path = tmp_path / f"{old}.toml"
        path.write_text(f"[data]\nnormalize = {str(old).lower()}\n")
        assert build_config(path).data.normalize == mode
        assert build_config(overrides=[f"data.normalize={str(old).lower()}"]).data.normalize == mode
    assert build_config().data.normalize == "stream"  # the default, today's behaviour
    for mode in MODES:
        path = tmp_path / f"{mode}.toml"
        path.write_text(f'[data]\nnormalize = "{mode}"\n')
        assert build_config(path).data.normalize == mode


@pytest.mark.parametrize("value", ['"maybe"', "1", '"yes"', '""'])
def test_any_other_value_is_a_one_line_error_naming_the_key_and_the_modes(tmp_path, value):
    path = tmp_path / "bad.toml"
    path.write_text(f"[data]\nnormalize = {value}\n")
    with pytest.raises(ConfigError) as e:
        build_config(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "data.normalize" in msg
    assert all(mode in msg for mode in MODES)
    cfg = build_config()
    cfg.data.normalize = "per-stream"  # set in code, past the parser: validate refuses it too
    with pytest.raises(ConfigError, match="data.normalize.*stream, source, none"):
        validate(cfg)


def _weights_file(folder: Path, stats: dict | None, classes=("C0", "C1", "C2")) -> Path:
    """An r3d_tiny state dict file; with `stats`, a dlkdd meta.json carrying them beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(7)
    save_checkpoint({"model": models.build("r3d_tiny", len(classes)).state_dict(), "epoch": 1}, folder / "model.pt")
    if stats is not None:
        (folder / "meta.json").write_text(json.dumps({"model": "r3d_tiny", "classes": list(classes),
                                                      "normalize": stats}))
    return folder / "model.pt"


@pytest.mark.parametrize("section", ["teacher", "student"])
def test_source_mode_refuses_a_file_without_statistics_before_anything_runs(tmp_path, section):
    bare = _weights_file(tmp_path / "bare", None)
    overrides = [f"{section}.model=r3d_tiny", f"{section}.pretrained={bare}"]
    for mode in ("stream", "none"):  # they need no statistics of the source
        assert build_config(overrides=[*overrides, f"data.normalize={mode}"]).data.normalize == mode
    with pytest.raises(ConfigError) as e:
        build_config(overrides=[*overrides, "data.normalize=source"])
    msg = str(e.value)
    assert "\n" not in msg and str(bare) in msg and f"{section}.pretrained" in msg
    assert 'data.normalize = "stream"' in msg and '"none"' in msg
    # with a meta.json carrying statistics, the same file is accepted
    good = _weights_file(tmp_path / "good", FILE_STATS)
    build_config(overrides=[f"{section}.model=r3d_tiny", f"{section}.pretrained={good}", "data.normalize=source"])
    # through the CLI: one line, non-zero exit, nothing written in the cache
    cache = tmp_path / "cache"
    result = invoke(["--data", SAMPLE, "--cache", cache, "--device", "cpu", "--set", "data.normalize=source",
                     *[a for o in overrides for a in ("--set", o)], "run"])
    assert_one_line_error(result, str(bare), "data.normalize")
    assert not cache.exists() or not any(cache.rglob("*"))


# --------------------------------------------------------------------------------- the statistics

def _ctx(tmp_path, mode: str, stage: str = "teacher"):
    cfg = small_config()
    cfg.data.normalize = mode
    cfg.teacher.model = cfg.student.model = "r3d_tiny"
    cfg.teacher.epochs = cfg.student.epochs = 1
    cfg.teacher.batch_size = cfg.student.batch_size = 6
    cfg.pretrain.root = str(SAMPLE / "day")  # pretraining on: "pretrain" names the pretrain folder
    graph = pipeline_graph(cfg, tmp_path)
    if not (graph.out_dir("enhance") / "index.json").exists():
        make_clip_cache(graph.out_dir("enhance"), classes=3, train_per_class=3, test_per_class=1, T=4, H=20, W=24)
    out = graph.out_dir(stage)
    out.mkdir(parents=True, exist_ok=True)
    return Context(graph, stage, out, "cpu", Console(quiet=True))


def _init(ctx, section: str, source: str, tmp_path: Path):
    """The resolved starting point of `section` for a source kind (registered weights without a download)."""
    train = getattr(ctx.cfg, section)
    if source == "kinetics400":
        return weights.Init(source, state={}, reinit_fc=True, normalize=dict(KINETICS_NORMALIZE))
    if source == "pretrain":
        _weights_file(weights.pretrain_dir(ctx.cache, train.model), DAY)
    train.pretrained = str(_weights_file(tmp_path / "file", FILE_STATS)) if source == "file" else source
    return weights.resolve(train, ["C0", "C1", "C2"], ctx.cfg, ctx.cache)


def _index_stats(ctx) -> dict:
    return json.loads((ctx.dir_of("enhance") / "index.json").read_text())["normalize"]


EXPECTED = {  # (mode, source) -> (teacher's, student's): names of the statistics each is standardised with
    ("stream", ""): ("enhanced", "original"), ("stream", "pretrain"): ("enhanced", "original"),
    ("stream", "kinetics400"): ("kinetics", "kinetics"), ("stream", "file"): ("file", "file"),
    ("source", ""): ("original", "original"), ("source", "pretrain"): ("day", "day"),
    ("source", "kinetics400"): ("kinetics", "kinetics"), ("source", "file"): ("file", "file"),
    **{("none", s): (None, None) for s in ("", "pretrain", "kinetics400", "file")},
}


@pytest.mark.parametrize("mode, source", list(EXPECTED))
def test_each_mode_standardises_teacher_and_student_with_its_statistics(tmp_path, mode, source):
    ctx = _ctx(tmp_path, mode)
    index = _index_stats(ctx)
    named = {"enhanced": index["enhanced"], "original": index["original"], "kinetics": KINETICS_NORMALIZE,
             "day": DAY, "file": FILE_STATS, None: None}
    got = []
    for section, which in (("teacher", "enhanced"), ("student", "original")):
        own = view_datasets(ctx, which, 0)[0].stats  # the stream's own train statistics (None under none)
        assert own == (None if mode == "none" else index[which])
        got.append(model_statistics(ctx, _init(ctx, section, source, tmp_path), own))
    assert got == [named[n] for n in EXPECTED[mode, source]]
    if mode == "source":
        assert got[0] == got[1]  # one set for both streams
    if (mode, source) in (("stream", ""), ("stream", "pretrain")):
        assert got[0] != got[1]  # each stream its own


def test_a_pretrain_folder_without_statistics_stops_source_mode_before_training(tmp_path):
    ctx = _ctx(tmp_path, "source")
    _weights_file(weights.pretrain_dir(ctx.cache, "r3d_tiny"), None)
    (weights.pretrain_dir(ctx.cache, "r3d_tiny") / "meta.json").write_text(json.dumps({"model": "r3d_tiny"}))
    ctx.cfg.teacher.pretrained = "pretrain"
    with pytest.raises(StageError) as e:
        train_classifier(ctx, ctx.cfg.teacher, "enhanced", "teacher")
    assert "\n" not in str(e.value) and 'data.normalize = "stream"' in str(e.value)
    assert not any(ctx.out.iterdir())  # nothing written


def test_split_statistics_by_mode(tmp_path):
    ctx = _ctx(tmp_path, "stream")
    index_path, index = ctx.dir_of("enhance") / "index.json", _index_stats(ctx)
    for mode in MODES:  # what the pretrain stage standardises the day footage with: its own, or none
        ctx.cfg.data.normalize = mode
        assert split_statistics(index_path, "original", ctx.cfg.data) == (None if mode == "none" else index["original"])
    ctx.cfg.data.normalize = True  # a config object of before the modes: the old switch's meaning
    assert split_statistics(index_path, "enhanced", ctx.cfg.data) == index["enhanced"]


@pytest.mark.parametrize("mode", ["source", "none"])
def test_trained_models_carry_the_statistics_in_meta_json(tmp_path, mode):
    """Teacher (enhanced clips) and baseline (original clips), from random weights: source gives both the
    original stream's statistics, none gives none and meta.json carries no "normalize"."""
    metas = {}
    for stage, which, section in (("teacher", "enhanced", "teacher"), ("baseline", "original", "student")):
        ctx = _ctx(tmp_path, mode, stage)
        getattr(ctx.cfg, section).pretrained = ""
        train_classifier(ctx, getattr(ctx.cfg, section), which, stage, loss_fn=make_loss_fn(0.0, 1.0))
        metas[stage] = load_trained(ctx.out)[1]
    index = _index_stats(ctx)
    if mode == "source":
        assert metas["teacher"]["normalize"] == metas["baseline"]["normalize"] == index["original"]
    else:
        assert "normalize" not in metas["teacher"] and "normalize" not in metas["baseline"]
        spec = export_meta(metas["baseline"], 4)  # what predict and the exports apply: pixel / 255
        assert spec["normalize"] is None and spec["input"]["normalization"] == "none (pixel / 255)"


# --------------------------------------------------------------------------------- fingerprints

def _config(mode: str, source: str, tmp_path: Path):
    cfg = build_config(overrides=[f"data.normalize={mode}"])
    set_value(cfg, "pretrain.root", str(SAMPLE / "day"))
    for section in ("teacher", "student"):
        if source == "kinetics400":
            set_value(cfg, f"{section}.model", "r3d_18")
        set_value(cfg, f"{section}.pretrained", source)
    return cfg


STALE = {  # source -> {stage: the pairs of modes between which its own fingerprint changes}
    "": {"pretrain": "none", "teacher": "all", "soft-labels": "all", "baseline": "none", "student": "none"},
    "pretrain": {"pretrain": "none", "teacher": "all", "soft-labels": "all", "baseline": "all", "student": "all"},
    "kinetics400": {"pretrain": "none", "teacher": "none", "soft-labels": "none", "baseline": "none",
                    "student": "none"},
}


@pytest.mark.parametrize("source", list(STALE))
@pytest.mark.parametrize("before, after", list(itertools.permutations(MODES, 2)))
def test_a_change_of_mode_makes_stale_the_stages_whose_statistics_it_changes(tmp_path, source, before, after):
    """"none": stale only across none (stream <-> source keeps it); "all": every change."""
    cache = tmp_path / "cache"
    first, then = _config(before, source, tmp_path), _config(after, source, tmp_path)
    mark_all_fresh(pipeline_graph(first, cache))
    states = pipeline_graph(then, cache).statuses()
    for stage, rule in STALE[source].items():
        if stage == "student":  # a variant of other params has its own folder (and record)
            own = STAGES["student"].folder(first) != STAGES["student"].folder(then)
        else:
            own = any(r.startswith("param data.normalize") for r in states[stage].reasons)
        assert own == (rule == "all" or "none" in (before, after)), (stage, states[stage].reasons)
    assert any(r.startswith("param data.normalize") for r in states["evaluate"].reasons)  # its restat row


def test_stream_and_source_share_the_registered_teacher_but_not_the_pretrained_one(tmp_path):
    for source, same in (("kinetics400", True), ("pretrain", False)):
        a, b = _config("stream", source, tmp_path), _config("source", source, tmp_path)
        for stage in ("teacher", "baseline", "student"):
            assert (STAGES[stage].param_values(a) == STAGES[stage].param_values(b)) is same, (source, stage)


# --------------------------------------------------------------------------------- evaluate

def _evaluated(tmp_path, mode: str, teacher_stats, student_stats):
    cfg = small_config()
    cfg.data.normalize = mode
    graph = pipeline_graph(cfg, tmp_path)
    index = make_clip_cache(graph.out_dir("enhance"), classes=3, T=4, H=20, W=24, test_clips=2)
    classes = index["classes"]
    teacher = fake_trained(graph.out_dir("teacher"), "r3d_tiny", classes, cfg.data, 20, 24, "enhanced", seed=1,
                           extra={"normalize": teacher_stats} if teacher_stats else None)
    for name, seed, extra in (("baseline", 2, {"alpha": 0.0, "temperature": None, "variant": "baseline"}),
                              ("student", 3, {"alpha": 0.5, "temperature": 4.0, "variant": "s"})):
        fake_trained(graph.out_dir(name), "r3d_tiny", classes, cfg.data, 20, 24, "original", seed=seed,
                     extra={**extra, **({"normalize": student_stats} if student_stats else {})})
    out = graph.out_dir("evaluate")
    out.mkdir(parents=True)
    summary = ev.run_stage(Context(graph, "evaluate", out, "cpu", Console(quiet=True)))
    return cfg, graph, teacher, index, summary, json.loads((out / "results.json").read_text()), \
        (out / "results.md").read_text()


def _table(md: str) -> list[str]:
    return [line for line in md.split("\n## ", 1)[0].splitlines() if line.startswith("|")]


def test_stream_mode_scores_the_teacher_on_original_clips_with_both_statistics(tmp_path):
    index = make_clip_cache(tmp_path / "probe", classes=3, T=4, H=20, W=24, test_clips=2)["normalize"]
    cfg, graph, teacher, _, summary, r, md = _evaluated(tmp_path / "c", "stream", index["enhanced"], index["original"])
    mixed, restat = r["teacher_on_original"], r[ev.RESTAT]
    assert mixed["inference_statistics"] == "teacher's" and restat["inference_statistics"] == "original stream's"
    assert "same_as" not in restat and restat["inference_input"] == "original" and restat["model"] == "r3d_tiny"
    index_path = graph.out_dir("enhance") / "index.json"
    split = ev.test_split(index_path)
    clips = ClipDataset.from_index(index_path, "test", "original")
    try:
        for row, stats in (("teacher_on_original", index["enhanced"]), (ev.RESTAT, index["original"])):
            want = ev.evaluate_model(teacher, clips, split, 16, cfg.evaluate.crops, 8, "cpu", stats,
                                     cfg.evaluate.crop_scale)
            assert {k: r[row][k] for k in ev.ACCURACIES} == {k: want[k] for k in ev.ACCURACIES}, row
            assert r[row]["confusion"] == want["confusion"]
    finally:
        clips.close()
    assert summary[ev.RESTAT]["top1"] == restat["top1"]
    table = _table(md)
    assert len(table) == 2 + 5
    assert "| r3d_tiny | teacher | enhanced | original (teacher's statistics) |" in md
    assert "| r3d_tiny | teacher | enhanced | original (original stream's statistics) |" in md
    assert "domain gap plus the mismatch" in md and "the domain gap alone" in md
    assert f"| Class | Videos | teacher | teacher_on_original | {ev.RESTAT} | baseline | student |" in md


@pytest.mark.parametrize("mode", ["source", "none"])
def test_source_and_none_give_both_teacher_on_original_rows_one_set_of_statistics(tmp_path, mode):
    stats = dict(KINETICS_NORMALIZE) if mode == "source" else None
    _, _, _, _, summary, r, md = _evaluated(tmp_path, mode, stats, stats)
    restat = r[ev.RESTAT]
    assert restat["same_as"] == "teacher_on_original"
    assert {k: restat[k] for k in ev.ACCURACIES} == {k: r["teacher_on_original"][k] for k in ev.ACCURACIES}
    assert summary[ev.RESTAT] == summary["teacher_on_original"]
    table = _table(md)
    assert len(table) == 2 + 4  # one row for both
    assert "| r3d_tiny | teacher | enhanced | original |" in md and "statistics) |" not in md
    assert "one set for both streams" in md and "the domain gap alone" in md
