"""Command-line tools beside the trainer: data preparation, scoring, evaluation, plots."""
