"""The enhance stage's work, one job a module: `plan` (videos, shards, tasks), `task` (what one
task does, on a dask worker or here), `local` (this process's path), `cluster` (dask's) and
`make` (the work function that runs them and assembles the index).
"""
