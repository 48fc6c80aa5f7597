"""Data in: split lists (lists) and class folders (folders) read into a root's splits (splits,
over index), decoding (decode), the HDF5 clip shards, the seeded views and the datasets the
loaders read, and the bundled sample's generator (sample, scenes, encode). Never imports training.
"""
