"""A study's arms and where each (arm, seed) lives in the cache.

An arm is a set of config overrides run per seed (`ARMS`: the paper's comparison; `--ablate`
adds the rows that say where a gain comes from). Each seed trains in folders of its own
(`baseline/seed<N>-<hash>`, ...), and an arm's changed stages in `ablation/<arm>/...`.

What a seed reseeds is the study's scope (`SCOPES`): the student and baseline only (`student`,
the default: one draw of everything upstream), the teacher and its soft labels too (`teacher`),
or the whole chain (`chain`: every seed `--seed` sets, so pretraining, the enhancer fit, the
views, teacher, soft labels, student and baseline are all drawn per seed). Under `chain` a
stage whose params (its own and upstream) equal the config's as given keeps its usual folder,
shared with `dlkdd run` on the same cache; the others live in `chain/seed<N>/...`.

The scope is per arm (`arm_scope`): an arm that changes the teacher (its input, enhancer,
normalisation, model, prior: any param of the teacher or its soft labels, own or upstream) runs
at least at scope `teacher` whatever the study's, so its interval counts the teacher's seed-to-seed
variation instead of one teacher's draw.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, replace

from ...errors import UserError
from .. import enhancers
from ..config import Config, apply_overrides, validate
from ..engine.fingerprint import hash_json
from ..engine.stage import Stage, upstream_closure
from ..published import PRETRAIN, uses_pretrain
from ..stages.run import SEEDED
from ..stages.table import STAGES

SCOPES = ("student", "teacher", "chain")  # what a study's seed reseeds (see above)


@dataclass(frozen=True)
class Arm:
    """One row group of a study: config overrides (`section.key=value`) applied on top of the config."""
    name: str
    overrides: tuple[str, ...] = ()


ARMS = (Arm("dlkdd"),)  # the paper's comparison: DL-KDD student vs baseline, the config as given
ARM_TEXT = {"dlkdd": "DL-KDD as configured", "from-scratch": "teacher and student from random weights",
            "teacher-original": "teacher on original (dark) clips", "teacher-gamma": "teacher on gamma-corrected clips",
            "teacher-small": "teacher of the student's architecture",
            "normalize-source": "inputs standardised with the pretrained source's statistics",
            "normalize-none": "inputs not standardised (pixel / 255)",
            "normalize-stream": "each stream standardised with its own train statistics"}
# arm -> data.normalize: the modes the config does not use
NORMALIZE_ARMS = {"normalize-stream": "stream", "normalize-source": "source", "normalize-none": "none"}
TEACHER_STAGES = ("teacher", "soft-labels")  # an arm that changes these trains a teacher per seed


class ArmError(UserError):
    """An arm name that does not exist, or does not apply to this config (one line: lists the arms)."""


def ablation_arms(cfg: Config) -> tuple[Arm, ...]:
    """`--ablate`: the rows that say where a gain comes from, on the same seeds and test videos.

    - from-scratch: teacher and student (so the baseline too) start from random weights instead
      of the configured prior (only when a model starts from one);
    - teacher-original: the teacher learns from, and labels, the original dark clips: the
      dual-light question (does the enhanced view add anything beyond a pretrained teacher?);
    - teacher-gamma: the teacher's input enhanced by gamma correction instead of the configured
      enhancer (when that is not gamma already);
    - teacher-small: a teacher of the student's architecture instead of the larger one;
    - normalize-stream / normalize-source / normalize-none: every model's inputs standardised
      with its own stream's train statistics, with the statistics of its pretrained source (both
      streams alike), or not at all, instead of the configured `data.normalize` (each only when the
      config has another value).
    """
    def from_prior(section: str) -> bool:
        source = getattr(cfg, section).pretrained
        return uses_pretrain(cfg, section) or source not in ("", PRETRAIN)
    arms = [ARMS[0]]
    if from_prior("teacher") or from_prior("student"):
        arms.append(Arm("from-scratch", ("teacher.pretrained=", "student.pretrained=")))
    if cfg.teacher.input != "original":
        arms.append(Arm("teacher-original", ("teacher.input=original",)))
    if cfg.enhancer.kind != "gamma" and cfg.teacher.input != "original":
        arms.append(Arm("teacher-gamma", ("enhancer.kind=gamma",)))
    if cfg.teacher.model != cfg.student.model:
        arms.append(Arm("teacher-small", (f"teacher.model={cfg.student.model}",)))
    for name, value in NORMALIZE_ARMS.items():
        if cfg.data.normalize != value:
            arms.append(Arm(name, (f"data.normalize={value}",)))
    return tuple(arms)


def named_arms(cfg: Config, names: str) -> tuple[Arm, ...]:
    """`--arms NAME,NAME`: the base arm and the named ablation arms, in the given order."""
    available = {a.name: a for a in ablation_arms(cfg)[1:]}
    wanted = list(dict.fromkeys(n.strip() for n in str(names).split(",") if n.strip()))
    bad = [n for n in wanted if n not in available]
    if bad or not wanted:
        why = "; ".join(f"{n}: {'not applicable to this config' if n in ARM_TEXT else 'no such arm'}" for n in bad)
        raise ArmError(f"--arms {names!r}: {why or 'no arm named'} (available: {', '.join(available) or 'none'})")
    return (ARMS[0], *(available[n] for n in wanted))


def changes_teacher(cfg: Config, arm: Arm) -> bool:
    """Whether the arm's overrides change a param of the teacher or its soft labels (own or upstream)."""
    if not arm.overrides:
        return False
    base, arm_cfg = _with_overrides(cfg, ARMS[0]), _with_overrides(cfg, arm)
    return any(_closure_params(STAGES, s, arm_cfg) != _closure_params(STAGES, s, base) for s in TEACHER_STAGES)


def arm_scope(cfg: Config, arm: Arm, scope: str = "student") -> str:
    """The scope an arm's seeds run at: the study's, raised to `teacher` for an arm that changes the
    teacher (one teacher's draw would leave the teacher's variation out of that arm's interval)."""
    if scope not in SCOPES:
        raise ValueError(f"study scope {scope!r}: expected one of {', '.join(SCOPES)}")
    return "teacher" if scope == "student" and changes_teacher(cfg, arm) else scope


def _with_overrides(cfg: Config, arm: Arm) -> Config:
    out = copy.deepcopy(cfg)
    apply_overrides(out, list(arm.overrides))
    enhancers.apply_kind_defaults(out)  # an arm that changes enhancer.kind takes that kind's defaults
    return out


def seed_config(cfg: Config, arm: Arm, seed: int, scope: str = "student") -> Config:
    """The arm's config for one seed: student.seed = seed, teacher.seed too for scope teacher (the
    study's or the arm's own, `arm_scope`), and every seed `--seed` sets for scope chain."""
    scope = arm_scope(cfg, arm, scope)
    out = _with_overrides(cfg, arm)
    keys = {"student": ("student.seed",), "teacher": ("student.seed", "teacher.seed"), "chain": SEEDED}[scope]
    for key in keys:
        section, name = key.split(".")
        setattr(getattr(out, section), name, seed)
    validate(out)
    return out


def stages_for(cfg: Config, arm: Arm, seed: int, scope: str = "student") -> dict[str, Stage]:
    """The stage table of one arm of a study (per-seed folders; the arm's own folders), at the arm's
    scope (`arm_scope`): an arm that changes the teacher has a teacher folder per seed."""
    scope = arm_scope(cfg, arm, scope)
    base = seed_config(cfg, ARMS[0], seed, scope)
    stages = chain_stages(cfg, base, seed) if scope == "chain" else study_stages(scope == "teacher")
    return arm_stages(stages, base, seed_config(cfg, arm, seed, scope), arm)


def study_stages(vary_teacher: bool) -> dict[str, Stage]:
    """The stage table with per-seed folders: the baseline always, the teacher and its soft labels
    (and so the student) when the teacher's seed varies too. Upstream stages are shared."""
    stages = dict(STAGES)
    baseline_params = STAGES["baseline"].param_values
    stages["baseline"] = replace(STAGES["baseline"], outputs=lambda c: (
        f"baseline/seed{c.student.seed}-{hash_json(baseline_params(c))[:8]}"))
    if vary_teacher:
        teacher_params = STAGES["teacher"].param_values
        stages["teacher"] = replace(STAGES["teacher"], outputs=lambda c: (
            f"teacher/seed{c.teacher.seed}-{hash_json(teacher_params(c))[:8]}"))
        stages["soft-labels"] = replace(STAGES["soft-labels"], outputs=lambda c: (
            f"soft-labels/{stages['teacher'].folder(c).split('/', 1)[1]}"))
        student_out = STAGES["student"].folder
        stages["student"] = replace(STAGES["student"], outputs=lambda c: (
            f"student/teacher-seed{c.teacher.seed}-{student_out(c).split('/', 1)[1]}"))
    return stages


def chain_stages(given: Config, seeded: Config, seed: int) -> dict[str, Stage]:
    """The stage table of one seed of a whole-chain study: every stage whose params (its own and
    upstream) under the seed's config differ from those under the config as `given` moves to
    `chain/seed<N>/`; the rest (all of them for the seed the config already has) stay shared."""
    out = dict(STAGES)
    for name, stage in STAGES.items():
        if _closure_params(STAGES, name, seeded) != _closure_params(STAGES, name, given):
            out[name] = replace(stage, outputs=lambda c, f=stage.folder: f"chain/seed{seed}/{f(c)}")
    return out


def arm_stages(stages: dict[str, Stage], base: Config, arm_cfg: Config, arm: Arm) -> dict[str, Stage]:
    """`stages` with the outputs an arm changes moved to `ablation/<arm>/...`: a stage whose own or
    upstream params differ from the base config's gets its own folder; the others (the clips, and
    the baseline where the student's side is unchanged) stay shared with the base arm."""
    if not arm.overrides:
        return stages
    out = dict(stages)
    for name, stage in stages.items():
        if _closure_params(stages, name, arm_cfg) != _closure_params(stages, name, base):
            out[name] = replace(stage, outputs=lambda c, f=stage.folder: f"ablation/{arm.name}/{f(c)}")
    return out


def _closure_params(stages: dict[str, Stage], name: str, cfg: Config) -> dict:
    """The params (as the fingerprints compare them) of `name` and everything upstream of it."""
    return {s: stages[s].param_values(cfg) for s in upstream_closure(name, stages, cfg)}
