"""Trainers: `train_and_evaluate(config, workdir)` for each task."""
