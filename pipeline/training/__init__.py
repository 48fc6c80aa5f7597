"""Training: the loop, checkpoints, the distillation loss, classifier set-up, initial weights
(random, a file, the pretrain stage, registered downloads), device and precision.
"""
