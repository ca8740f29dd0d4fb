"""Small facts and helpers every other package uses: I/O, figures, labels, errors.

Nothing here imports TensorFlow, Keras or another package of the project, so
configs, readers, models, the trainer and the tools can all depend on it.
"""
