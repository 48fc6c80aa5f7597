"""What a command runs against one cache: the config it resolves, a target brought up to date
(locks, torchrun ranks, --dry-run) and the cache's status rows.

Torch-free at import: `dlkdd status` and `--dry-run` load no torch; the device is asked of
torch only when a stage runs.
"""
from __future__ import annotations

from pathlib import Path

from ...errors import UserError
from .. import enhancers
from ..config import Config, build_config, set_value, validate
from ..datasets.splits import dataset_root
from ..engine import ranks
from ..engine.lock import OutputLocks
from ..engine.run import execute, execute_distributed
from ..engine.stage import upstream_closure
from ..published import NAMES
from ..training.weights import fetch_registered
from .table import STAGES, list_variants, pipeline_graph

SEEDED = ("pretrain.seed", "enhancer.seed", "data.view_seed", "teacher.seed", "student.seed")  # what --seed sets


def day_set(cfg: Config) -> str:
    """A dataset folder's own `day/` set (split lists, the same class names: normal-light footage of
    the same actions) is its default pretraining data, wherever the folder lies: the bundled sample
    has one, so `dlkdd run` shows the whole method. `pretrain.root = none` turns that off."""
    day = dataset_root(cfg) / "day"
    return str(day.resolve()) if (day / "splits").is_dir() else ""


def resolve_config(config_file: Path | None = None, overrides: list[str] = (), data: Path | None = None,
                   seed: int | None = None, skip_missing: bool = False) -> Config:
    """The config a command runs under: the file and --set values, then --data, --seed and
    --skip-missing; paths relative to where the command runs, `pretrain.root` defaulting to the
    dataset's day set."""
    cfg = build_config(config_file, list(overrides))
    if data is not None:
        cfg.data.root = str(Path(data).resolve())
    if cfg.pretrain.root == "none":
        cfg.pretrain.root = ""
    elif cfg.pretrain.root:  # like --data: relative to where the command runs, not to the cache
        cfg.pretrain.root = str(Path(cfg.pretrain.root).resolve())
    else:
        cfg.pretrain.root = day_set(cfg)
    if seed is not None:
        for key in SEEDED:
            set_value(cfg, key, seed)
    if skip_missing:
        set_value(cfg, "data.skip_missing", True)
    enhancers.check(cfg.enhancer)  # the kinds are registered above config, which cannot check them
    enhancers.apply_kind_defaults(cfg)
    validate(cfg)
    return cfg


def pick_device(option: str) -> str:
    """--device: cpu as given; auto and cuda ask torch whether it sees a GPU."""
    if option == "cpu":
        return "cpu"
    import torch  # deferred: only a stage that runs asks for its device
    if option == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is visible to torch")
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_target(cfg: Config, cache: Path, target: str, device: str, console, force: bool = False,
               dry_run: bool = False, wait: float = 0.0, checksum: bool = False,
               options: dict | None = None) -> list[str]:
    """Bring `target` and everything upstream of it up to date; the names of the stages that ran.

    `device` is the --device option (auto | cpu | cuda), resolved only when a stage runs, so a
    fresh cache or --dry-run needs no torch. Under torchrun every rank trains `target` and rank 0
    holds the locks for all.
    """
    graph = pipeline_graph(cfg, cache, checksum=checksum)
    if ranks.world_size() > 1 and not dry_run:
        return _run_distributed(graph, target, pick_device(device), console, force, wait)
    if dry_run:
        return execute(graph, target, lambda: pick_device(device), console, force=force, dry_run=True,
                       options=options)
    fetch_weights(graph, target, force, console)
    with OutputLocks(cache, wait=wait) as locks:  # shared on what it reads, exclusive on what it writes
        ran = execute(graph, target, lambda: pick_device(device), console, force=force, options=options,
                      locks=locks, run_line=True)  # on a terminal, one line for the whole run under the bars
    if not ran:
        console.print(f"nothing to do: {target} and everything upstream of it are fresh")
    return ran


TRAINED_FROM = {"teacher": "teacher", "baseline": "student", "student": "student"}  # stage -> its section


def fetch_weights(graph, target: str, force: bool, console) -> None:
    """Before any stage runs: the registered weights that the stages about to train start from are
    downloaded, or checked where they lie; a run that cannot have them stops here, naming the file
    and where to place it, not after the enhance stage."""
    cfg = graph.cfg
    sections = {s for s in TRAINED_FROM.values() if getattr(cfg, s).pretrained in NAMES}
    if not sections:
        return
    names = [n for n in upstream_closure(target, graph.stages, cfg) if n in TRAINED_FROM]
    states = graph.statuses(upstream_closure(target, graph.stages, cfg))
    for name in names:
        if TRAINED_FROM[name] in sections and (states[name].state != "fresh" or (force and name == target)):
            fetch_registered(cfg, TRAINED_FROM[name], console)


def _run_distributed(graph, target: str, device: str, console, force: bool, wait: float) -> list[str]:
    from ..training.ddp import join_group  # deferred: only torchrun ranks load torch; status and --dry-run none

    def join():
        return join_group(device)
    if not ranks.is_main():
        console.quiet = True
        return execute_distributed(graph, target, device, console, join, force=force)
    with OutputLocks(graph.cache, wait=wait) as locks:
        return execute_distributed(graph, target, device, console, join, force=force, locks=locks)


def cache_status(cfg: Config, cache: Path, checksum: bool = False, verify: bool = False) -> dict:
    """`dlkdd status --json`: each stage's state with its reasons, and the student variants."""
    graph = pipeline_graph(cfg, cache, checksum=checksum)
    rows = []
    for name, st in graph.statuses(verify=verify).items():
        rec = st.record or {}
        rows.append({"stage": name, "state": st.state, "reasons": st.reasons,
                     "kinds": [c.kind for c in st.causes],
                     "output": graph.out_dir(name).relative_to(graph.cache).as_posix(),
                     "finished": rec.get("started"), "seconds": rec.get("seconds"),
                     "about": STAGES[name].doc})
    return {"stages": rows, "student_variants": list_variants(cache)}
