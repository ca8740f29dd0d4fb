"""Data loading and on-device preprocessing for the face-analysis trainers."""
