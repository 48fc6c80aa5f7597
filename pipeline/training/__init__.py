"""Training: the loop (`loop`) and what it stands on: seeded loaders, the optimizer and its schedule,
the run folder and its checkpoints, metrics history, torchrun ranks, device and precision; plus the
distillation loss, classifier set-up and initial weights (random, a file, pretrain, registered downloads).
"""
