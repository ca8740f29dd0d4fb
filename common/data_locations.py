"""Default locations of the data sets: what configs name and readers fall back on.

A reader recognises its default location (and falls back to synthetic data
when it is absent), so the config and the reader must agree on one string.
"""

# Kaggle FER2013 folders, or a directory (or path) of fer2013.csv.
DEFAULT_FER2013_DIR = "data/fer2013"
# The deepfake labels CSV (`video,label[,group][,split]`).
DEFAULT_LABELS_CSV = "data/deepfake/labels.csv"
