import json
from pathlib import Path

import pytest
import torch

from dlkdd import models
from dlkdd.models.bert_head import TemporalBERTHead
from dlkdd.models.profile import count_params, gflops_per_clip

FIXTURE = "torchvision_video_resnet_state_dicts.json"
TORCHVISION_NAMES = ("r2plus1d_18", "r3d_18", "mc3_18")


def _fixture() -> dict:
    here = Path(__file__).resolve()
    for path in (here.parents[2] / "shared/fixtures" / FIXTURE, here.parent / "fixtures" / FIXTURE):
        if path.exists():
            return json.loads(path.read_text())["models"]
    raise FileNotFoundError(FIXTURE)  # the copy in tests/fixtures/ is part of the repo


def _entries(model: torch.nn.Module) -> list:
    return [[k, list(v.shape), str(v.dtype).removeprefix("torch.")]
            for k, v in model.state_dict().items()]


@pytest.mark.parametrize("name", models.names())
def test_forward_backward(name):
    torch.manual_seed(0)
    model = models.build(name, num_classes=5)
    # Full-width models get a smaller clip: the check is about wiring, not about scale.
    clip = (2, 3, 4, 16, 16) if name.split("_")[1] in ("18", "34") else (2, 3, 8, 32, 32)
    logits = model(torch.randn(*clip))
    assert logits.shape == (2, 5)
    assert torch.isfinite(logits).all()
    logits.logsumexp(dim=1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.features(torch.randn(*clip)).shape == (2, model.feature_dim)


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_state_dict_matches_torchvision(name):
    expected = _fixture()[name]
    model = models.build(name, num_classes=400)
    assert _entries(model) == expected["state_dict"]
    assert count_params(model) == expected["params"]


def test_small_variants_are_the_same_classes():
    small, full = models.build("mc3_small", 3), models.build("mc3_18", 3)
    assert type(small) is type(full)
    keys = [k for k, _ in small.state_dict().items()]
    assert keys[0] == "stem.0.weight" and "layer2.0.conv1.0.weight" in keys
    # MC3: 3x3x3 in the stem and layer1, 1x3x3 afterwards, as in the full model.
    assert small.layer1[0].conv1[0].kernel_size == (3, 3, 3)
    assert small.layer2[0].conv1[0].kernel_size == (1, 3, 3)
    assert small.stem[0].out_channels == 16
    assert models.build("r2plus1d_tiny", 3).stem[0].out_channels == round(45 * 8 / 64)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="r3d_tiny"):
        models.build("resnet50", 3)


def test_pretrained_reinitialises_fc_on_new_class_count(tmp_path):
    torch.manual_seed(0)
    source = models.build("r2plus1d_tiny", 400)
    path = tmp_path / "kinetics.pth"
    torch.save(source.state_dict(), path)
    model = models.build("r2plus1d_tiny", 11, pretrained=str(path))
    assert model.pretrained_note == "fc re-initialised: 400 -> 11 classes"
    assert torch.equal(model.layer3[0].conv1[0][0].weight, source.layer3[0].conv1[0][0].weight)
    assert torch.equal(model.stem[1].running_var, source.stem[1].running_var)
    assert model.fc.weight.shape == (11, 64)


def test_pretrained_same_classes_and_checkpoint_dict(tmp_path):
    source = models.build("r3d_tiny", 7)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": source.state_dict(), "epoch": 3}, path)
    model = models.build("r3d_tiny", 7, pretrained=str(path))
    assert model.pretrained_note == f"loaded all {len(source.state_dict())} tensors"
    assert torch.equal(model.fc.weight, source.fc.weight)
    assert models.build("r3d_tiny", 7).pretrained_note is None


def test_pretrained_into_bert_variant_keeps_fresh_head(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(models.build("r2plus1d_small", 400).state_dict(), path)
    model = models.build("r2plus1d_small_bert", 11, pretrained=str(path))
    assert "fc re-initialised: 400 -> 11" in model.pretrained_note
    assert "BERT head initialised fresh" in model.pretrained_note


def test_pretrained_shape_mismatch_names_key(tmp_path):
    state = models.build("mc3_tiny", 400).state_dict()
    state["layer2.0.conv1.0.weight"] = torch.zeros(16, 8, 3, 3, 3)  # mc3 wants 1x3x3 here
    path = tmp_path / "tampered.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"tampered\.pth.*layer2\.0\.conv1\.0\.weight") as err:
        models.build("mc3_tiny", 11, pretrained=str(path))
    assert "(16, 8, 3, 3, 3)" in str(err.value) and "(16, 8, 1, 3, 3)" in str(err.value)


def test_pretrained_other_width_is_an_error(tmp_path):
    path = tmp_path / "tiny.pth"
    torch.save(models.build("r3d_tiny", 400).state_dict(), path)
    with pytest.raises(ValueError, match="stem.0.weight"):
        models.build("r3d_small", 400, pretrained=str(path))


@pytest.mark.parametrize("frames", [1, 3, 16])
def test_bert_variant_handles_any_clip_length(frames):
    model = models.build("r2plus1d_small_bert", 4).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, frames, 24, 24)).shape == (1, 4)


def test_bert_head_stretches_positions_beyond_max_len():
    head = TemporalBERTHead(32, max_len=8).eval()
    with torch.no_grad():
        assert head(torch.randn(2, 20, 32)).shape == (2, 32)
        assert head(torch.randn(2, 3, 32)).shape == (2, 32)


def test_profile():
    small, tiny = models.build("r2plus1d_small", 11), models.build("r3d_tiny", 11)
    assert count_params(small) == sum(p.numel() for p in small.parameters())
    small.train()
    g_small, g_tiny = gflops_per_clip(small, 16, 56, 56), gflops_per_clip(tiny, 16, 56, 56)
    assert small.training  # the mode is restored
    assert 0 < g_tiny < g_small
    bert = models.build("r2plus1d_small_bert", 11)
    assert gflops_per_clip(bert, 16, 56, 56) > g_small  # attention is counted


def test_profile_matches_known_full_size_cost():
    # torchvision lists r2plus1d_18 at 40.52 G multiply-adds per 16x112x112 clip.
    # On the meta device the forward pass computes shapes only: free at full size.
    with torch.device("meta"):
        model = models.build("r2plus1d_18", 400)
    assert gflops_per_clip(model, 16, 112, 112) == pytest.approx(2 * 40.52, rel=0.01)
