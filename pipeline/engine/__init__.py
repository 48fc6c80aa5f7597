"""The DVC-like core: stage table machinery, fingerprints and why-stale reasons, output locks,
atomic writes, signals and progress. It knows nothing of ML and imports no torch (a layering
test checks it): the stage table is handed in by `pipeline.stages`.
"""
