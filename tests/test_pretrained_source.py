"""A training stage's pretrained source is part of its fingerprint: changing it reruns the stage.

Before, `teacher.pretrained` / `student.pretrained` were no params, so `--set teacher.pretrained=`
after a run from "pretrain" reused the old teacher, and "", "kinetics400", "ig65m" and
"ig65m_kinetics" had one fingerprint.
"""
from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest

from dlkdd.pipeline.config import Config, set_value
from dlkdd.pipeline.published import source_identity
from dlkdd.pipeline.stages.table import STAGES, pipeline_graph
from tests.cachefix import mark_all_fresh

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample"
FILE = "<file>"  # stands for a state dict file, written per test
SOURCES = ["", "pretrain", "kinetics400", "ig65m", "ig65m_kinetics", FILE]


def config(section: str, source: str, weights: Path) -> Config:
    cfg = Config()
    set_value(cfg, "pretrain.root", str(SAMPLE / "day"))  # pretraining on: "pretrain" is a real source
    set_value(cfg, f"{section}.pretrained", str(weights) if source == FILE else source)
    return cfg


def shown(source: str) -> str:
    return {"": "''", FILE: "file"}.get(source, source)


@pytest.mark.parametrize("section, stage", [("teacher", "teacher"), ("student", "baseline")])
@pytest.mark.parametrize("before, after", list(itertools.permutations(SOURCES, 2)))
def test_every_change_of_source_makes_the_stage_stale_and_says_why(tmp_path, section, stage, before, after):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"pretend weights")
    cache = tmp_path / "cache"
    mark_all_fresh(pipeline_graph(config(section, before, weights), cache))
    st = pipeline_graph(config(section, after, weights), cache).status(stage)
    assert st.state == "stale"
    param = [r for r in st.reasons if r.startswith(f"param {section}.pretrained ")]
    assert param and param[0].startswith(f"param {section}.pretrained {shown(before)}"), st.reasons
    assert param[0].split(" -> ")[1].startswith(shown(after)), st.reasons


def test_a_student_variant_of_another_source_has_its_own_folder(tmp_path):
    folders = {STAGES["student"].folder(config("student", s, tmp_path / "w.pth")) for s in SOURCES}
    assert len(folders) == len(SOURCES)


def test_status_names_the_change_as_a_user_reads_it(tmp_path):
    cache = tmp_path / "cache"
    mark_all_fresh(pipeline_graph(config("teacher", "pretrain", tmp_path), cache))
    st = pipeline_graph(config("teacher", "", tmp_path), cache).status("teacher")
    assert "param teacher.pretrained pretrain -> ''" in st.reasons


def test_registered_weights_count_with_their_file():
    cfg = Config()
    set_value(cfg, "teacher.model", "r2plus1d_34")
    set_value(cfg, "teacher.pretrained", "ig65m")
    assert source_identity(cfg, "teacher") == "ig65m (r2plus1d_34_clip8_ig65m_from_scratch-9bae36ae.pth)"
    set_value(cfg, "teacher.pretrained", "ig65m_kinetics")
    assert source_identity(cfg, "teacher") == "ig65m_kinetics (r2plus1d_34_clip8_ft_kinetics_from_ig65m-0aa0550b.pth)"


def test_pretrain_without_pretraining_is_random_init_and_shares_the_fingerprint():
    off = Config()  # no pretrain.root: "pretrain" starts from random weights, as "" does
    set_value(off, "teacher.pretrained", "pretrain")
    blank = Config()
    set_value(blank, "teacher.pretrained", "")
    assert STAGES["teacher"].param_values(off) == STAGES["teacher"].param_values(blank)


def test_a_file_changed_under_the_same_path_is_stale(tmp_path):
    weights = tmp_path / "weights.pth"
    weights.write_bytes(b"pretend weights")
    cfg = config("teacher", FILE, weights)
    cache = tmp_path / "cache"
    mark_all_fresh(pipeline_graph(cfg, cache))
    assert pipeline_graph(cfg, cache).status("teacher").state == "fresh"
    weights.write_bytes(b"other weights, longer")
    assert pipeline_graph(cfg, cache).status("teacher").reasons == ["inputs changed teacher.pretrained"]


def test_a_deleted_pretrain_folder_is_rebuilt_never_reused(tmp_path):
    cfg = config("teacher", "pretrain", tmp_path)
    cache = tmp_path / "cache"
    mark_all_fresh(pipeline_graph(cfg, cache))
    assert pipeline_graph(cfg, cache).status("teacher").state == "fresh"
    shutil.rmtree(cache / "pretrain")
    states = pipeline_graph(cfg, cache).statuses()
    assert states["pretrain"].state == "stale" and "output pretrain/done.txt missing" in states["pretrain"].reasons
    assert states["teacher"].state == "stale" and "upstream pretrain is stale" in states["teacher"].reasons
