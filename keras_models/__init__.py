"""Every Keras layer and model: on-device preprocessing and augmentation, both tasks' models."""
