"""What resolve_config makes of the defaults: enhancer.w_tv follows enhancer.kind (its authors' weight,
Zero-DCE 200 / Zero-DCE++ 1600 at 512 px, carried to the fit's crop size); a value the user sets wins,
in a file or with --set, and a study arm that changes the kind follows it. --seed sets every seed."""
from __future__ import annotations

import pytest

from dlkdd.pipeline.stages.run import resolve_config
from dlkdd.pipeline.stages.table import pipeline_graph
from dlkdd.pipeline.study.arms import Arm, seed_config


@pytest.mark.parametrize("kind, w_tv", [("zero_dce++", 25.0), ("zero_dce", 3.125), ("sci", 200.0)])
def test_the_default_follows_the_kind(kind, w_tv):
    """At the default 64 px fit crops: 1600 x (64 / 512)^2 = 25, 200 x (64 / 512)^2 = 3.125; SCI has no
    such term and keeps the section's value."""
    assert resolve_config(overrides=[f"enhancer.kind={kind}"]).enhancer.w_tv == w_tv


@pytest.mark.parametrize("crop, w_tv", [(512, 1600.0), (128, 100.0), (32, 6.25)])
def test_the_authors_weight_holds_at_their_512_px_and_scales_with_the_crop_area(crop, w_tv):
    assert resolve_config(overrides=[f"enhancer.crop={crop}"]).enhancer.w_tv == w_tv


def test_the_default_kind_takes_zero_dce_pp_weight():
    cfg = resolve_config()
    assert cfg.enhancer.kind == "zero_dce++" and cfg.enhancer.w_tv == 25.0


@pytest.mark.parametrize("kind", ["zero_dce++", "zero_dce"])
def test_a_value_set_wins_even_when_it_equals_the_other_default(tmp_path, kind):
    assert resolve_config(overrides=[f"enhancer.kind={kind}", "enhancer.w_tv=200"]).enhancer.w_tv == 200.0
    toml = tmp_path / "c.toml"
    toml.write_text(f'[enhancer]\nkind = "{kind}"\nw_tv = 1600\n')
    assert resolve_config(toml).enhancer.w_tv == 1600.0


def test_an_arm_that_changes_the_kind_takes_its_default_unless_set():
    arm = Arm("dce", ("enhancer.kind=zero_dce",))
    assert seed_config(resolve_config(), arm, 0).enhancer.w_tv == 3.125
    assert seed_config(resolve_config(overrides=["enhancer.w_tv=700"]), arm, 0).enhancer.w_tv == 700.0


def test_the_weight_is_in_the_enhancer_fingerprint(tmp_path):
    """zero_dce++ at its default is another fit than at 200: the enhancer stage is not shared."""
    a = pipeline_graph(resolve_config(), tmp_path).inspect("enhancer").params
    b = pipeline_graph(resolve_config(overrides=["enhancer.w_tv=200"]), tmp_path).inspect("enhancer").params
    assert a["enhancer.w_tv"] == 25.0 and b["enhancer.w_tv"] == 200.0


def test_seed_sets_every_seed_pretraining_included():
    cfg = resolve_config(seed=7)
    assert {cfg.pretrain.seed, cfg.enhancer.seed, cfg.data.view_seed, cfg.teacher.seed, cfg.student.seed} == {7}
