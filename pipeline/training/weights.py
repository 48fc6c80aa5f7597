"""Where a model's weights start: random, a state dict file, the `pretrain` stage, or a registered name.

`teacher.pretrained` / `student.pretrained` name the source; `initial_model` builds the
network from it, the one place teacher, baseline and student get their starting weights
(so baseline and student, built from the same student settings, start identical).

Registered names are published weights, downloaded once into torch's hub cache
(`torch.hub.get_dir()/checkpoints`) and checked against the sha256 prefix in their file
name, as torch.hub does. They carry the input normalisation they were trained with, as the
pretrain stage's weights and a file with a dlkdd meta.json do; `input_normalization` picks what a
training stage standardises with under `data.normalize` (stream | source | none).

Importing this module does not import torch (the CLI starts without it).
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ...errors import StageError, UserError, first_line
from ..config import normalize_mode, source_file_statistics
from ..engine.digest import sha256_of
from ..names import META, MODEL
from ..published import PRETRAIN, Published, check_source, pretraining_on, published

BASE_URL_ENV = "DLKDD_WEIGHTS_BASE_URL"  # serve the same file names from elsewhere (a mirror, tests)
HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")  # torch.hub's convention


class WeightsDownloadError(UserError, ValueError):
    """Published weights that cannot be downloaded or fail their hash check (one line)."""


def url_of(weights: Published) -> str:
    base = os.environ.get(BASE_URL_ENV)
    return base.rstrip("/") + "/" + weights.url.rsplit("/", 1)[1] if base else weights.url


def cached_file(url: str) -> Path:
    import torch  # deferred: the stage table imports this module, and `dlkdd status` no torch
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[1]


def download(url: str, console=None) -> Path:
    """The file at `url` in torch's hub cache: downloaded once (progress bar), sha256-prefix checked."""
    import torch  # deferred: as in `cached_file`
    dest = cached_file(url)
    match = HASH_IN_NAME.search(dest.name)
    if match is None:
        raise WeightsDownloadError(f"{url}: the file name carries no sha256 prefix to check")
    if dest.is_file():
        check_placed(dest, url, match.group(1))
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    if console is not None:
        console.print(f"  downloading {url} -> {dest}", markup=False, highlight=False)
    try:  # writes a temporary sibling and renames it only once the hash matched
        torch.hub.download_url_to_file(url, str(dest), hash_prefix=match.group(1), progress=True)
    except RuntimeError as e:
        if "invalid hash value" in str(e):
            raise WeightsDownloadError(f"{url}: refused: the download's sha256 does not start with "
                                       f"{match.group(1)} ({first_line(e)}); nothing was saved") from None
        raise
    except OSError as e:  # URLError, connection refused, timeouts, no route: all OSErrors
        reason = getattr(e, "reason", None) or e.strerror or type(e).__name__
        raise WeightsDownloadError(f"cannot download {url} ({reason}); download it by hand and place it "
                                   f"at {dest}") from None
    return dest


def check_placed(path: Path, url: str, prefix: str) -> None:
    """A file already in the weights folder (placed by hand on a node without network, or left by an
    older download) is loaded only if its sha256 starts with the prefix its registered name carries."""
    digest = sha256_of(path)
    if not digest.startswith(prefix):
        raise WeightsDownloadError(f"{path}: sha256 {digest[:16]}... does not start with {prefix}, the hash "
                                   f"of {url} (truncated or another file); not loaded: delete it to download "
                                   f"it again, or place the file from {url} there")


def fetch_registered(cfg, section: str, console=None) -> Path | None:
    """The registered weights `<section>.pretrained` names, downloaded or checked now; None for any
    other source. A run calls this before its first stage, so missing weights stop it at once."""
    weights = published(getattr(cfg, section).pretrained, getattr(cfg, section).model)
    return download(url_of(weights), console) if weights is not None else None


# --- resolving a source ------------------------------------------------------------------

@dataclass
class Init:
    """A resolved starting point: the state dict to load (None = random) and what travels with it."""
    source: str  # what the config said
    state: dict | None = None
    reinit_fc: bool = False  # the source's classes are not ours (by name): fresh classifier
    model_kwargs: dict = field(default_factory=dict)  # architecture options the weights need
    normalize: dict | None = None  # input statistics the weights were trained with (None: none known)
    note: str = "random initialisation"


def pretrain_dir(cache: Path, model: str) -> Path:
    """Where the pretrain stage keeps the weights it trained for `model`."""
    return Path(cache) / "pretrain" / model


def resolve(train_cfg, classes: list[str], cfg, cache: Path, console=None) -> Init:
    """The starting point `train_cfg.pretrained` names for `train_cfg.model` and our `classes`."""
    source, model = train_cfg.pretrained, train_cfg.model
    problem = check_source(source, model)
    if problem:
        raise StageError(f"pretrained = {source!r}: {problem}")
    if source == "" or (source == PRETRAIN and not pretraining_on(cfg)):
        return Init(source)
    if source == PRETRAIN:
        folder = pretrain_dir(cache, model)
        # its meta.json's statistics are the day footage's: data.normalize = source standardises
        # both streams with them, stream each stream with its own (`input_normalization`)
        return _from_trained(source, folder / MODEL, folder / META, classes)
    weights = published(source, model)
    if weights is not None:
        path = download(url_of(weights), console)
        return Init(source, _read(path), reinit_fc=True, model_kwargs=dict(weights.model_kwargs),
                    normalize=dict(weights.normalize), note=f"{source} weights ({path.name})")
    return _from_trained(source, Path(source), Path(source).parent / META, classes)


def _read(path: Path) -> dict:
    from ...models import read_state_dict  # deferred: models imports torch (see `cached_file`)
    return read_state_dict(str(path))


def _from_trained(source: str, path: Path, meta_path: Path, classes: list[str]) -> Init:
    """A state dict file; with a dlkdd meta.json beside it, its classes, options and normalisation."""
    if not path.is_file():
        raise StageError(f"{path}: pretrained weights missing" +
                         ("; run `dlkdd pretrain`" if source == PRETRAIN else ""))
    state = _read(path)
    meta = _read_meta(meta_path) if meta_path.is_file() else {}
    init = Init(source, state, model_kwargs=dict(meta.get("model_kwargs") or {}),
                normalize=meta.get("normalize"), note=f"weights of {path}")
    theirs = meta.get("classes")
    if theirs:
        init.state, init.reinit_fc = match_classes(state, list(theirs), list(classes))
    return init


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise StageError(f"{path}: unreadable ({first_line(e)})") from None
    return meta if isinstance(meta, dict) else {}


def match_classes(state: dict, theirs: list[str], ours: list[str]) -> tuple[dict, bool]:
    """(state, reinit_fc): the classifier kept, rows put in our order, when the class names are the
    same set; re-initialised when they differ."""
    if sorted(theirs) != sorted(ours) or "fc.weight" not in state:
        return state, True
    order = [theirs.index(name) for name in ours]
    state = dict(state)
    for key in ("fc.weight", "fc.bias"):
        if key in state:
            state[key] = state[key][order].clone()
    return state, False


def initial_model(train_cfg, classes: list[str], cfg, cache: Path, console=None):
    """(model, init): `train_cfg.model` seeded from `train_cfg.seed`, starting where `pretrained` says."""
    import torch  # deferred, with models: see `cached_file`

    from ... import models
    init = resolve(train_cfg, classes, cfg, cache, console)
    torch.manual_seed(train_cfg.seed)  # after resolving: a download must not shift the seeded init
    model = models.build(train_cfg.model, len(classes), pretrained=init.state, reinit_fc=init.reinit_fc,
                         dropout=getattr(train_cfg, "dropout", 0.0), **init.model_kwargs)
    if init.state is not None:
        init.note = f"{init.note}: {model.pretrained_note}"
    if console is not None and init.state is not None:
        console.print(f"  {train_cfg.model}: {init.note}", markup=False, highlight=False)
    return model, init


def recipe_warning(init: Init, train_cfg) -> str | None:
    """A line for a fine-tuning recipe on random weights: `backbone_lr_mult` < 1 slows the layers it
    exists to protect, and with nothing pretrained the backbone then barely leaves its init (measured:
    configs/arid.toml's 0.1 at lr 3.125e-4 with `pretrained = ""` kept every model at chance, docs/results.md)."""
    mult = float(getattr(train_cfg, "backbone_lr_mult", 1.0))
    if init.state is not None or mult == 1.0:
        return None
    return (f"{train_cfg.model} starts from random weights, yet backbone_lr_mult = {mult:g} trains every layer "
            f"but the classifier at {mult:g} x lr ({train_cfg.lr * mult:.3g}): a fine-tuning recipe with nothing "
            f"pretrained to protect; from scratch, set backbone_lr_mult = 1 and a from-scratch lr")


def input_normalization(init: Init, data_stats: dict | None, mode="stream",
                        original: dict | None = None) -> dict | None:
    """The statistics a model's inputs are standardised with under `mode` (data.normalize):

    - stream: those its pretrained source was trained with when they travel with the weights
      (registered weights, a file with a dlkdd meta.json), else `data_stats`, the train clips' of the
      stream it trains on; a model of the pretrain stage gets its own stream's too, so its filters see
      each stream at the scale they learnt the day footage at.
    - source: the source's, whichever stream: registered weights' published ones, the pretrain
      stage's (the day footage's), a file's meta.json's; random weights have no source and get
      `original`, the original (dark) stream's train statistics, as every stream then does.
    - none: None (pixel / 255).
    """
    mode = normalize_mode(mode)
    if mode == "none":
        return None
    if mode == "stream":
        return data_stats if init.source == PRETRAIN else (init.normalize or data_stats)
    if init.state is None:
        return original
    if not init.normalize:  # a file without metadata is refused with the config; this is a pretrain folder's
        raise StageError(f"pretrained = {init.source!r}: no input statistics came with the {init.note} (no "
                         f"\"normalize\" in its {META}), which data.normalize = \"source\" standardises with; "
                         f"set data.normalize = \"stream\" or \"none\"")
    return init.normalize


def statistics_identity(cfg, section: str) -> str:
    """What standardises the inputs of the model `<section>` ("teacher" | "student") trains, as its
    stages' fingerprints compare data.normalize: `input_normalization`'s choice by name, "none",
    "<stream> train clips" (the clip index's statistics of that stream) or "pretrained source" (those
    that come with the weights, which `<section>.pretrained`'s own identity fixes). Modes that give a
    model the same statistics give the same value: switching between them retrains nothing."""
    mode = normalize_mode(cfg.data.normalize)
    if mode == "none":
        return "none"
    train = getattr(cfg, section)
    own = f"{getattr(train, 'input', 'original')} train clips"  # the student's section has no input: original
    source = train.pretrained
    if source == "" or (source == PRETRAIN and not pretraining_on(cfg)):
        return own if mode == "stream" else "original train clips"
    if source == PRETRAIN:
        return own if mode == "stream" else "pretrained source"
    if published(source, train.model) is not None or source_file_statistics(source) is not None:
        return "pretrained source"
    return own  # a file without statistics: stream mode (source refuses it with the config)
