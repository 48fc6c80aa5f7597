"""The presets in configs/ and the fine-tuning recipe they need: each preset loads and validates, every
value carries its reason, `data.split` picks the split's lists, a folder that is not the preset's dataset
stops before any stage with one line, the backbone learns at `backbone_lr_mult` x the head's rate, and the
BERT head is refused where T leaves it nothing to attend over."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from dlkdd import models
from dlkdd.cli import cli
from dlkdd.pipeline.config import CHOICES, ConfigError, build_config
from dlkdd.pipeline.datasets import expected
from dlkdd.pipeline.stages.run import resolve_config
from dlkdd.pipeline.training.optim import is_head, make_optimizer, param_groups

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
PRESETS = sorted(CONFIGS.glob("*.toml"))
SAMPLE = REPO / "data" / "sample"
GPU_KEYS = {"enhance.precision", "teacher.compile", "teacher.num_workers", "student.compile",
            "student.num_workers", "evaluate.num_workers"}


def flat(path: Path) -> dict:
    with open(path, "rb") as f:
        return {f"{s}.{k}": v for s, table in tomllib.load(f).items() for k, v in table.items()}


def test_the_four_presets_exist():
    assert [p.name for p in PRESETS] == ["arid-gpu.toml", "arid.toml", "arid15.toml", "dark48.toml"]


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_each_preset_loads_and_validates(path):
    cfg = resolve_config(path)
    assert cfg.data.dataset in expected.DATASETS
    assert (cfg.data.frames, cfg.data.short_side, cfg.data.crop) == (16, 128, 112)
    assert "{split}" not in cfg.data.train_list + cfg.data.test_list  # the split is written in
    assert cfg.data.format == expected.DATASETS[cfg.data.dataset].format
    assert cfg.teacher.pretrained and cfg.student.pretrained  # fine-tuning published weights
    assert 0 < cfg.student.backbone_lr_mult < 1 and cfg.teacher.warmup_epochs > 0
    assert cfg.pretrain.root == ""  # no normal-light stage: the published weights are the prior


@pytest.mark.parametrize("path", PRESETS, ids=lambda p: p.name)
def test_every_value_carries_a_comment_with_its_reason(path):
    values = [line for line in path.read_text().splitlines() if re.match(r"^\w+\s*=", line)]
    assert len(values) >= 40
    bare = [line for line in values if "#" not in line or len(line.split("#", 1)[1].strip()) < 10]
    assert not bare, bare


def test_the_gpu_preset_is_arid_plus_the_gpu_keys():
    arid, gpu = flat(CONFIGS / "arid.toml"), flat(CONFIGS / "arid-gpu.toml")
    differ = {k for k in arid.keys() | gpu.keys() if arid.get(k) != gpu.get(k)}
    assert differ == GPU_KEYS
    assert gpu["enhance.precision"] == "bf16" and gpu["teacher.compile"] is True and gpu["student.compile"] is True


@pytest.mark.parametrize("name", ["arid15.toml", "dark48.toml"])
def test_the_other_presets_share_arids_recipe(name):
    arid, other = flat(CONFIGS / "arid.toml"), flat(CONFIGS / name)
    recipe = lambda d: {k: v for k, v in d.items() if not k.startswith("data.")}  # noqa: E731
    assert recipe(other) == recipe(arid)


def test_dataset_choices_are_the_known_datasets():
    assert CHOICES["data.dataset"] == expected.NAMES


def test_split_key_names_the_splits_lists():
    cfg = build_config(CONFIGS / "arid.toml", ["data.split=3"])
    assert (cfg.data.train_list, cfg.data.test_list) == ("list_cvt/ARID_split3_train.txt",
                                                        "list_cvt/ARID_split3_test.txt")
    with pytest.raises(ConfigError, match=r"data.split = 2: .*hold no \{split\}"):
        build_config(None, ["data.split=2"])  # the default lists have no split in their names
    with pytest.raises(ConfigError, match="data.split: must be >= 1"):
        build_config(CONFIGS / "arid.toml", ["data.split=0"])


# ------------------------------------------------------------------ a folder that is not the dataset

def write_arid_lists(root: Path, rows: dict[str, list[str]], splits=(1,)) -> Path:
    """ARID-format lists (`idx<TAB>label<TAB>rel`) for `splits`, and an empty file per listed video."""
    for k in splits:
        for part, rels in rows.items():
            path = root / "list_cvt" / f"ARID_split{k}_{part}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            labels = {name: i for i, name in enumerate(sorted({r.split("/")[0] for v in rows.values() for r in v}))}
            path.write_text("".join(f"{i}\t{labels[r.split('/')[0]]}\t{r}\n" for i, r in enumerate(rels)))
    for rels in rows.values():
        for rel in rels:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).touch()
    return root


ROWS = {"train": ["Drink/Drink_1_1.avi", "Drink/Drink_2_1.avi", "Run/Run_1_1.avi", "Run/Run_2_1.avi"],
        "test": ["Drink/Drink_3_1.avi", "Run/Run_3_1.avi"]}


def stops_before_any_stage(tmp_path, data: Path, *extra, preset="arid.toml") -> str:
    cache = tmp_path / "cache"
    result = CliRunner().invoke(cli, ["--config", str(CONFIGS / preset), "--data", str(data), "--cache", str(cache),
                                      *extra, "run"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert "Traceback" not in result.output and not cache.exists()  # nothing written to the cache
    return lines[0]


def test_a_folder_without_arids_lists(tmp_path):
    line = stops_before_any_stage(tmp_path, SAMPLE)  # the bundled sample: splits/, not list_cvt/
    assert "list_cvt/ARID_split1_train.txt: train list of split 1 not found" in line
    assert "expects ARID v1.0 (format arid: 0<TAB>0<TAB>Drink/Drink_1_1.avi)" in line


def test_other_class_names(tmp_path):
    rows = {part: [r.replace("Run", "Dance") for r in rels] for part, rels in ROWS.items()}
    line = stops_before_any_stage(tmp_path, write_arid_lists(tmp_path / "d", rows))
    assert "class names Dance are not ARID v1.0's (Drink, Jump, Pick" in line and "format arid" in line


def test_a_split_the_folder_does_not_have(tmp_path):
    root = write_arid_lists(tmp_path / "d", ROWS, splits=(1,))
    line = stops_before_any_stage(tmp_path, root, "--set", "data.split=2")
    assert "ARID_split2_train.txt: train list of split 2 not found" in line and "ARID v1.0" in line
    line = stops_before_any_stage(tmp_path, root, "--set", "data.split=4")
    assert "data.split = 4: ARID v1.0 has splits 1, 2, 3" in line


def test_lists_in_another_format(tmp_path):
    root = tmp_path / "d"
    write_arid_lists(root, ROWS)
    for part in ("train", "test"):  # MMAction lines under ARID's names
        (root / "list_cvt" / f"ARID_split1_{part}.txt").write_text("Drink/Drink_1_1.avi 0\n")
    line = stops_before_any_stage(tmp_path, root)
    assert "ARID_split1_train.txt:1: 'Drink/Drink_1_1.avi 0' is not a ARID v1.0 list line" in line


def test_dark48_preset_on_more_classes_than_dark48_has(tmp_path):
    root = tmp_path / "d"
    for part, clips in (("train", (1, 2)), ("test", (3,))):
        rels = [f"C{c:02d}/abcdefghijk_{n}.mp4" for c in range(49) for n in clips]
        for rel in rels:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).touch()
        labels = {f"C{c:02d}": c for c in range(49)}
        (root / f"dark48_{part}_list_videos.txt").write_text("".join(f"{r} {labels[r[:3]]}\n" for r in rels))
    line = stops_before_any_stage(tmp_path, root, preset="dark48.toml")
    assert "49 classes, Dark-48 has 48" in line


def test_the_check_is_off_without_a_dataset(tmp_path):
    root = write_arid_lists(tmp_path / "d", {part: [r.replace("Run", "Dance") for r in rels]
                                             for part, rels in ROWS.items()})
    cfg = build_config(CONFIGS / "arid.toml", ["data.dataset="])
    from dlkdd.pipeline.datasets.splits import read_dataset
    assert read_dataset(cfg.data, root).classes == ["Dance", "Drink"]


# ------------------------------------------------------------------ the fine-tuning recipe

def _cfg(**kw):
    return build_config(None, [f"teacher.{k}={v}" for k, v in kw.items()]).teacher


def test_head_and_backbone_groups():
    model = models.build("r2plus1d_small_bert", 4)
    groups = param_groups(model, _cfg(backbone_lr_mult=0.1, weight_decay=1e-4))
    head = [p for g in groups if g["head"] for p in g["params"]]
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].split(".")[0] for p in head} == {"fc", "bert"}
    assert all(g["lr_mult"] == (1.0 if g["head"] else 0.1) for g in groups)
    assert all(g["weight_decay"] == (1e-4 if all(p.ndim >= 2 for p in g["params"]) else 0.0) for g in groups)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert is_head("module.fc.weight") and is_head("_orig_mod.bert.cls") and is_head("module._orig_mod.fc.bias")
    assert not is_head("layer4.0.conv1.0.0.weight") and not is_head("module.layer1.0.conv1.0.weight")


@pytest.mark.parametrize("mult", [0.1, 0.0, 1.0])
def test_the_backbone_steps_at_its_share_of_the_schedules_rate(mult):
    model = models.build("r3d_tiny", 3)
    cfg = _cfg(optimizer="sgd", momentum=0, weight_decay=0, backbone_lr_mult=mult, lr=0.5)
    optimizer = make_optimizer(model, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    for group in optimizer.param_groups:  # what loop.train_one_epoch does each step
        group["lr"] = 0.25
    scaler = torch.amp.GradScaler("cuda", enabled=False)  # the loop steps through the (CPU: off) scaler
    scaler.step(optimizer)
    fc, conv = "fc.weight", "stem.0.weight"
    assert torch.allclose(before[fc] - model.state_dict()[fc], torch.full_like(before[fc], 0.25))
    assert torch.allclose(before[conv] - dict(model.named_parameters())[conv], torch.full_like(before[conv],
                                                                                                0.25 * mult))
    assert all(g["lr"] == 0.25 for g in optimizer.param_groups)  # between steps: the schedule's rate


def test_the_multiplier_survives_a_checkpoint():
    model = models.build("r3d_tiny", 3)
    cfg = _cfg(backbone_lr_mult=0.1)
    state = make_optimizer(model, cfg).state_dict()
    resumed = make_optimizer(model, _cfg(backbone_lr_mult=0.1))
    resumed.load_state_dict(state)
    assert sorted(g["lr_mult"] for g in resumed.param_groups) == [0.1, 0.1, 1.0, 1.0]
    assert all("scheduled_lr" not in g for g in state["param_groups"])


def test_a_fine_tuning_recipe_on_random_weights_is_warned_about():
    from dlkdd.pipeline.training.weights import Init, recipe_warning
    random, loaded = Init(""), Init("kinetics400", state={"fc.weight": torch.zeros(1)})
    warning = recipe_warning(random, _cfg(backbone_lr_mult=0.1, lr=3.125e-4))
    assert warning and "backbone_lr_mult = 0.1" in warning and "(3.13e-05)" in warning
    assert recipe_warning(loaded, _cfg(backbone_lr_mult=0.1)) is None  # pretrained: the recipe fits
    assert recipe_warning(random, _cfg(backbone_lr_mult=1)) is None  # from scratch, one rate


def test_backbone_lr_mult_must_not_be_negative():
    with pytest.raises(ConfigError, match="student.backbone_lr_mult: must be >= 0"):
        build_config(None, ["student.backbone_lr_mult=-0.1"])


def test_the_bert_head_needs_16_frames():
    with pytest.raises(ConfigError, match=r"teacher.model = 'r2plus1d_18_bert': the BERT head needs "
                                          r"data.frames >= 16, got 8 .*1 step"):
        build_config(None, ["teacher.model=r2plus1d_18_bert"])
    with pytest.raises(ConfigError, match="student.model = 'r2plus1d_small_bert'"):
        build_config(None, ["student.model=r2plus1d_small_bert", "data.frames=12"])
    cfg = build_config(None, ["student.model=r2plus1d_small_bert", "data.frames=16"])
    assert cfg.student.model == "r2plus1d_small_bert"


def test_a_bert_head_at_16_frames_attends_over_two_steps():
    model = models.build("r2plus1d_small_bert", 4).eval()
    seen = {}

    def steps(module, args, out):
        seen["steps"] = args[0].shape[1]
    model.bert.register_forward_hook(steps)
    with torch.no_grad():
        model(torch.randn(1, 3, 16, 32, 32))
    assert seen["steps"] == 2
