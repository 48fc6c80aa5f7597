"""SCI (enhancer.kind = sci): the authors' weights and inference equations, their loss, the stage."""
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dlkdd.models import sci
from dlkdd.pipeline import enhancers
from dlkdd.pipeline.config import Config, ConfigError, EnhancerConfig, set_value, validate
from dlkdd.pipeline.enhancers.apply import enhance_frames
from dlkdd.pipeline.enhancers.build import load_enhancer, make_enhancer, save_enhancer
from dlkdd.pipeline.enhancers.fit import fit
from dlkdd.pipeline.stages.table import enhancer_params as _enhancer_params
from tests.weightsfix import SHARED_WEIGHTS, needs

WEIGHTS = SHARED_WEIGHTS / "sci"
NAMES = ("easy", "medium", "difficult")
needs_weights = needs(WEIGHTS / "medium.pt", "SCI's released weights")


def authors_equations(state: dict, x: torch.Tensor) -> torch.Tensor:
    """The README's inference equations, written out on the raw state dict."""
    def conv(t, name):
        return F.conv2d(t, state[f"{name}.weight"], state[f"{name}.bias"], padding=1)
    bn = "enhance.blocks.0.1"
    fea = F.relu(conv(x, "enhance.in_conv.0"))
    fea = fea + F.relu(F.batch_norm(conv(fea, "enhance.blocks.0.0"), state[f"{bn}.running_mean"],
                                    state[f"{bn}.running_var"], state[f"{bn}.weight"], state[f"{bn}.bias"],
                                    training=False, eps=1e-5))
    i = torch.clamp(torch.sigmoid(conv(fea, "enhance.out_conv.0")) + x, 0.0001, 1)
    return torch.clamp(x / i, 0, 1)


@needs_weights
@pytest.mark.parametrize("name", NAMES)
def test_authors_weights_load_unchanged_and_equal_their_equations(name):
    state = torch.load(WEIGHTS / f"{name}.pt", map_location="cpu", weights_only=True)
    model = sci.from_checkpoint(WEIGHTS / f"{name}.pt")
    assert set(model.state_dict()) == set(state)  # every key, calibrate.* included
    x = torch.rand(3, 3, 40, 52, generator=torch.Generator().manual_seed(1)) * 0.2  # dark
    with torch.no_grad():
        ours = model.enhance(x)
        theirs = authors_equations({k: v.float() for k, v in state.items()}, x)
    assert (ours - theirs).abs().max().item() < 1e-5
    assert ours.mean() > 1.5 * x.mean()  # brightens


@needs_weights
def test_brightness_as_the_weights_readme_measured():
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.15
    expected = {"easy": 0.157, "medium": 0.35, "difficult": 0.324}
    for name, mean in expected.items():
        with torch.no_grad():
            got = sci.from_checkpoint(WEIGHTS / f"{name}.pt").enhance(x).mean().item()
        assert abs(got - mean) < 0.01, (name, got)


def test_inference_network_has_258_parameters_and_the_authors_keys():
    model = sci.SCI()
    assert sum(p.numel() for p in model.illumination_net.parameters()) == 258
    keys = set(model.state_dict())
    assert {"enhance.in_conv.0.weight", "enhance.conv.0.weight", "enhance.blocks.0.0.weight",
            "enhance.blocks.0.1.running_var", "enhance.out_conv.0.bias", "calibrate.blocks.2.4.weight"} <= keys
    assert len(keys) == 83


def test_wrong_file_is_a_one_line_weights_error(tmp_path):
    from dlkdd.models import zero_dce
    torch.save(zero_dce.DCENetPP().state_dict(), tmp_path / "pp.pth")
    with pytest.raises(zero_dce.WeightsError, match="pp.pth: holds no SCI weights"):
        sci.from_checkpoint(tmp_path / "pp.pth")
    state = sci.SCI().state_dict()
    del state["enhance.out_conv.0.bias"]
    torch.save(state, tmp_path / "cut.pt")
    with pytest.raises(zero_dce.WeightsError, match="cut.pt: missing key 'enhance.out_conv.0.bias'"):
        sci.from_checkpoint(tmp_path / "cut.pt")


def test_smoothness_is_zero_for_flat_illumination_and_grows_with_edges():
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    flat = torch.full_like(x, 0.5)
    assert sci.smoothness(x, flat).item() == 0.0
    edge = flat.clone()
    edge[..., 8:] = 0.9
    assert sci.smoothness(x, edge).item() > 0.1


def test_fit_lowers_the_self_calibrated_loss_and_is_seeded():
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(8, 24, 24, 3, generator=g) * 0.2 * 255).to(torch.uint8).numpy()
    cfg = EnhancerConfig(kind="sci", steps=30, batch_size=8, crop=24, lr=3e-3, weight_decay=0.0, grad_clip=5.0)

    def run():
        model = make_enhancer(cfg)
        return model, fit(model, frames, cfg)
    model, history = run()
    assert history[-1]["loss"] < history[0]["loss"]
    assert not model.training
    assert history == run()[1]


def test_sci_is_registered_with_its_fingerprint_keys():
    cfg = Config()
    set_value(cfg, "enhancer.kind", "sci")
    validate(cfg)
    enhancers.check(cfg.enhancer)
    keys = _enhancer_params(cfg)
    assert "enhancer.kind" in keys and "enhancer.steps" in keys and "enhancer.lr" in keys
    assert not {"enhancer.w_spa", "enhancer.exposure", "enhancer.scale_factor", "enhancer.gamma"} & set(keys)
    set_value(cfg, "enhancer.mode", "import")
    with pytest.raises(ConfigError, match="needs enhancer.weights"):
        enhancers.check(cfg.enhancer)
    set_value(cfg, "enhancer.weights", "x.pt")
    assert _enhancer_params(cfg) == ["enhancer.kind", "enhancer.mode"]  # the weights file is an input
    from dlkdd.pipeline.stages.table import enhancer_inputs
    assert enhancer_inputs(cfg) == {"enhancer.weights": Path("x.pt")}


def test_fitted_sci_saves_and_loads_as_the_enhancer(tmp_path):
    import numpy as np
    cfg = EnhancerConfig(kind="sci", steps=3, batch_size=2, crop=16)
    model = make_enhancer(cfg)
    frames = np.random.default_rng(0).integers(0, 40, size=(6, 24, 32, 3), dtype=np.uint8)
    history = fit(model, frames, cfg)
    assert len(history) == 3 and {"loss", "fidelity", "smooth"} <= history[0].keys()
    save_enhancer(model, tmp_path / "weights.pt", cfg)
    loaded = load_enhancer(tmp_path / "weights.pt")
    assert loaded.kind == "sci"
    assert np.array_equal(enhance_frames(model, frames), enhance_frames(loaded, frames))


@needs_weights
def test_enhance_stage_with_imported_sci(tmp_path):
    import json

    from rich.console import Console
    from videofix import make_video_dataset

    from dlkdd.pipeline.engine.run import execute
    from dlkdd.pipeline.stages.table import pipeline_graph
    videos = make_video_dataset(tmp_path / "videos", classes=2, train=2, test=1, frames=8)
    cfg = Config()
    for k, v in {"data.root": str(videos), "data.frames": 4, "data.short_side": 32, "data.crop": 24,
                 "enhancer.kind": "sci", "enhancer.mode": "import", "enhancer.weights": str(WEIGHTS / "medium.pt"),
                 "enhance.workers": 0}.items():
        set_value(cfg, k, v)
    validate(cfg)
    ran = execute(pipeline_graph(cfg, tmp_path / "cache"), "enhance", "cpu", Console(quiet=True))
    assert ran == ["enhancer", "enhance"]
    clips = json.loads((tmp_path / "cache" / "clips" / "index.json").read_text())["clips"]
    assert all(c["mean_enhanced"] > 1.5 * c["mean_original"] for c in clips)
