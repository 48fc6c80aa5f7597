"""The DVC-like core, a module per job: `stage` (a declared row), `fingerprint` (hashes, code
digests), `status` (why a stage is stale), `graph` (records), `run` (run only what is stale),
plus output locks, atomic writes, signals, progress and what `dlkdd status` prints
(`status_view`). It knows nothing of ML and imports no torch (a layering contract checks it):
the stage table is handed in by `pipeline.stages`.
"""
