"""Class names of every task: the one place they are defined.

A model's own class names travel with its checkpoint and export
(`inference.model_io`); these are the names a new model is trained with.
"""

# Model output order of the emotion classifier (alphabetical, as in the Kaggle
# FER2013 folders).
EMOTION_CLASSES: tuple[str, ...] = (
  "angry",
  "disgust",
  "fear",
  "happy",
  "neutral",
  "sad",
  "surprise",
)

# Model output order of the deepfake detector: index 1 is the probability of fake.
DEEPFAKE_CLASSES: tuple[str, ...] = ("real", "fake")

# Class order of the `emotion` column in the original `fer2013.csv`.
FER2013_CSV_CLASSES: tuple[str, ...] = (
  "angry",
  "disgust",
  "fear",
  "happy",
  "sad",
  "surprise",
  "neutral",
)

# Relative class frequencies of the FER2013 Training split (images per class),
# used to give the synthetic set the same imbalance.
FER2013_TRAIN_COUNTS: dict[str, int] = {
  "angry": 3995,
  "disgust": 436,
  "fear": 4097,
  "happy": 7215,
  "neutral": 4965,
  "sad": 4830,
  "surprise": 3171,
}
