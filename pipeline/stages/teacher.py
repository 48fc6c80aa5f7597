"""The `teacher` stage: train the teacher on the enhanced clips, seeded views as augmentation.

Training draws one seeded view per clip per epoch, the same finite set of views
`soft-labels` caches logits for, so the teacher is trained on exactly the inputs
it will later label; each epoch also draws one of a video's cached temporal
positions. Validation is the validation split's centre view (view 0): the test
split is read by `evaluate` alone. The training itself is
`classifiers.train_classifier`, shared with the student.
"""
from __future__ import annotations

from ..training.classifiers import train_classifier
from ..training.distill import make_loss_fn


def run_stage(ctx) -> dict:
    t = ctx.cfg.teacher  # plain cross-entropy (alpha = 0), with the configured label smoothing
    return train_classifier(ctx, t, t.input, "teacher", loss_fn=make_loss_fn(0.0, 1.0, t.label_smoothing))
