"""`dlkdd study`: the JSON's exact shape, its statistics, and that a new seed trains only itself."""
from __future__ import annotations

import json
import time

import h5py
import numpy as np
import pytest
from rich.console import Console

from dlkdd.pipeline.config import Config
from dlkdd.pipeline.stages.run import resolve_config
from dlkdd.pipeline.stages.table import STAGES, pipeline_graph
from dlkdd.pipeline.study import runner as study
from dlkdd.pipeline.study.arms import ARMS, Arm, ablation_arms, seed_config, stages_for
from dlkdd.pipeline.study.report import ablation_markdown, report_names, summarize_arms
from dlkdd.pipeline.study.stats import paired_bootstrap, t_interval
from tests.cachefix import make_clip_cache


def test_parse_seeds():
    assert study.parse_seeds("0,1,2,3,4") == study.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert study.parse_seeds("3, 1,1") == [1, 3]
    for bad in ("", "a", "1-0", "-1", "0,,x"):
        with pytest.raises(study.StudyError, match="--seeds"):
            study.parse_seeds(bad)


def test_t_interval_and_paired_bootstrap():
    mean, (lo, hi) = t_interval([1.0, 3.0, 2.0, 4.0, 5.0])
    assert mean == 3.0 and hi - mean == pytest.approx(mean - lo)
    assert hi - mean == pytest.approx(2.776 * np.std([1, 3, 2, 4, 5], ddof=1) / np.sqrt(5))  # t(0.975, 4)
    assert t_interval([2.0])[1] == [None, None]
    rng = np.random.default_rng(0)
    a = rng.integers(0, 2, size=(3, 200))
    boot = paired_bootstrap(a, a)
    assert boot["mean"] == 0 and boot["ci95"] == [0.0, 0.0]
    better = np.ones_like(a)
    boot = paired_bootstrap(a, better)
    assert boot["ci95"][0] > 0 and boot["p_le_0"] == 0.0


def _tiny_config() -> Config:
    cfg = Config()
    cfg.enhancer.kind = "none"
    cfg.data.frames, cfg.data.short_side, cfg.data.crop, cfg.data.views = 4, 20, 16, 2
    for section in (cfg.teacher, cfg.student):
        section.model, section.epochs, section.batch_size = "r3d_tiny", 1, 8
    return cfg


def _cache(root, cfg):
    """A synthetic clip cache whose enhancer and enhance stages are recorded as fresh."""
    make_clip_cache(root / "clips", T=4, H=20, W=24)
    graph = pipeline_graph(cfg, root)
    for name in ("enhancer", "enhance"):
        graph.out_dir(name).mkdir(parents=True, exist_ok=True)
        graph.write_record(name, graph.inspect(name), time.time(), {})
    return root


@pytest.mark.slow
def test_study_json_shape_and_a_new_seed_trains_only_itself(tmp_path, monkeypatch):
    cfg = _tiny_config()
    cache = _cache(tmp_path, cfg)
    ran: list[tuple[int, str]] = []
    execute = study.execute

    def recording(graph, target, device, console, **kw):
        names = execute(graph, target, device, console, **kw)
        ran.extend((graph.cfg.student.seed, n) for n in names)
        return names
    monkeypatch.setattr(study, "execute", recording)
    con = Console(quiet=True)

    result = study.run_study(cfg, cache, [0, 1], "cpu", con)
    assert sorted(ran) == sorted([(0, "teacher"), (0, "soft-labels"), (0, "baseline"), (0, "student"),
                                  (1, "baseline"), (1, "student")])  # the teacher is shared
    on_disk = json.loads((cache / "report" / "study.json").read_text())
    assert on_disk == json.loads(json.dumps(result))
    assert set(on_disk) == {"seeds", "rows", "difference", "scope"} and on_disk["seeds"] == [0, 1]
    assert on_disk["scope"] == "student"
    assert [set(r) for r in on_disk["rows"]] == [{"seed", "teacher", "baseline", "student"}] * 2
    assert [r["seed"] for r in on_disk["rows"]] == [0, 1]
    assert set(on_disk["difference"]) == {"mean", "ci95"} and len(on_disk["difference"]["ci95"]) == 2
    diffs = [r["student"] - r["baseline"] for r in on_disk["rows"]]
    assert on_disk["difference"]["mean"] == pytest.approx(np.mean(diffs), abs=1e-3)
    assert all(0 <= r[m] <= 100 for r in on_disk["rows"] for m in ("teacher", "baseline", "student"))
    md = (cache / "report" / "study.md").read_text()
    assert "Paired bootstrap over the 6 test videos" in md and "Train-minus-validation gap" in md
    assert (cache / "report" / "study.png").stat().st_size > 0
    assert len(list((cache / "baseline").iterdir())) == 2  # one folder per seed

    ran.clear()
    study.run_study(cfg, cache, [0, 1], "cpu", con)
    assert ran == []  # fresh: nothing retrains
    study.run_study(cfg, cache, [0, 1, 2], "cpu", con)
    assert sorted(ran) == [(2, "baseline"), (2, "student")]  # a new seed trains only that seed
    assert json.loads((cache / "report" / "study.json").read_text())["seeds"] == [0, 1, 2]

    # --split val: the same models, scored on the validation videos, into report/study-val.*
    ran.clear()
    test_report = (cache / "report" / "study.json").read_bytes()
    val = study.run_study(cfg, cache, [0, 1, 2], "cpu", con, split="val")
    assert ran == []  # scoring on another split retrains nothing
    assert (cache / "report" / "study.json").read_bytes() == test_report  # the test report is untouched
    assert json.loads((cache / "report" / "study-val.json").read_text()) == json.loads(json.dumps(val))
    md = (cache / "report" / "study-val.md").read_text()
    assert "validation top-1" in md and "Paired bootstrap over the 6 validation videos" in md
    assert (cache / "report" / "study-val.png").stat().st_size > 0
    scored = json.loads(next((cache / "study-val" / "dlkdd").glob("seed0-*.json")).read_text())["result"]
    assert scored["videos"] and all("_val_" in v for v in scored["videos"])


def test_a_validation_study_needs_a_validation_split(tmp_path):
    cfg = _tiny_config()
    cfg.data.val_fraction = 0.0
    with pytest.raises(study.StudyError, match="--split val: this config has no validation split"):
        study.run_study(cfg, tmp_path, [0], "cpu", Console(quiet=True), split="val")
    with pytest.raises(study.StudyError, match="--split 'train'"):
        study.run_study(_tiny_config(), tmp_path, [0], "cpu", Console(quiet=True), split="train")
    assert report_names("val") == ("study-val.json", "study-val.md", "study-val.png", "ablation-val.json")
    assert report_names("test") == ("study.json", "study.md", "study.png", "ablation.json")
    assert report_names("test", "chain")[0] == "study-chain.json"
    assert report_names("val", "chain")[3] == "ablation-chain-val.json"


def test_ablation_arms_follow_the_config_and_move_only_what_they_change():
    cfg = _tiny_config()
    cfg.teacher.model = "r2plus1d_tiny"
    names = [a.name for a in ablation_arms(cfg)]
    # pretraining is off (no pretrain.root): no from-scratch row; enhancer "none" is not gamma
    assert names == ["dlkdd", "teacher-original", "teacher-gamma", "teacher-small"]
    cfg.pretrain.root = "/footage/day"
    assert ablation_arms(cfg)[1].name == "from-scratch"
    cfg.pretrain.root = ""
    arms = {a.name: a for a in ablation_arms(cfg)}
    moved = {}
    for name, arm in arms.items():
        stages = stages_for(cfg, arm, 0)
        arm_cfg = seed_config(cfg, arm, 0)
        moved[name] = {s for s in stages if stages[s].folder(arm_cfg).startswith(f"ablation/{name}/")}
    assert moved["dlkdd"] == set()
    assert moved["teacher-original"] == {"teacher", "soft-labels", "student", "evaluate"}  # clips, baseline shared
    assert moved["teacher-small"] >= {"teacher", "soft-labels", "student"} and "enhance" not in moved["teacher-small"]
    assert {"enhancer", "enhance", "teacher", "baseline", "student"} <= moved["teacher-gamma"]
    # every output folder has its own record: (arm, stage) pairs that share a folder share a record
    folders, records = set(), set()
    for a in arms.values():
        stages, c = stages_for(cfg, a, 0), seed_config(cfg, a, 0)
        for s in ("teacher", "student", "baseline"):
            folders.add(stages[s].folder(c))
            records.add(stages[s].record_name(c))
    assert len(records) == len(folders)


def test_ablation_summary_pairs_each_arm_with_its_baseline_and_the_dlkdd_student():
    results = []
    for seed, (b, d, o) in enumerate([(50, 60, 55), (40, 52, 47), (45, 57, 50)]):
        results.append({"arm": "dlkdd", "seed": seed, "top1": {"teacher": 70, "baseline": b, "student": d}})
        results.append({"arm": "teacher-original", "seed": seed, "top1": {"teacher": 65, "baseline": b, "student": o}})
    ab = summarize_arms(results, ["dlkdd", "teacher-original"])
    assert ab["seeds"] == [0, 1, 2] and [r["arm"] for r in ab["arms"]] == ["dlkdd", "teacher-original"]
    first, second = ab["arms"]
    assert first["student_vs_baseline"]["mean"] == pytest.approx(np.mean([10, 12, 12]), abs=1e-3)
    assert second["student_vs_dlkdd_student"]["mean"] == pytest.approx(np.mean([-5, -5, -7]), abs=1e-3)
    assert second["student_vs_dlkdd_student"]["ci95"][1] < 0
    md = ablation_markdown(ab, (Arm("dlkdd"), Arm("teacher-original", ("teacher.input=original",))))
    assert "teacher on original (dark) clips" in md and "`teacher.input=original`" in md


@pytest.mark.slow
def test_study_with_an_ablation_arm_trains_its_own_teacher_and_student_only(tmp_path, monkeypatch):
    cfg = _tiny_config()
    cache = _cache(tmp_path, cfg)
    ran: list[tuple[str, int, str]] = []
    execute = study.execute

    def recording(graph, target, device, console, **kw):
        names = execute(graph, target, device, console, **kw)
        ran.extend((graph.out_dir("teacher").as_posix(), graph.cfg.student.seed, n) for n in names)
        return names
    monkeypatch.setattr(study, "execute", recording)
    arms = (ARMS[0], Arm("teacher-original", ("teacher.input=original",)))
    study.run_study(cfg, cache, [0, 1], "cpu", Console(quiet=True), arms=arms)
    trained = sorted(n for _, _, n in ran)
    # base: teacher, soft-labels, 2 baselines, 2 students; the arm: its teacher, soft-labels, 2 students
    assert trained.count("teacher") == 2 and trained.count("baseline") == 2 and trained.count("student") == 4
    ablation = json.loads((cache / "report" / "ablation.json").read_text())
    assert [a["arm"] for a in ablation["arms"]] == ["dlkdd", "teacher-original"]
    second = ablation["arms"][1]
    assert [r["baseline"] for r in second["rows"]] == [r["baseline"] for r in ablation["arms"][0]["rows"]]
    meta = json.loads((cache / "ablation" / "teacher-original" / "teacher" / "meta.json").read_text())
    assert meta["input"] == "original"
    assert "Ablation: where the gain comes from" in (cache / "report" / "study.md").read_text()


def test_a_chain_seed_sets_every_seed_and_moves_what_it_changes_only():
    cfg = resolve_config()  # the sample's config: pretraining, a zero_dce++ fit, every seed 0
    seeded = seed_config(cfg, ARMS[0], 3, "chain")
    assert {seeded.pretrain.seed, seeded.enhancer.seed, seeded.data.view_seed, seeded.teacher.seed,
            seeded.student.seed} == {3}
    moved = stages_for(cfg, ARMS[0], 3, "chain")
    for name in ("pretrain", "enhancer", "enhance", "teacher", "soft-labels", "baseline", "student", "evaluate"):
        assert moved[name].folder(seeded).startswith("chain/seed3/"), name
    same = stages_for(cfg, ARMS[0], 0, "chain")  # the seed the config has: the run's own folders
    for name, stage in STAGES.items():
        assert same[name].folder(cfg) == stage.folder(cfg), name
    gamma = resolve_config(overrides=["enhancer.kind=gamma"])  # no seed in its enhancer: shared
    moved = stages_for(gamma, ARMS[0], 3, "chain")
    seeded = seed_config(gamma, ARMS[0], 3, "chain")
    assert moved["enhancer"].folder(seeded) == STAGES["enhancer"].folder(gamma)
    assert moved["enhance"].folder(seeded) == STAGES["enhance"].folder(gamma)
    assert moved["teacher"].folder(seeded).startswith("chain/seed3/")
    with pytest.raises(ValueError, match="scope"):
        seed_config(cfg, ARMS[0], 0, "everything")


@pytest.mark.slow
def test_a_chain_study_reseeds_views_teacher_and_models_and_shares_an_unchanged_upstream(tmp_path, monkeypatch):
    cfg = _tiny_config()  # enhancer none: nothing seeded upstream of the teacher but the views
    cache = _cache(tmp_path, cfg)
    ran: list[tuple[str, int, str]] = []
    execute = study.execute

    def recording(graph, target, device, console, **kw):
        names = execute(graph, target, device, console, **kw)
        ran.extend((graph.out_dir(n).relative_to(cache).as_posix(), graph.cfg.data.view_seed, n) for n in names)
        return names
    monkeypatch.setattr(study, "execute", recording)
    result = study.run_study(cfg, cache, [0, 1], "cpu", Console(quiet=True), scope="chain")
    by_seed = {s: sorted(n for _, seed, n in ran if seed == s) for s in (0, 1)}
    assert by_seed[0] == by_seed[1] == ["baseline", "soft-labels", "student", "teacher"]  # not the clips
    assert all(folder.startswith("chain/seed1/") for folder, seed, _ in ran if seed == 1)
    assert not any(folder.startswith("chain/") for folder, seed, _ in ran if seed == 0)
    with h5py.File(cache / "chain" / "seed1" / "soft-labels" / "logits.h5", "r") as f:
        assert int(f.attrs["view_seed"]) == 1
    on_disk = json.loads((cache / "report" / "study-chain.json").read_text())
    assert on_disk["scope"] == "chain" and on_disk["seeds"] == [0, 1] and on_disk == json.loads(json.dumps(result))
    assert not (cache / "report" / "study.json").exists()  # the student-only study's report is its own
    assert "the whole chain is reseeded" in (cache / "report" / "study-chain.md").read_text()
