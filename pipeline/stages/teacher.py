"""The `teacher` stage: train the teacher on the enhanced clips, seeded views as augmentation.

Training draws one seeded view per clip per epoch, the same finite set of views
`soft-labels` caches logits for, so the teacher is trained on exactly the inputs
it will later label; each epoch also draws one of a video's cached temporal
positions. Validation is the validation split's centre view (view 0): the test
split is read by `evaluate` alone. The training itself is
`classifiers.train_classifier`, shared with the student.

With `teacher.ensemble` = K > 1 it trains K members one after the other, member k seeded
teacher.seed + 1000 k (initialisation, shuffling and view draws), member 0 in the teacher folder itself
and member k >= 1 in member<k>/ (`training.ensemble`); `soft-labels` caches the mean of their
logits. Each member resumes from its own checkpoint, which names the settings of a one-teacher run
with that member's seed: a member already trained is kept after an interruption, and when K changes
(members below the new K are kept, those above it removed).
"""
from __future__ import annotations

import dataclasses

from ..engine import ranks
from ..training.classifiers import train_classifier
from ..training.distill import make_loss_fn
from ..training.ensemble import member_folder, member_seed, prepare_folder, write_members

ENSEMBLE_KEY = "teacher.ensemble"


class _MemberGraph:
    """The graph as member k's training sees it: its checkpoints' fingerprint is the one a one-teacher
    stage seeded teacher.seed + 1000 k would have (`teacher.ensemble` left out), so a trained member is
    reused whatever K; with K = 1 that is the stage's own fingerprint."""

    def __init__(self, graph, seed: int):
        self._graph, self._seed = graph, seed

    def __getattr__(self, name):
        return getattr(self._graph, name)

    def inspect(self, name: str):
        insp = self._graph.inspect(name)
        params = {k: v for k, v in insp.params.items() if k != ENSEMBLE_KEY}
        return dataclasses.replace(insp, params={**params, "teacher.seed": self._seed})


def run_stage(ctx) -> dict:
    t = ctx.cfg.teacher  # plain cross-entropy (alpha = 0), with the configured label smoothing
    loss_fn = make_loss_fn(0.0, 1.0, t.label_smoothing)
    if ranks.is_main():
        prepare_folder(ctx.out, t.ensemble)  # what another K left: the members above K go
    if t.ensemble == 1:
        return train_classifier(ctx, t, t.input, "teacher", loss_fn=loss_fn)
    summaries = []
    for k in range(t.ensemble):
        member = dataclasses.replace(t, seed=member_seed(t.seed, k))
        member_ctx = dataclasses.replace(ctx, graph=_MemberGraph(ctx.graph, member.seed),
                                         out=ctx.out / member_folder(k))
        summaries.append(train_classifier(member_ctx, member, t.input, f"teacher {k + 1}/{t.ensemble}",
                                          loss_fn=loss_fn, about=f", seed {member.seed}"))
    if ranks.is_main():
        write_members(ctx.out, t.ensemble)
    shown = ("epochs_run", "resumed_from", "best_epoch", "best_top1", "last_top1", "last_top5", "seconds")
    # member 0's figures where one teacher's stand (its model.pt is where a single teacher's lies), then each one's
    return {**summaries[0], "ensemble": t.ensemble,
            "members": [{"seed": member_seed(t.seed, k), "folder": member_folder(k) or ".",
                         **{key: s.get(key) for key in shown}} for k, s in enumerate(summaries)]}
