"""Training configs: `common.py` holds the blocks both tasks share; each task overrides it."""
