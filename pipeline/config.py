"""Typed configuration: one dataclass section per stage, every value commented.

Defaults suit the bundled sample (`data/sample`) on a 2-core CPU. A TOML file
(`--config`) and repeatable `--set section.key=value` overrides are applied on
top, type-checked; unknown keys and bad values are one-line `ConfigError`s.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_type_hints

from ..errors import UserError
from .names import META
from .published import NAMES, PRETRAIN, check_source

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class ConfigError(UserError, ValueError):
    """A user mistake in a config file or a --set override (one line)."""


@dataclass
class DataConfig:
    root: str = ""  # dataset root; "" means the bundled sample (set by --data)
    format: str = "auto"  # split-list format: auto | arid | arid15 | mmaction | folders
    dataset: str = ""  # the real set a preset is written for: "" (any folder) | arid | arid15 | dark48; checked
    #   before any stage: its split lists, in its format, and its class names (configs/README.md)
    train_list: str = "splits/train.txt"  # train split list, relative to root (ignored for folders)
    test_list: str = "splits/test.txt"  # test split list, relative to root (ignored for folders)
    split: int = 1  # which of the dataset's splits: "{split}" in train_list / test_list becomes it (ARID: 1, 2, 3)
    test_fraction: float = 0.25  # folders format only: share of each class held out for test
    val_fraction: float = 0.2  # share of each class of the train split held out for validation (stable hash)
    val_list: str = ""  # explicit validation list, relative to root: videos of the train list ("" = val_fraction)
    val_group: str = "auto"  # val_fraction holds out whole groups of near-duplicate clips: auto (the format's
    #   rule: ARID's Class_A_B by Class_A, a Dark-48 / MMAction <youtube-id>_N by the id; folders: none) |
    #   none (each video alone) | a regex on the file name: its first group (or the match) names the group
    frames: int = 8  # T: frames per clip. Sample, baseline, 5 seeds, validation top-1 at the last epoch:
    #                  68.1 +- 5.8 with 8, 62.2 +- 3.8 with 16 (which also doubles every model's cost)
    clips_per_video: int = 2  # train clips per video, at segment offsets (c + 0.5) / n; each epoch draws one
    test_clips: int = 2  # clips cut from each validation and test video, same offsets rule (multi-view averages them)
    short_side: int = 64  # frames are resized so their short side is this many pixels
    max_long_side: int = 0  # also cap the long side (0 = keep aspect ratio only)
    crop: int = 32  # views are crops resized to crop x crop pixels (the sample: 64 -> 32 keeps motion, 3x cheaper)
    views: int = 4  # V: view 0 is the centre crop, 1..V-1 seeded random crops and flips
    min_scale: float = 0.7  # smallest crop side of a random view, as a share of the short side
    view_seed: int = 0  # seed of the views; any process recomputes the same views from it
    normalize: str = "stream"  # what standardises every model's inputs (the mean/std travel in its meta.json):
    #   stream (each stream, original / enhanced, with its own train clips' statistics; registered weights with
    #   theirs) | source (the pretrained source's statistics for both streams; random weights: the original
    #   stream's) | none (pixel / 255). The old switch reads true as stream, false as none.
    #   Default stream, chosen on validation (sample, `study --chain --seeds 0-4`, docs/results.md): student
    #   90.0 +- 5.1; source 82.2 +- 4.7, -7.8 points [-13.4, -2.1] against stream; none 88.9 +- 2.8, -1.1 [-5.7, +3.5]
    skip_missing: bool = False  # listed videos not on disk: go on without them (errors.json) instead of failing


@dataclass
class EnhancerConfig:
    kind: str = "zero_dce++"  # zero_dce | zero_dce++ | sci (MIT licence, 258 parameters) | gamma | none
    mode: str = "fit"  # fit (from scratch) | finetune (from weights) | import (weights unchanged)
    weights: str = ""  # authors'-format .pth for finetune/import (e.g. ZeroDCE_Epoch99.pth)
    scale_factor: int = 1  # zero_dce++ only: estimate the curve at 1/s resolution
    gamma: float = 2.2  # gamma only: out = 255 * (in / 255) ** (1 / gamma)
    init: str = "he"  # he (trains the whole curve network in a short fit) | authors (N(0, 0.02): needs ~200 epochs)
    steps: int = 200  # fitting steps (Adam, cosine-decayed lr) on random crops of training frames
    batch_size: int = 4  # crops per fitting step
    crop: int = 64  # side of a fitting crop, pixels: several 16x16 exposure patches per crop, so the curve
    #                 learns to lift dark regions more than bright ones (32 px crops fit a near-global curve)
    frames_per_video: int = 4  # frames taken from each training video for fitting
    lr: float = 3e-3  # peak Adam learning rate (authors: 1e-4 over 200 epochs; ours fits in seconds)
    weight_decay: float = 1e-4  # Adam weight decay (authors' value)
    grad_clip: float = 0.1  # gradient-norm clip (authors' value)
    exposure: float = 0.6  # E: target mean brightness of 16x16 patches
    w_spa: float = 1.0  # weight of the spatial-consistency loss
    w_exp: float = 10.0  # weight of the exposure loss
    w_col: float = 5.0  # weight of the colour-constancy loss
    w_tv: float = 200.0  # weight of illumination smoothness. zero_dce / zero_dce++ default to their authors'
    #   200 / 1600, set for 512 px images, times (crop / 512)^2 (the same smoothness on our crops: 3.125 / 25
    #   at crop 64; measured: 1600 collapses the ++ fit to one global curve); a value set in a file or --set wins
    seed: int = 0  # seed of crop sampling and initialisation
    reference: str = ""  # authors'-format .pth to compare the fit against in the quality report (optional)


@dataclass
class EnhanceConfig:
    shard_size: int = 256  # clips per HDF5 shard
    batch_frames: str | int = "auto"  # frames per enhancer forward pass: auto (8 on a CPU, where larger batches
    #   are slower: measured; on CUDA as many as a quarter of the device's memory holds, probed once) | N
    workers: str | int = "auto"  # auto | 0 (this process, no dask) | N (a LocalCluster of N workers, forced).
    #   auto: this process unless the cores give a LocalCluster 2+ workers ((cores - 1) // threads_per_worker) and the
    #   work left outlasts cluster_after; one worker beside this process only loses (sample, zero_dce++, 2 cores:
    #   the dask path 62.2 s vs 27.8 s in this process, issue 22, idle; benchmarks/enhance_paths.py measures it)
    threads_per_worker: int = 2  # torch threads of a worker (and of this process): in the fingerprint, as float
    #                              sums depend on it (zero_dce++ shards made with 1 and 2 threads differ)
    cluster_after: float = 5.0  # start the LocalCluster only once the work left would take this many
    #                             seconds in this process (its start-up, measured: ~5 s); 0 = at once
    scheduler: str = ""  # address of an existing dask scheduler ("" = start a LocalCluster)
    compression: str = "none"  # none | lz4 (lz4 needs hdf5plugin); gzip/lzf read 10-20x slower
    precision: str = "fp32"  # fp32 | bf16 | fp16: the enhancer's arithmetic, the same on every device
    #                          (CPU and GPU give the same shards; fp32 turns TF32 off on CUDA)
    strict: bool = False  # fail on the first unreadable video instead of reporting it


@dataclass
class Schedule:
    """How a model is trained: what the teacher, the student and the pretraining share."""
    epochs: int = 30  # passes over the train split
    batch_size: int = 8  # clips per optimisation step (small data: more steps per epoch)
    optimizer: str = "adamw"  # adamw | sgd
    lr: float = 3e-3  # peak learning rate, after warm-up
    weight_decay: float = 1e-4  # decoupled (AdamW) or L2 (SGD) weight decay
    momentum: float = 0.9  # SGD momentum
    warmup_epochs: float = 1.0  # linear warm-up, then cosine decay to zero
    backbone_lr_mult: float = 1.0  # every layer but the classifier (fc, BERT head) learns at lr x this: 1 (one
    #   rate) from scratch, where nothing is pretrained; < 1 to fine-tune published weights (configs/: 0.1)
    grad_clip: float = 5.0  # gradient-norm clip (0 = off)
    num_workers: str | int = "auto"  # DataLoader worker processes: auto (cores - 1, at most 8; 0 when a pass
    #   reads under 128 MiB, where starting workers costs more than it saves: training/loaders.py) | N
    compile: bool = False  # torch.compile the model a train step runs (speed only; needs a C++ compiler on the
    #   CPU, where it only adds start-up time on the sample's small models: off by default)
    channels_last: bool = False  # weights and inputs in channels_last_3d memory (speed only; for CUDA, where it
    #   can be faster: measure first; on the CPU an r2plus1d_small step measured 5-15 % slower with it)
    keep: str = "last"  # last | best (best validation-split top-1, evaluated each epoch; never test)
    seed: int = 0  # seed of initialisation, shuffling and view draws


@dataclass
class TrainConfig(Schedule):
    model: str = "r2plus1d_small"  # a name from models.build (see `dlkdd models`)
    # "" random | "pretrain" (the pretrain stage's weights for this model; random when there is no
    # pretraining data) | kinetics400 (r2plus1d_18, r3d_18, mc3_18) | ig65m, ig65m_kinetics (r2plus1d_34) | a file
    pretrained: str = "pretrain"  # where the weights start (see above); a file is a torchvision-format state dict
    dropout: float = 0.0  # dropout before the classifier
    label_smoothing: float = 0.0  # label smoothing of the cross-entropy term


@dataclass
class TeacherConfig(TrainConfig):
    model: str = "r2plus1d_small"  # the larger of the two sample models
    input: str = "enhanced"  # enhanced (DL-KDD) | original: the dual-light ablation's teacher on dark clips
    ensemble: int = 1  # K teachers (seeds seed + 1000 k) whose logits soft-labels averages; 1: one teacher, as
    #   the paper trains, and K members cost K trainings. At 1 the stages leave the key out of their params


@dataclass
class SoftLabelsConfig:
    batch_size: int = 32  # clips per teacher forward pass


@dataclass
class StudentConfig(TrainConfig):
    model: str = "r3d_tiny"  # the lightweight student
    # Sample, validation top-1, 5 seeds (`study --split val`, alpha 0.5): 30 epochs student 76.7,
    # baseline 79.4; 60 epochs student 87.8, baseline 77.8; (alpha 0.9) 90: student 89.4, baseline 81.7
    epochs: int = 60  # passes over the train split, of the student and the baseline (they share this section)
    alpha: float = 0.5  # weight of the distillation term (0 = plain cross-entropy)
    temperature: float = 4.0  # T: softmax temperature of the distillation term


@dataclass
class PretrainConfig(Schedule):
    """Normal-light pretraining of the teacher's and the student's architectures (stage `pretrain`);
    the training keys are `Schedule`'s, its validation split is carved from root's train split."""
    root: str = ""  # labelled normal-light dataset, relative to the current folder; "" = the dataset's own
    #                 day/ folder if it has one (the bundled sample does), else none; "none" = no pretraining
    format: str = "auto"  # split-list format of root: auto | arid | arid15 | mmaction | folders
    train_list: str = "splits/train.txt"  # train split list, relative to root (ignored for folders)
    test_list: str = "splits/test.txt"  # test split list, relative to root (ignored for folders)
    test_fraction: float = 0.25  # folders format only: share of each class held out for test
    epochs: int = 10  # passes over root's train split


@dataclass
class EvaluateConfig:
    crops: int = 3  # multi-view evaluation: spatial crops per clip (left/centre/right)
    crop_scale: float = 0.85  # multi-view crops: box side as a share of the short side (< 1: the boxes differ)
    batch_size: int = 32  # clips per forward pass
    num_workers: str | int = "auto"  # DataLoader worker processes reading the test clips: as [teacher]'s


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    enhancer: EnhancerConfig = field(default_factory=EnhancerConfig)
    enhance: EnhanceConfig = field(default_factory=EnhanceConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    soft_labels: SoftLabelsConfig = field(default_factory=SoftLabelsConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    def get(self, dotted: str) -> Any:
        section, key = _split_key(self, dotted)
        return getattr(section, key)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


SECTIONS = [f.name for f in dataclasses.fields(Config)]


# [pretrain]'s dataset settings, which stand in for [data]'s when the pretrain stage decodes
PRETRAIN_DATA_KEYS = ("pretrain.root", "pretrain.format", "pretrain.train_list", "pretrain.test_list",
                      "pretrain.test_fraction")


def pretrain_data(cfg: Config) -> Config:
    """The config with `[pretrain]`'s dataset as `[data]` (clip geometry and views unchanged) and no
    enhancer: what decoding and training read for the normal-light footage."""
    p = cfg.pretrain
    data = dataclasses.replace(cfg.data, root=p.root, format=p.format, train_list=p.train_list,
                               test_list=p.test_list, test_fraction=p.test_fraction, dataset="")
    return dataclasses.replace(cfg, data=data, enhancer=dataclasses.replace(cfg.enhancer, kind="none"))


def _split_key(cfg: Config, dotted: str):
    if dotted.count(".") != 1:
        raise ConfigError(f"config key {dotted!r}: expected section.key (sections: {', '.join(SECTIONS)})")
    name, key = dotted.split(".")
    name = name.replace("-", "_")
    if name not in SECTIONS:
        raise ConfigError(f"unknown config section {name!r} in {dotted!r} (sections: {', '.join(SECTIONS)})")
    section = getattr(cfg, name)
    if key not in {f.name for f in dataclasses.fields(section)}:
        raise ConfigError(f"unknown config key {dotted!r}")
    return section, key


def _coerce(dotted: str, value: Any, typ: type) -> Any:
    """Convert a TOML value or a --set string to the field's type, or raise ConfigError."""
    if len(get_args(typ)) > 1:  # str | int (enhance.workers: "auto" or a count): a number where it is one
        value = value.strip() if isinstance(value, str) else value
        for option in sorted(get_args(typ), key=lambda t: t is str):
            try:
                return _coerce(dotted, value, option)
            except ConfigError:
                pass
        raise ConfigError(f"{dotted}: expected {' or '.join(t.__name__ for t in get_args(typ))}, got {value!r}")
    if isinstance(value, str) and typ is not str:
        text = value.strip()
        if typ is bool:
            low = text.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ConfigError(f"{dotted}: expected true or false, got {value!r}")
        try:
            return typ(text)
        except ValueError:
            raise ConfigError(f"{dotted}: expected {typ.__name__}, got {value!r}") from None
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ is bool and not isinstance(value, bool):
        raise ConfigError(f"{dotted}: expected true or false, got {value!r}")
    if typ is int and isinstance(value, bool):
        raise ConfigError(f"{dotted}: expected int, got {value!r}")
    if not isinstance(value, typ):
        raise ConfigError(f"{dotted}: expected {typ.__name__}, got {type(value).__name__} {value!r}")
    return value


NORMALIZE_MODES = ("stream", "source", "none")  # data.normalize
LEGACY_NORMALIZE = {"true": "stream", "false": "none"}  # data.normalize was a switch: its old values


def normalize_mode(value: Any) -> str:
    """data.normalize as a mode; the old switch's booleans read as theirs (true: stream, false: none)."""
    return LEGACY_NORMALIZE[str(value).lower()] if isinstance(value, bool) else value


def _normalize_value(dotted: str, value: Any) -> str:
    text = str(value).strip().lower() if isinstance(value, (str, bool)) else None
    if text in NORMALIZE_MODES:
        return text
    if text in LEGACY_NORMALIZE:
        return LEGACY_NORMALIZE[text]
    raise ConfigError(f"{dotted}: {value!r} is not one of {', '.join(NORMALIZE_MODES)} (true and false, "
                      f"the old switch, read as stream and none)")


def set_value(cfg: Config, dotted: str, value: Any) -> None:
    section, key = _split_key(cfg, dotted)
    typ = get_type_hints(type(section))[key]
    if section is cfg.data and key == "normalize":
        value = _normalize_value(dotted, value)
    setattr(section, key, _coerce(dotted, value, typ))
    explicit_keys(cfg).add(f"{dotted.split('.')[0].replace('-', '_')}.{key}")


def explicit_keys(cfg: Config) -> set[str]:
    """The keys a config file, --set or a command option gave a value ("section.key"): a default that
    follows another key (enhancer.w_tv follows enhancer.kind) never overrides one of these."""
    return cfg.__dict__.setdefault("_explicit", set())


def apply_overrides(cfg: Config, overrides: list[str]) -> None:
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, value = item.split("=", 1)
        set_value(cfg, key.strip(), value)


def load_toml(cfg: Config, path: Path) -> None:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    for name, table in doc.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: top-level key {name!r} must be a [section] table")
        for key, value in table.items():
            try:
                set_value(cfg, f"{name}.{key}", value)
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from None


CHOICES = {
    "data.format": ("auto", "arid", "arid15", "mmaction", "folders"),
    "data.dataset": ("", "arid", "arid15", "dark48"),  # datasets.expected.NAMES (a test keeps them equal)
    "data.normalize": NORMALIZE_MODES,
    "enhancer.mode": ("fit", "finetune", "import"),
    "enhancer.init": ("he", "authors"),
    "enhance.compression": ("none", "lz4"),
    "enhance.precision": ("fp32", "bf16", "fp16"),
    "teacher.optimizer": ("adamw", "sgd"),
    "teacher.input": ("enhanced", "original"),
    "student.optimizer": ("adamw", "sgd"),
    "teacher.keep": ("last", "best"),
    "student.keep": ("last", "best"),
    "pretrain.format": ("auto", "arid", "arid15", "mmaction", "folders"),
    "pretrain.optimizer": ("adamw", "sgd"),
    "pretrain.keep": ("last", "best"),
}
POSITIVE = (
    "data.frames", "data.clips_per_video", "data.test_clips", "data.short_side", "data.crop", "data.views",
    "data.split",
    "enhancer.steps", "enhancer.batch_size", "enhancer.crop", "enhancer.frames_per_video",
    "enhancer.scale_factor", "enhancer.gamma", "enhancer.exposure",
    "enhance.shard_size", "enhance.threads_per_worker",
    "teacher.epochs", "teacher.batch_size", "teacher.lr",
    "soft_labels.batch_size",
    "student.epochs", "student.batch_size", "student.lr", "student.temperature",
    "evaluate.crops", "evaluate.batch_size",
    "pretrain.epochs", "pretrain.batch_size", "pretrain.lr",
)
LOADER_WORKERS = ("teacher.num_workers", "student.num_workers", "pretrain.num_workers", "evaluate.num_workers")
NON_NEGATIVE = (
    "data.max_long_side", "enhance.cluster_after", "enhancer.lr", "enhancer.weight_decay",
    "enhancer.grad_clip",
    "teacher.weight_decay", "teacher.warmup_epochs", "teacher.grad_clip",
    "student.weight_decay", "student.warmup_epochs", "student.grad_clip",
    "teacher.momentum", "student.momentum",
    "teacher.backbone_lr_mult", "student.backbone_lr_mult", "pretrain.backbone_lr_mult",
    "pretrain.weight_decay", "pretrain.warmup_epochs", "pretrain.grad_clip",
    "pretrain.momentum",
)


def validate(cfg: Config) -> None:
    """Range and choice checks that types alone cannot express. enhancer.kind, and the weights
    file a kind needs, are `pipeline.enhancers.check`'s: kinds register in a package above this one."""
    for key, choices in CHOICES.items():
        if cfg.get(key) not in choices:
            raise ConfigError(f"{key}: {cfg.get(key)!r} is not one of {', '.join(choices)}")
    for key in POSITIVE:
        if cfg.get(key) <= 0:
            raise ConfigError(f"{key}: must be > 0, got {cfg.get(key)!r}")
    for key in NON_NEGATIVE:
        if cfg.get(key) < 0:
            raise ConfigError(f"{key}: must be >= 0, got {cfg.get(key)!r}")
    for key in LOADER_WORKERS:
        n = cfg.get(key)
        if (isinstance(n, str) and n != "auto") or (isinstance(n, int) and n < 0):
            raise ConfigError(f"{key}: {n!r} is not auto or a number of workers (>= 0)")
    workers = cfg.enhance.workers
    if isinstance(workers, str) and workers != "auto":
        raise ConfigError(f"enhance.workers: {workers!r} is not auto or a number of workers")
    if isinstance(workers, int) and workers < 0:
        raise ConfigError(f"enhance.workers: must be >= 0, got {workers!r}")
    frames = cfg.enhance.batch_frames
    if (isinstance(frames, str) and frames != "auto") or (isinstance(frames, int) and frames < 1):
        raise ConfigError(f"enhance.batch_frames: {frames!r} is not auto or a number of frames (>= 1)")
    if not 0.0 < cfg.data.min_scale <= 1.0:
        raise ConfigError(f"data.min_scale: must be in (0, 1], got {cfg.data.min_scale!r}")
    if not 0.0 < cfg.data.test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction: must be in (0, 1), got {cfg.data.test_fraction!r}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction: must be in [0, 1), got {cfg.data.val_fraction!r}")
    if not 0.0 < cfg.evaluate.crop_scale <= 1.0:
        raise ConfigError(f"evaluate.crop_scale: must be in (0, 1], got {cfg.evaluate.crop_scale!r}")
    for section in ("teacher", "student"):
        train = getattr(cfg, section)
        if not 0.0 <= train.dropout < 1.0:
            raise ConfigError(f"{section}.dropout: must be in [0, 1), got {train.dropout!r}")
        if not 0.0 <= train.label_smoothing < 1.0:
            raise ConfigError(f"{section}.label_smoothing: must be in [0, 1), got {train.label_smoothing!r}")
        if train.keep == "best" and not has_validation(cfg):
            raise ConfigError(f"{section}.keep = best: the validation split is empty (data.val_fraction = 0, "
                              f"no data.val_list); epochs are never selected on test")
    k = cfg.teacher.ensemble
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"teacher.ensemble: must be an integer >= 1 (the number of teachers), got {k!r}")
    if not 0.0 <= cfg.student.alpha <= 1.0:
        raise ConfigError(f"student.alpha: must be in [0, 1], got {cfg.student.alpha!r}")
    if cfg.data.crop > cfg.data.short_side:
        raise ConfigError(
            f"data.crop: {cfg.data.crop} is larger than data.short_side {cfg.data.short_side}")
    for section in ("teacher", "student"):  # pretrain trains these two models on the same clips
        model = getattr(cfg, section).model
        if model.endswith("_bert") and cfg.data.frames < BERT_MIN_FRAMES:
            raise ConfigError(
                f"{section}.model = {model!r}: the BERT head needs data.frames >= {BERT_MIN_FRAMES}, got "
                f"{cfg.data.frames} (the backbone halves time three times: {max(1, cfg.data.frames // 8)} step(s) "
                f"would be left to attend over); use {model[:-len('_bert')]!r} or more frames")
    if not 0.0 < cfg.pretrain.test_fraction < 1.0:
        raise ConfigError(f"pretrain.test_fraction: must be in (0, 1), got {cfg.pretrain.test_fraction!r}")
    for section in ("teacher", "student"):
        train = getattr(cfg, section)
        problem = check_source(train.pretrained, train.model)
        if problem:
            raise ConfigError(f"{section}.pretrained: {problem}")
        if cfg.data.normalize == "source" and train.pretrained not in ("", PRETRAIN, *NAMES) \
                and source_file_statistics(train.pretrained) is None:
            raise ConfigError(f"{section}.pretrained: {train.pretrained}: no input statistics come with this file "
                              f"(no {META} with \"normalize\" beside it), which data.normalize = \"source\" "
                              f"standardises with; set data.normalize = \"stream\" or \"none\"")


def source_file_statistics(path: str) -> dict | None:
    """The input statistics a weights file was trained with: the "normalize" of the dlkdd meta.json
    beside it (as a trained model's folder holds them), or None without one."""
    try:
        meta = json.loads((Path(path).parent / META).read_text())
    except (OSError, ValueError):
        return None
    stats = meta.get("normalize") if isinstance(meta, dict) else None
    return stats if isinstance(stats, dict) and stats else None


def has_validation(cfg: Config) -> bool:
    """Whether a validation split is carved from train (it serves keep = best and every tuned default)."""
    return bool(cfg.data.val_list) or cfg.data.val_fraction > 0


# A `_bert` model's head attends over the backbone's time steps, frames / 8 of them (layer2..4 halve
# time): at 16 frames 2 steps, at 8 a single one, over which attention is the identity.
BERT_MIN_FRAMES = 16
SPLIT_FIELD = "{split}"  # in data.train_list / data.test_list: replaced by data.split


def resolve_split(cfg: Config) -> None:
    """Write data.split into the split lists' names ("list_cvt/ARID_split{split}_train.txt"), so the
    lists a stage reads, and its fingerprint, are the split's; a split asked of lists that have no
    "{split}" would silently read split 1's, so that is refused."""
    d = cfg.data
    if d.split < 1:
        raise ConfigError(f"data.split: must be >= 1, got {d.split!r}")
    if d.split != 1 and SPLIT_FIELD not in d.train_list + d.test_list:
        raise ConfigError(f"data.split = {d.split}: data.train_list ({d.train_list!r}) and data.test_list "
                          f"({d.test_list!r}) hold no {SPLIT_FIELD} to put it in")
    d.train_list = d.train_list.replace(SPLIT_FIELD, str(d.split))
    d.test_list = d.test_list.replace(SPLIT_FIELD, str(d.split))


def build_config(config_file: Path | None = None, overrides: list[str] = ()) -> Config:
    cfg = Config()
    if config_file is not None:
        load_toml(cfg, Path(config_file))
    apply_overrides(cfg, list(overrides))
    resolve_split(cfg)
    validate(cfg)
    return cfg
