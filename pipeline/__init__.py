"""The pipeline, one sub-package per concern (the folder names are the map).

engine/ (stage graph, fingerprints, locks; no ML), datasets/ (lists, decoding, shards, views),
enhancers/ (Zero-DCE, Zero-DCE++, SCI, gamma), training/, inference/, stages/ (one module per
stage), study/. `config.py` is the configuration every one of them reads.
"""
