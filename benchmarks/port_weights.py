"""Copies the PyTorch reference ResNet18's weights into the Keras model.

If both networks are the same function, the ported Keras model reproduces the
PyTorch logits to float32 round-off: the proof that the reimplementation
(padding, BatchNorm epsilon, GELU, head order) is faithful.
"""

from __future__ import annotations

import keras
import numpy as np
import torch
from torch import nn


def _numpy(tensor: torch.Tensor) -> np.ndarray:
  return tensor.detach().cpu().numpy()


def randomize_batch_norm(model: nn.Module) -> None:
  """Random BatchNorm scales, shifts and statistics (a fresh model has 1, 0, 0, 1).

  With the defaults, a BatchNorm ported with its parameters swapped or its
  statistics dropped would still give the same outputs; random ones make the
  logit check see such mistakes.
  """
  with torch.no_grad():
    for module in model.modules():
      if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-0.2, 0.2)
        module.running_mean.uniform_(-0.2, 0.2)
        module.running_var.uniform_(0.5, 1.5)


def port_resnet18(source: nn.Module, target: keras.Model) -> int:
  """Sets `target`'s weights from `source` (benchmarks.torch_reference.EmotionResNet18).

  Keras layer `a_b_c` takes the weights of PyTorch module `a_b.c` or `a_b_c`
  (the module path with `.` for `_`). Convolutions go from `[out, in, kh, kw]`
  to `[kh, kw, in, out]`, Linear layers are transposed, BatchNorm takes gamma,
  beta and the running statistics.

  Returns:
    The number of layers ported; every layer with weights must have a match.
  """
  modules = {name.replace(".", "_"): module for name, module in source.named_modules() if name}
  ported = 0
  for layer in target.layers:
    if not layer.weights:
      continue
    module = modules.get(layer.name)
    if module is None:
      raise KeyError(f"Keras layer {layer.name!r} has no PyTorch module of that name.")
    if isinstance(layer, keras.layers.Conv2D):
      values = [_numpy(module.weight).transpose(2, 3, 1, 0)]
      if module.bias is not None:
        values.append(_numpy(module.bias))
    elif isinstance(layer, keras.layers.Dense):
      values = [_numpy(module.weight).T, _numpy(module.bias)]
    elif isinstance(layer, keras.layers.BatchNormalization):
      values = [
        _numpy(module.weight),
        _numpy(module.bias),
        _numpy(module.running_mean),
        _numpy(module.running_var),
      ]
    else:
      raise TypeError(f"Do not know how to port layer {layer.name!r} ({type(layer).__name__}).")
    layer.set_weights(values)
    ported += 1
  return ported


def max_logit_difference(
  source: nn.Module, target: keras.Model, images_nhwc: np.ndarray, training: bool = False
) -> float:
  """Max |logits_keras - logits_torch| on normalised float images `[n, h, w, 3]`.

  `training=True` compares the train-mode forward pass (BatchNorm on batch
  statistics); dropout must then be 0 in both models.
  """
  source.train(training)
  with torch.no_grad():
    expected = _numpy(source(torch.from_numpy(images_nhwc.transpose(0, 3, 1, 2).copy())))
  logits_model = keras.Model(target.input, target.get_layer("logits").output)
  actual = keras.ops.convert_to_numpy(logits_model(images_nhwc, training=training))
  return float(np.max(np.abs(actual - expected)))
