"""The `teacher` stage: train the teacher on the enhanced clips, seeded views as augmentation.

Training draws one seeded view per clip per epoch, the same finite set of views
`soft-labels` caches logits for, so the teacher is trained on exactly the inputs
it will later label. Validation is the test split's centre view (view 0). The
training itself is `classifiers.train_classifier`, shared with the student.
"""
from __future__ import annotations

from .classifiers import train_classifier


def run_stage(ctx) -> dict:
    return train_classifier(ctx, ctx.cfg.teacher, "enhanced", "teacher")
