"""`dlkdd study`: the JSON's exact shape, its statistics, and that a new seed trains only itself."""
from __future__ import annotations

import copy
import json
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from dlkdd.cli import cli
from dlkdd.pipeline.config import Config
from dlkdd.pipeline.stages.run import resolve_config
from dlkdd.pipeline.stages.table import STAGES, pipeline_graph
from dlkdd.pipeline.study import runner as study
from dlkdd.pipeline.study.arms import (
    ARMS,
    NORMALIZE_ARMS,
    Arm,
    ArmError,
    ablation_arms,
    arm_scope,
    named_arms,
    seed_config,
    stages_for,
)
from dlkdd.pipeline.study.report import ablation_markdown, margin_markdown, report_names, summarize_arms, write_report
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
    assert set(on_disk) == {"seeds", "rows", "difference", "difference_bootstrap2", "difference_bootstrap",
                            "scope"} and on_disk["seeds"] == [0, 1]
    boot2 = on_disk["difference_bootstrap2"]
    assert (boot2["seeds"], boot2["videos"]) == (2, 6) and boot2["ci95"][0] <= boot2["mean"] <= boot2["ci95"][1]
    assert boot2["mean"] == pytest.approx(on_disk["difference"]["mean"], abs=1e-3)
    assert on_disk["scope"] == "student"
    assert [set(r) for r in on_disk["rows"]] == [{"seed", "teacher", "baseline", "student"}] * 2
    assert [r["seed"] for r in on_disk["rows"]] == [0, 1]
    assert set(on_disk["difference"]) == {"mean", "ci95"} and len(on_disk["difference"]["ci95"]) == 2
    diffs = [r["student"] - r["baseline"] for r in on_disk["rows"]]
    assert on_disk["difference"]["mean"] == pytest.approx(np.mean(diffs), abs=1e-3)
    assert all(0 <= r[m] <= 100 for r in on_disk["rows"] for m in ("teacher", "baseline", "student"))
    md = (cache / "report" / "study.md").read_text()
    assert "Paired bootstrap over the 6 test videos**, conditional on these seeds" in md
    assert "Train-minus-validation gap" in md
    headline = next(line for line in md.splitlines() if line.startswith("**"))
    assert "two-level bootstrap interval" in headline and f"{boot2['ci95'][0]:+.2f}" in headline
    assert "Gain against the teacher's margin" not in md  # one teacher: no margin to vary
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
    assert report_names("val") == ("study-val.json", "study-val.md", "study-val.png", "ablation-val.json",
                                   "ablation-val.png")
    assert report_names("test") == ("study.json", "study.md", "study.png", "ablation.json", "ablation.png")
    assert report_names("test", "chain")[0] == "study-chain.json"
    assert report_names("val", "chain")[3] == "ablation-chain-val.json"
    assert report_names("val", "chain")[4] == "ablation-chain-val.png"


def test_ablation_arms_follow_the_config_and_move_only_what_they_change():
    cfg = _tiny_config()
    cfg.teacher.model = "r2plus1d_tiny"
    cfg.data.normalize = "stream"
    names = [a.name for a in ablation_arms(cfg)]
    # pretraining is off (no pretrain.root): no from-scratch row; enhancer "none" is not gamma
    assert names == ["dlkdd", "teacher-original", "teacher-gamma", "teacher-small", "normalize-source",
                     "normalize-none"]
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
    for name in ("normalize-source", "normalize-none"):  # the enhanced-input teacher's statistics change; not the clips
        assert {"teacher", "soft-labels", "student"} <= moved[name] and "enhance" not in moved[name]
    # a baseline from random weights on original clips: "source" standardises it as "stream" does
    # (the original stream's statistics), "none" does not standardise it
    assert "baseline" not in moved["normalize-source"] and "baseline" in moved["normalize-none"]
    # every output folder has its own record: (arm, stage) pairs that share a folder share a record
    folders, records = set(), set()
    for a in arms.values():
        stages, c = stages_for(cfg, a, 0), seed_config(cfg, a, 0)
        for s in ("teacher", "student", "baseline"):
            folders.add(stages[s].folder(c))
            records.add(stages[s].record_name(c))
    assert len(records) == len(folders)


def _result(arm: str, seed: int, teacher: int, baseline: int, student: int) -> dict:
    """One seed's scores on 100 videos: top-1 t % is t hits, the first ones."""
    top = {"teacher": teacher, "baseline": baseline, "student": student}
    return {"arm": arm, "seed": seed, "top1": top, "hits": {m: [1] * v + [0] * (100 - v) for m, v in top.items()},
            "gap": {m: None for m in top}}


def test_ablation_summary_pairs_each_arm_with_its_baseline_and_the_dlkdd_student():
    results = []
    for seed, (b, d, o, t) in enumerate([(50, 60, 55, 60), (40, 52, 47, 66), (45, 57, 50, 58)]):
        results.append(_result("dlkdd", seed, 70, b, d))
        results.append(_result("teacher-original", seed, t, b, o))
    ab = summarize_arms(results, ["dlkdd", "teacher-original"], {"dlkdd": "student", "teacher-original": "teacher"})
    assert ab["seeds"] == [0, 1, 2] and [r["arm"] for r in ab["arms"]] == ["dlkdd", "teacher-original"]
    first, second = ab["arms"]
    assert first["student_vs_baseline"]["mean"] == pytest.approx(np.mean([10, 12, 12]), abs=1e-3)
    assert second["student_vs_dlkdd_student"]["mean"] == pytest.approx(np.mean([-5, -5, -7]), abs=1e-3)
    assert second["student_vs_dlkdd_student"]["ci95"][1] < 0
    boot = first["student_vs_baseline_bootstrap2"]
    assert boot["mean"] == pytest.approx(first["student_vs_baseline"]["mean"], abs=1e-3) and boot["seeds"] == 3
    assert boot["ci95"][0] <= boot["mean"] <= boot["ci95"][1]
    assert (first["teacher_per_seed"], second["teacher_per_seed"]) == (False, True)
    assert second["scope"] == "teacher" and "teacher_margin" not in first
    margin = second["teacher_margin"]
    assert margin["teacher_minus_baseline"] == [10, 26, 13] and margin["student_minus_baseline"] == [5, 7, 5]
    assert margin["pearson_r"] == pytest.approx(np.corrcoef([10, 26, 13], [5, 7, 5])[0, 1], abs=1e-4)
    effect = ab["dual_light_effect"]  # DL-KDD student - teacher-original student, by seed
    assert effect["mean"] == pytest.approx(np.mean([5, 5, 7]), abs=1e-3) and effect["ci95"][0] > 0
    assert effect["bootstrap2"]["ci95"][0] > 0 and effect["bootstrap2"]["mean"] == pytest.approx(effect["mean"])
    md = ablation_markdown(ab, (Arm("dlkdd"), Arm("teacher-original", ("teacher.input=original",))),
                           forest_png="ablation-val.png")
    assert "teacher on original (dark) clips" in md and "`teacher.input=original`" in md
    assert "| teacher per seed |" in md and "| `teacher.input=original` | yes |" in md
    assert "Run with a teacher (and its soft labels) per seed: teacher-original" in md
    assert "**Dual-light effect" in md and f"{effect['mean']:+.2f} points" in md
    assert "](ablation-val.png)" in md
    text = margin_markdown({r["arm"]: r["teacher_margin"] for r in ab["arms"] if "teacher_margin" in r})
    assert "n = 3, indicative" in text and "0: +10.00 / +5.00" in text
    assert "dual_light_effect" not in summarize_arms([r for r in results if r["arm"] == "dlkdd"], ["dlkdd"])


def test_the_report_writes_a_forest_plot_and_names_per_seed_teachers(tmp_path):
    results = []
    for seed, (b, d, o) in enumerate([(50, 60, 55), (40, 52, 47), (45, 57, 50)]):
        results += [_result("dlkdd", seed, 70, b, d), _result("teacher-original", seed, 60 + seed, b, o)]
    arms = (Arm("dlkdd"), Arm("teacher-original", ("teacher.input=original",)))
    study_json = write_report(tmp_path, results, arms, "dlkdd study --arms teacher-original", "test", "student",
                              {"dlkdd": "student", "teacher-original": "teacher"})
    assert study_json["difference_bootstrap2"]["seeds"] == 3 and "teacher_margin" not in study_json
    png = (tmp_path / "ablation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "study.md").read_text()
    assert "![Forest plot" in md and "](ablation.png)" in md
    assert md.index("two-level bootstrap interval") < md.index("Paired difference (student - baseline, by seed)")
    assert "## Gain against the teacher's margin" in md and "teacher on original (dark) clips" in md.split("margin")[-1]
    ablation = json.loads((tmp_path / "ablation.json").read_text())
    assert [a["teacher_per_seed"] for a in ablation["arms"]] == [False, True] and "dual_light_effect" in ablation


def test_arms_that_change_the_teacher_train_it_per_seed():
    cfg = _tiny_config()
    cfg.teacher.model = "r2plus1d_tiny"
    arms = {a.name: a for a in ablation_arms(cfg) if a.name not in NORMALIZE_ARMS}
    arms["student-alpha"] = Arm("student-alpha", ("student.alpha=0.9",))  # changes only the student
    prior = copy.deepcopy(cfg)
    prior.pretrain.root = "/footage/day"  # the models start from a pretrained prior: a from-scratch arm
    assert arm_scope(prior, ablation_arms(prior)[1], "student") == "teacher"

    def teacher_folder(arm: Arm, seed: int) -> str:
        return stages_for(cfg, arm, seed, "student")["teacher"].folder(seed_config(cfg, arm, seed, "student"))
    for name in ("teacher-original", "teacher-gamma", "teacher-small"):
        assert arm_scope(cfg, arms[name], "student") == "teacher", name
        assert teacher_folder(arms[name], 0) != teacher_folder(arms[name], 1), name
        assert teacher_folder(arms[name], 1).startswith(f"ablation/{name}/teacher/seed1-"), name
        assert seed_config(cfg, arms[name], 1, "student").teacher.seed == 1
    for name in ("dlkdd", "student-alpha"):  # one teacher shared by every seed
        assert arm_scope(cfg, arms[name], "student") == "student", name
        assert teacher_folder(arms[name], 0) == teacher_folder(arms[name], 1) == "teacher", name
    original = arms["teacher-original"]  # its baseline is the base arm's, seed by seed
    assert stages_for(cfg, original, 1)["baseline"].folder(seed_config(cfg, original, 1)) == \
        stages_for(cfg, ARMS[0], 1)["baseline"].folder(seed_config(cfg, ARMS[0], 1))
    assert arm_scope(cfg, original, "chain") == "chain" and arm_scope(cfg, original, "teacher") == "teacher"


def test_named_arms_pick_and_order_and_reject_with_the_list():
    cfg = _tiny_config()
    cfg.teacher.model = "r2plus1d_tiny"
    cfg.data.normalize = "stream"
    assert [a.name for a in named_arms(cfg, "teacher-small,teacher-original")] == \
        ["dlkdd", "teacher-small", "teacher-original"]
    assert [a.name for a in named_arms(cfg, " normalize-none ")] == ["dlkdd", "normalize-none"]
    with pytest.raises(ArmError, match=r"bogus: no such arm \(available: teacher-original, teacher-gamma, "
                                       r"teacher-small, normalize-source, normalize-none\)"):
        named_arms(cfg, "teacher-small,bogus")
    with pytest.raises(ArmError, match="from-scratch: not applicable to this config"):
        named_arms(cfg, "from-scratch")  # no pretrained prior
    with pytest.raises(ArmError, match="no arm named"):
        named_arms(cfg, ",")


def test_normalize_arms_follow_the_configured_normalisation():
    cfg = _tiny_config()
    for value, expected in (("stream", ["normalize-source", "normalize-none"]),
                            ("source", ["normalize-stream", "normalize-none"]),
                            ("none", ["normalize-stream", "normalize-source"])):
        cfg.data.normalize = value
        arms = [a for a in ablation_arms(cfg) if a.name in NORMALIZE_ARMS]
        assert [a.name for a in arms] == expected, value
        assert all(a.overrides == (f"data.normalize={NORMALIZE_ARMS[a.name]}",) for a in arms)


def test_normalize_arms_train_their_own_teacher_and_baseline_per_seed():
    cfg = _tiny_config()
    cfg.data.normalize = "stream"
    arm = next(a for a in ablation_arms(cfg) if a.name == "normalize-none")
    stages = {s: stages_for(cfg, arm, s) for s in (0, 1)}
    folders = {s: {n: stages[s][n].folder(seed_config(cfg, arm, s)) for n in ("teacher", "baseline")} for s in (0, 1)}
    assert folders[0]["teacher"] != folders[1]["teacher"]
    assert all(f.startswith("ablation/normalize-none/") for s in (0, 1) for f in folders[s].values())


def test_study_arms_option_runs_the_named_arms_and_closes_on_the_two_level_interval(tmp_path, monkeypatch):
    seen = {}

    def fake_run_study(cfg, cache, seeds, device, console, **kw):
        seen.update(kw, seeds=seeds)
        return {"difference": {"mean": 2.0, "ci95": [0.5, 3.5]},
                "difference_bootstrap2": {"mean": 2.0, "ci95": [-0.25, 4.25], "seeds": 3}}
    monkeypatch.setattr(study, "run_study", fake_run_study)
    result = CliRunner().invoke(cli, ["--cache", str(tmp_path), "--device", "cpu", "study", "--seeds", "0-2",
                                      "--arms", "teacher-original"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert [a.name for a in seen["arms"]] == ["dlkdd", "teacher-original"] and seen["seeds"] == [0, 1, 2]
    assert ("student - baseline over 3 seed(s): +2.00 points, 95 % CI [-0.25, +4.25] (two-level bootstrap over "
            "seeds and test videos); paired t-interval over seeds [+0.50, +3.50]") in result.output


def test_study_arms_option_rejects_an_unknown_arm_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["--cache", str(tmp_path), "study", "--seeds", "0", "--arms", "nope"])
    assert result.exit_code == 2
    error = [line for line in result.output.splitlines() if "Error" in line]
    assert len(error) == 1 and "nope: no such arm (available: " in error[0] and "teacher-original" in error[0]
    assert not list(tmp_path.iterdir())  # nothing written


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
    # base: one teacher and soft labels, 2 baselines, 2 students; the arm changes the teacher, so it
    # trains a teacher and soft labels per seed, and 2 students (the baselines are the base arm's)
    assert trained.count("teacher") == 3 and trained.count("soft-labels") == 3
    assert trained.count("baseline") == 2 and trained.count("student") == 4
    ablation = json.loads((cache / "report" / "ablation.json").read_text())
    assert [a["arm"] for a in ablation["arms"]] == ["dlkdd", "teacher-original"]
    assert [a["teacher_per_seed"] for a in ablation["arms"]] == [False, True]
    second = ablation["arms"][1]
    assert [r["baseline"] for r in second["rows"]] == [r["baseline"] for r in ablation["arms"][0]["rows"]]
    teachers = sorted((cache / "ablation" / "teacher-original" / "teacher").glob("seed*"))
    assert [t.name.split("-")[0] for t in teachers] == ["seed0", "seed1"]
    assert json.loads((teachers[1] / "meta.json").read_text())["input"] == "original"
    assert set(ablation["dual_light_effect"]) >= {"mean", "ci95", "bootstrap2"}
    md = (cache / "report" / "study.md").read_text()
    assert "Ablation: where the gain comes from" in md and "**Dual-light effect" in md and "](ablation.png)" in md
    assert (cache / "report" / "ablation.png").stat().st_size > 0


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
    md = (cache / "report" / "study-chain.md").read_text()
    assert "the whole chain is reseeded" in md
    margin = on_disk["teacher_margin"]  # the teacher is drawn per seed: its margin beside the gain
    assert margin["n"] == 2 and margin["pearson_r"] is None and "needs >= 3 seeds" in md
    assert margin["student_minus_baseline"] == [pytest.approx(r["student"] - r["baseline"], abs=1e-3)
                                                for r in on_disk["rows"]]
