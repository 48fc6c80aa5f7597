"""Data in: split-list readers (ARID, ARID V1.5, Dark-48, MMAction lists, folders), decoding,
the HDF5 clip shards, the seeded views and the datasets the loaders read. Never imports training.
"""
