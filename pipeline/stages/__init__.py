"""One module per stage, each adapting the engine's call to work functions that take data.
`table.py` is the stage table (what each stage reads, writes and runs) the engine is given.
"""
