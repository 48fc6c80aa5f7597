"""Zero-DCE / Zero-DCE++ / gamma enhancers, their losses, and making, fitting, saving, loading
and applying them through the registry."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from dlkdd.models import zero_dce as zd
from dlkdd.models.zero_dce import WeightsError
from dlkdd.pipeline.config import EnhancerConfig
from dlkdd.pipeline.enhancers.apply import enhance_frames
from dlkdd.pipeline.enhancers.build import load_enhancer, make_enhancer, save_enhancer
from dlkdd.pipeline.enhancers.fit import fit
from dlkdd.pipeline.stages.enhancer import needs_fit
from tests.weightsfix import SHARED_WEIGHTS, require

WEIGHTS = SHARED_WEIGHTS / "zero-dce"
DCE = WEIGHTS / "ZeroDCE_Epoch99.pth"
DCEPP = WEIGHTS / "ZeroDCEpp_Epoch99.pth"


def textured(n=1, h=64, w=64, mean=0.07, seed=0) -> np.ndarray:
    """Smooth shading plus noise and a slight colour cast, scaled to a dark mean; float (n, h, w, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / h
    img = 0.5 + 0.3 * (np.sin(6 * xx) * np.cos(4 * yy))[..., None] + 0.15 * rng.random((n, h, w, 3))
    img = img * np.array([1.0, 0.9, 0.8])
    return img / img.mean() * mean


def dark_uint8(n=8, mean=0.05, seed=0) -> np.ndarray:
    return np.clip(np.round(textured(n, mean=mean, seed=seed) * 255), 0, 255).astype(np.uint8)


def dark_tensor(mean=0.07) -> torch.Tensor:
    return torch.from_numpy(textured(1, mean=mean)).permute(0, 3, 1, 2).float()


def authors(path: Path) -> dict:
    require(path, "authors' weights")
    return torch.load(path, map_location="cpu", weights_only=True)


def shapes(state: dict) -> dict:
    return {k: tuple(v.shape) for k, v in state.items()}


# -- architecture ----------------------------------------------------------------------------------

def test_parameter_counts():
    assert sum(p.numel() for p in zd.DCENet().parameters()) == 79_416
    assert sum(p.numel() for p in zd.DCENetPP().parameters()) == 10_561
    assert sum(p.numel() for p in zd.GammaEnhancer(2.2).parameters()) == 0
    assert zd.GammaEnhancer(2.2).state_dict() == {}


def test_state_dict_keys_match_authors():
    assert shapes(zd.DCENet().state_dict()) == shapes(authors(DCE))
    assert shapes(zd.DCENetPP().state_dict()) == shapes(authors(DCEPP))


@pytest.mark.parametrize("make", [zd.DCENet, lambda: zd.DCENetPP(4)])
def test_forward_shapes(make):
    x = torch.rand(2, 3, 30, 45)  # sizes not divisible by the ++ scale factor
    enhanced, curves = make()(x)
    assert enhanced.shape == x.shape and curves.shape[-2:] == x.shape[-2:]


# -- authors' weights ------------------------------------------------------------------------------

@pytest.mark.parametrize("path,cls,scale", [(DCE, zd.DCENet, 1), (DCEPP, zd.DCENetPP, 1), (DCEPP, zd.DCENetPP, 4)])
def test_authors_weights_brighten(path, cls, scale):
    authors(path)
    model = zd.from_checkpoint(path, scale_factor=scale)
    assert isinstance(model, cls) and not model.training and model.scale_factor == scale
    x = dark_tensor(0.07)
    with torch.no_grad():
        y = model.enhance(x)
    assert y.shape == x.shape
    assert 0.0 <= y.min() and y.max() <= 1.0
    assert y.mean() >= 3 * x.mean(), (x.mean().item(), y.mean().item())


def test_wrong_kind_names_file_and_key():
    authors(DCEPP)
    with pytest.raises(WeightsError, match=r"ZeroDCEpp_Epoch99\.pth.*'e_conv1\.weight'"):
        zd.from_checkpoint(DCEPP, kind="zero_dce")
    with pytest.raises(WeightsError, match=r"ZeroDCE_Epoch99\.pth.*'e_conv1\.depth_conv\.weight'"):
        zd.from_checkpoint(DCE, kind="zero_dce++")


def test_wrong_shape_names_key_and_both_shapes(tmp_path):
    state = zd.DCENet().state_dict()
    state["e_conv3.weight"] = torch.zeros(32, 32, 1, 3)
    torch.save(state, tmp_path / "tweaked.pth")
    with pytest.raises(WeightsError, match=r"tweaked\.pth.*'e_conv3\.weight'.*\(32, 32, 1, 3\).*\(32, 32, 3, 3\)"):
        zd.from_checkpoint(tmp_path / "tweaked.pth")


def test_missing_and_unexpected_keys(tmp_path):
    state = zd.DCENetPP().state_dict()
    del state["e_conv5.point_conv.bias"]
    torch.save(state, tmp_path / "missing.pth")
    with pytest.raises(WeightsError, match=r"missing\.pth.*missing key 'e_conv5\.point_conv\.bias'"):
        zd.from_checkpoint(tmp_path / "missing.pth")
    state = zd.DCENet().state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "extra.pth")
    with pytest.raises(WeightsError, match=r"extra\.pth.*unexpected key 'extra\.weight'"):
        zd.from_checkpoint(tmp_path / "extra.pth")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint" * 8)
    with pytest.raises(WeightsError, match=r"garbage\.pth: .*not a torch checkpoint") as e:
        zd.from_checkpoint(tmp_path / "garbage.pth")
    assert "\n" not in str(e.value)
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"empty\.pth"):
        zd.from_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(WeightsError, match=r"absent\.pth.*not found"):
        zd.from_checkpoint(tmp_path / "absent.pth")


class RunsCode:
    """Unpickling this would call print(): weights_only must refuse it (and nothing is printed)."""

    def __reduce__(self):
        return (print, ("unpickled code ran",))


def test_pickle_needing_code_is_refused(tmp_path, capsys):
    torch.save({"e_conv1.weight": RunsCode()}, tmp_path / "code.pth")
    with pytest.raises(WeightsError, match=r"code\.pth: .*code execution") as e:
        zd.from_checkpoint(tmp_path / "code.pth")
    assert "\n" not in str(e.value)
    assert "unpickled code ran" not in capsys.readouterr().out


# -- gamma / identity ------------------------------------------------------------------------------

@pytest.mark.parametrize("g", [1.0, 1.8, 2.2, 3.0])
def test_gamma_lut_exact(g):
    model = zd.GammaEnhancer(g)
    expected = [round(255 * (i / 255) ** (1 / g)) for i in range(256)]
    assert model.lut.tolist() == expected
    frames = torch.arange(256, dtype=torch.uint8).reshape(1, 16, 16, 1).expand(2, 16, 16, 3)
    assert model.enhance_uint8(frames)[1, :, :, 2].flatten().tolist() == expected
    x = torch.arange(256).float().div(255).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    want = torch.tensor(expected).float().div(255).reshape(1, 1, 16, 16).expand(1, 3, 16, 16)
    assert torch.equal(model.enhance(x), want)


def test_identity_is_identity():
    model = zd.IdentityEnhancer()
    x = torch.rand(2, 3, 8, 8)
    assert torch.equal(model.enhance(x), x)
    frames = dark_uint8(3)
    assert np.array_equal(enhance_frames(model, frames), frames)


# -- losses ----------------------------------------------------------------------------------------

def test_losses_vanish_where_they_should():
    const = torch.full((2, 3, 32, 32), 0.6)
    assert zd.exposure(const, E=0.6).item() == pytest.approx(0.0, abs=1e-12)
    assert zd.exposure(torch.full((1, 3, 32, 32), 0.1), E=0.6).item() == pytest.approx(0.25)
    gray = torch.rand(2, 1, 32, 32).expand(2, 3, 32, 32)
    assert zd.color_constancy(gray).item() == pytest.approx(0.0, abs=1e-12)
    tinted = torch.rand(2, 3, 32, 32) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)
    assert zd.color_constancy(tinted).item() > 0
    curves = torch.full((2, 24, 32, 32), -0.3)
    assert zd.illumination_smoothness(curves).item() == pytest.approx(0.0, abs=1e-12)
    assert zd.illumination_smoothness(torch.rand(2, 24, 32, 32)).item() > 0
    x = torch.rand(2, 3, 32, 32)
    assert zd.spatial_consistency(x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert zd.spatial_consistency(x, torch.rand(2, 3, 32, 32)).item() > 0


def test_zero_reference_loss_is_weighted_sum():
    x = torch.rand(2, 3, 32, 32) * 0.2
    model = zd.init_weights(zd.DCENetPP(), seed=0)
    enhanced, curves = model(x)
    w = {"spa": 1.0, "exp": 10.0, "col": 5.0, "tv": 1600.0}
    total, terms = zd.zero_reference_loss(enhanced, x, curves, w, E=0.6)
    assert set(terms) == set(w)
    assert total.item() == pytest.approx(sum(w[k] * terms[k].item() for k in w), rel=1e-5)


# -- fitting ---------------------------------------------------------------------------------------

def small_cfg(**kw) -> EnhancerConfig:
    return EnhancerConfig(**{"steps": 60, "batch_size": 4, "crop": 32, "lr": 1e-3, **kw})


@pytest.mark.parametrize("kind", ["zero_dce", "zero_dce++"])
def test_fit_from_scratch_brightens(kind):
    frames = dark_uint8(8, mean=0.05)
    cfg = small_cfg(kind=kind)
    model = make_enhancer(cfg)
    seen = []
    history = fit(model, frames, cfg, on_step=lambda step, terms: seen.append(step))
    assert seen == list(range(cfg.steps)) and len(history) == cfg.steps
    assert {"loss", "spa", "exp", "col", "tv"} <= history[0].keys()
    assert history[-1]["loss"] < history[0]["loss"]
    assert not model.training
    before, after = frames.mean() / 255, enhance_frames(model, frames).mean() / 255
    assert after >= 2 * before and abs(after - 0.6) < abs(before - 0.6), (before, after)


def test_fit_is_deterministic_and_handles_small_frames():
    frames = dark_uint8(4)[:, :20, :24]  # smaller than the crop: full frames are used
    cfg = small_cfg(kind="zero_dce++", steps=3)
    runs = []
    for _ in range(2):
        model = make_enhancer(cfg)
        runs.append((fit(model, frames, cfg), model.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


# -- make / save / load ----------------------------------------------------------------------------

def test_make_enhancer_import_and_kind_check():
    authors(DCEPP)
    cfg = EnhancerConfig(kind="zero_dce++", mode="import", weights=str(DCEPP), scale_factor=2)
    model = make_enhancer(cfg)
    assert isinstance(model, zd.DCENetPP) and model.scale_factor == 2
    assert not needs_fit(cfg) and needs_fit(dataclasses.replace(cfg, mode="finetune"))
    with pytest.raises(WeightsError, match="ZeroDCEpp_Epoch99"):
        make_enhancer(dataclasses.replace(cfg, kind="zero_dce"))


@pytest.mark.parametrize("kind", ["zero_dce", "zero_dce++", "gamma", "none"])
def test_save_load_roundtrip(tmp_path, kind):
    cfg = EnhancerConfig(kind=kind, scale_factor=2, gamma=1.7)
    model = make_enhancer(cfg)
    save_enhancer(model, tmp_path / "enhancer" / "weights.pt", cfg)
    loaded = load_enhancer(tmp_path / "enhancer" / "weights.pt")
    assert type(loaded) is type(model) and not loaded.training
    frames = dark_uint8(2)
    assert np.array_equal(enhance_frames(loaded, frames), enhance_frames(model, frames))
    if kind == "gamma":
        assert loaded.gamma == 1.7
    if kind == "zero_dce++":
        assert loaded.scale_factor == 2


def test_load_enhancer_rejects_garbage(tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"junk")
    with pytest.raises(WeightsError, match=r"weights\.pt"):
        load_enhancer(tmp_path / "weights.pt")


# -- enhance_frames --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["zero_dce", "zero_dce++", "gamma"])
def test_enhance_frames_batched_equals_loop(kind):
    model = make_enhancer(EnhancerConfig(kind=kind, scale_factor=2))
    frames = dark_uint8(5)[:, :24, :40]
    out = enhance_frames(model, frames, batch=2)
    assert out.dtype == np.uint8 and out.shape == frames.shape
    loop = np.concatenate([enhance_frames(model, f[None], batch=1) for f in frames])
    assert np.abs(out.astype(int) - loop.astype(int)).max() <= 1
