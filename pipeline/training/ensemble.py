"""A teacher of K members (`teacher.ensemble`) and how its folder holds them.

Member 0 is the teacher folder's own model.pt and meta.json, where a single teacher's lie (so
`predict`, `export`, `tools` and a one-teacher cache see "the teacher" unchanged); member k >= 1
trains in the subfolder member<k>/ with seed `member_seed(teacher.seed, k)` = teacher.seed + 1000 k, each
with its own checkpoint (1000 apart, so the members of a study's seeds 0, 1, 2, ... never coincide).
`ensemble.json` beside member 0 lists the members' folders; the `teacher` stage writes it, only for
K > 1 and only once every member is trained, so the folder says what it holds and `load_teacher`
needs nothing else. The ensemble's logits are the mean of its members' logits (see `Ensemble`).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..engine import atomic
from .checkpoints import CheckpointError, load_trained

ENSEMBLE_FILE = "ensemble.json"  # {"members": [folder relative to the teacher's, ...]}, member 0 first
MEMBER_PREFIX = "member"  # member k >= 1 trains in <teacher>/member<k>/
MEMBER_SEED_STRIDE = 1000  # member k is seeded teacher.seed + 1000 k: seed s + 1 of a study is not member 1 of seed s


def member_seed(seed: int, k: int) -> int:
    """The seed of member k of a teacher seeded `seed` (member 0: `seed` itself)."""
    return seed + MEMBER_SEED_STRIDE * k


def member_folder(k: int) -> str:
    """Member k's folder relative to the teacher's ("" for member 0: the teacher folder itself)."""
    return "" if k == 0 else f"{MEMBER_PREFIX}{k}"


def prepare_folder(teacher_dir: Path, members: int) -> None:
    """Before training `members` members: drop what another K left (member<k>/ for k >= members,
    ensemble.json, rewritten once every member is trained)."""
    teacher_dir = Path(teacher_dir)
    (teacher_dir / ENSEMBLE_FILE).unlink(missing_ok=True)
    for path in teacher_dir.glob(f"{MEMBER_PREFIX}*"):
        k = path.name[len(MEMBER_PREFIX):]
        if path.is_dir() and k.isdigit() and int(k) >= members:
            shutil.rmtree(path)


def write_members(teacher_dir: Path, members: int) -> None:
    """ensemble.json for `members` > 1 trained members (nothing for one teacher: its folder is as ever)."""
    if members > 1:
        atomic.write_json(Path(teacher_dir) / ENSEMBLE_FILE, {"members": [member_folder(k) for k in range(members)]})


def member_dirs(teacher_dir: Path) -> list[Path]:
    """The folders of the teacher's members, member 0 (the teacher folder) first."""
    teacher_dir = Path(teacher_dir)
    path = teacher_dir / ENSEMBLE_FILE
    if not path.exists():
        return [teacher_dir]
    try:
        folders = json.loads(path.read_text())["members"]
        if not isinstance(folders, list) or not folders or not all(isinstance(f, str) for f in folders):
            raise TypeError("members is not a non-empty list of folder names")
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    return [teacher_dir / f for f in folders]


class Ensemble(torch.nn.Module):
    """The mean of its members' logits (float32).

    Mean logits, not the log of the mean probability: the student's KD term takes softmax(z / T) at its
    temperature T, and softmax(mean_k z_k / T) is the normalised geometric mean of the members' own
    softmax(z_k / T) at every T, whereas log(mean_k softmax(z_k)) is the arithmetic mixture at T = 1
    only (at T = 4 it would sharpen or flatten that mixture, not mix the members' tempered outputs).
    Mean logits also keep one teacher's scale, which `soft_labels.tolerance` is relative to.
    """

    def __init__(self, members: list[torch.nn.Module]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.members[0](x).float()
        for member in self.members[1:]:
            z = z + member(x).float()
        return z / len(self.members)


def load_teacher(teacher_dir: Path, device: str = "cpu"):
    """(model in eval mode, meta) of the teacher in `teacher_dir`: its one model, or the `Ensemble` of
    the members ensemble.json lists, with member 0's meta plus "ensemble" (K), "members" (folders) and
    the members' summed params and GFLOPs. One-line CheckpointError if a member is absent or does not
    match member 0 (architecture, classes, input stream or input statistics)."""
    folders = member_dirs(teacher_dir)
    if len(folders) == 1:
        return load_trained(folders[0], device)
    models, metas = [], []
    for folder in folders:
        model, meta = load_trained(folder, device)
        models.append(model)
        metas.append(meta)
    first = metas[0]
    for folder, meta in zip(folders[1:], metas[1:]):
        for key in ("model", "model_kwargs", "classes", "input", "normalize"):
            if meta.get(key) != first.get(key):
                raise CheckpointError(f"{folder}: member's {key} differs from member 0's ({folders[0]}); "
                                      f"run `dlkdd teacher --force`")
    meta = {**first, "ensemble": len(folders), "members": [f.relative_to(teacher_dir).as_posix() for f in folders]}
    for key, digits in (("params", 0), ("gflops_per_clip", 4)):  # K forward passes per clip
        if all(m.get(key) is not None for m in metas):
            meta[key] = round(sum(m[key] for m in metas), digits) if digits else sum(m[key] for m in metas)
    return Ensemble(models).to(device).eval(), meta
