"""The enhancer fit trains the whole curve network: a pixel-adaptive curve, a quality report on
held-out frames, a warning when the fit collapses to one global curve, and the curve map in preview;
and the registry of kinds those come from, read without torch."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from dlkdd.cli import cli
from dlkdd.models import zero_dce as zd
from dlkdd.pipeline import enhancers
from dlkdd.pipeline.config import Config, ConfigError, EnhancerConfig
from dlkdd.pipeline.engine.stage import section_keys
from dlkdd.pipeline.enhancers import preview as pv
from dlkdd.pipeline.enhancers import quality as q
from dlkdd.pipeline.enhancers.apply import enhance_frames
from dlkdd.pipeline.enhancers.build import make_enhancer
from dlkdd.pipeline.enhancers.fit import fit
from dlkdd.pipeline.enhancers.registry import FIT_KEYS, EnhancerKind, register
from dlkdd.pipeline.stages.enhancer import split_held_out, training_frames
from tests.weightsfix import SHARED_WEIGHTS, require

DCEPP = SHARED_WEIGHTS / "zero-dce" / "ZeroDCEpp_Epoch99.pth"


def _blobs(n=6, h=48, w=48, seed=0) -> np.ndarray:
    """Dark frames whose pixels of one value sit in both dark and bright neighbourhoods."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = []
    for _ in range(n):
        img = np.full((h, w), 4.0)
        for _ in range(3):
            cy, cx, r = rng.integers(8, h - 8), rng.integers(8, w - 8), rng.integers(5, 10)
            img += 30 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        img = img + rng.normal(0, 1.5, (h, w))
        frames.append(np.repeat(img[..., None], 3, axis=-1))
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


def test_value_spread_is_zero_for_a_lookup_table_and_positive_for_a_local_curve():
    frames = _blobs()
    table = zd.gamma_lut(2.2).numpy()
    assert q.value_spread(frames, table[frames]) == 0.0
    # the same input value mapped by its neighbourhood (a blurred copy) is no longer one output value
    local = np.clip(frames.astype(float) * 3 + np.roll(frames, 5, axis=2) * 2, 0, 255).astype(np.uint8)
    assert q.value_spread(frames, local) > 1.0


def test_he_init_keeps_activation_scale_and_authors_init_is_as_published():
    he = zd.init_weights(zd.DCENetPP(), seed=0, scheme="he")
    w = he.e_conv2.point_conv.weight
    assert w.std().item() == pytest.approx((2 / w[0].numel()) ** 0.5, rel=0.15)
    authors = zd.init_weights(zd.DCENetPP(), seed=0, scheme="authors")
    assert authors.e_conv2.point_conv.weight.std().item() == pytest.approx(0.02, rel=0.15)
    assert all(float(m.bias.detach().abs().max()) == 0 for m in he.modules() if isinstance(m, torch.nn.Conv2d))
    with pytest.raises(ValueError, match="unknown init"):
        zd.init_weights(zd.DCENetPP(), scheme="xavier")


def test_short_fit_from_authors_init_collapses_and_is_warned_about_he_init_adapts():
    frames = _blobs(8)
    results = {}
    for init in ("authors", "he"):
        cfg = EnhancerConfig(kind="zero_dce++", init=init, steps=60, batch_size=4, crop=48, lr=3e-3)
        model = make_enhancer(cfg)
        fit(model, frames, cfg)
        results[init] = q.fit_quality(model, frames, cfg)
    assert results["authors"]["curve_spread"] < q.COLLAPSED_CURVE_SPREAD
    assert "collapsed to one global curve" in q.quality_warning(results["authors"], None)
    assert results["he"]["curve_spread"] > 10 * results["authors"]["curve_spread"]
    assert results["he"]["value_spread"] > results["authors"]["value_spread"]
    assert {"loss", "spa", "exp", "col", "tv", "mean_before", "mean_after"} <= results["he"].keys()


def test_split_held_out_keeps_whole_videos_out():
    frames = np.arange(10 * 4).reshape(10 * 4, 1, 1, 1).repeat(3, axis=-1).astype(np.uint8)
    fitted, held = split_held_out(frames, per_video=4)
    assert len(held) == 8 and len(fitted) == 32  # videos 4 and 9
    assert set(held[:, 0, 0, 0].tolist()) == set(range(16, 20)) | set(range(36, 40))
    few_fit, few_held = split_held_out(frames[:12], per_video=4)
    assert len(few_fit) == len(few_held) == 12


def test_preview_grid_shows_the_curve_map_row():
    frames = _blobs(4)
    model = zd.init_weights(zd.DCENetPP(), seed=0)
    pairs = pv.with_curves([("v", frames, enhance_frames(model, frames))], model)
    assert len(pairs[0]) == 4 and pairs[0][3].shape == frames.shape and pairs[0][3].dtype == np.uint8
    three = pv.grid(pairs, frames=4)
    two = pv.grid([p[:3] for p in pairs], frames=4)
    assert three.shape[0] > two.shape[0] * 1.4
    assert pv.with_curves([("v", frames, frames)], zd.GammaEnhancer())[0][3:] == ()
    assert "curve map" in pv.describe(pairs)


@pytest.mark.slow
def test_fit_on_the_sample_is_pixel_adaptive_like_the_authors_zero_dce_pp():
    """Issue 10: on the sample's frames, the spread of enhanced values among pixels with the same
    original value is at least half that of the authors' Zero-DCE++ on the same frames."""
    require(DCEPP, "authors' weights")
    cfg = Config()
    frames, _ = training_frames(cfg, cfg.enhancer.frames_per_video)
    fit_frames, held = split_held_out(frames, cfg.enhancer.frames_per_video)
    model = make_enhancer(cfg.enhancer)
    fit(model, fit_frames, cfg.enhancer)
    ours = q.fit_quality(model, held, cfg.enhancer)
    theirs = q.fit_quality(zd.from_checkpoint(DCEPP, 1), held, cfg.enhancer)
    assert ours["value_spread"] >= 0.5 * theirs["value_spread"], (ours, theirs)
    assert q.quality_warning(ours, theirs) is None
    assert ours["mean_after"] > 5 * ours["mean_before"]


# -- the registry ----------------------------------------------------------------------------------

def test_every_kind_is_registered_in_order_and_read_without_torch():
    code = ("import sys\nfrom dlkdd.pipeline import enhancers\n"
            "print(enhancers.names(), [enhancers.get(n).learned for n in enhancers.names()])\n"
            "assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == ("('zero_dce', 'zero_dce++', 'sci', 'gamma', 'none') "
                                   "[True, True, True, False, False]")


def test_every_enhancer_key_is_read_by_some_kind_or_is_a_file():
    keys = {key for name in enhancers.names() for key in (*enhancers.get(name).keys, *enhancers.get(name).fit_keys)}
    files = {"enhancer.weights", "enhancer.reference"}  # inputs: their content counts, not their path
    assert keys | files | {"enhancer.kind", "enhancer.mode"} == set(section_keys(Config(), "enhancer"))


def test_check_rejects_an_unknown_kind_and_missing_weights_in_one_line():
    with pytest.raises(ConfigError) as e:
        enhancers.check(EnhancerConfig(kind="retinex"))
    assert str(e.value) == "enhancer.kind: 'retinex' is not one of zero_dce, zero_dce++, sci, gamma, none"
    with pytest.raises(ConfigError, match=r"^enhancer.mode=import needs enhancer.weights = PATH$"):
        enhancers.check(EnhancerConfig(kind="zero_dce", mode="import"))
    enhancers.check(EnhancerConfig(kind="gamma", mode="import"))  # nothing to import: the mode does not matter


def test_register_refuses_a_second_kind_of_a_name_and_half_a_learned_kind():
    with pytest.raises(ValueError, match="registered twice"):
        register(EnhancerKind("gamma", lambda cfg: None))
    with pytest.raises(ValueError, match="go together"):
        register(EnhancerKind("half", lambda cfg: None, fit_keys=FIT_KEYS))
    assert "half" not in enhancers.names()


def test_the_command_line_names_every_kind_and_rejects_others(tmp_path):
    helped = CliRunner().invoke(cli, ["enhancer", "--help"])
    assert helped.exit_code == 0 and all(name in helped.output for name in enhancers.names()), helped.output
    r = CliRunner().invoke(cli, ["--cache", str(tmp_path), "--set", "enhancer.kind=retinex", "status"])
    assert r.exit_code == 1
    assert "enhancer.kind: 'retinex' is not one of zero_dce, zero_dce++, sci, gamma, none" in r.output
