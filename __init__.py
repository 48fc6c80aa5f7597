"""dlkdd: Dual-Light Knowledge Distillation for action recognition in dark video.

Installed as one package: `dlkdd.pipeline`, `dlkdd.models` and `dlkdd.cli` are mapped from the
repository's top-level `pipeline/`, `models/` and `cli.py` (see `setup.cfg`), so nothing lands at
the top level of the user's environment.
"""
__version__ = "0.3.0"
