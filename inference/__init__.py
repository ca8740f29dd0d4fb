"""Using a trained model: loading a checkpoint or export, prediction, scoring, Grad-CAM, export.

Imports point down (keras_models, input_pipeline, common), never to `training`.
"""
