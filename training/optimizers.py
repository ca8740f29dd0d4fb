"""The trainers' optimizers: Adam and AdamW with a fused update, and SGD.

Adam and AdamW's per-variable update is TensorFlow's fused Adam kernel.

Keras 3 writes Adam's update as a dozen tensor ops per variable (two powers,
the moment updates, a square root, a division and three assignments), so
each step reads and writes every weight about ten times and the deepfake
model's 220 variables add some 2,600 ops to every train step.
TensorFlow's `ResourceApplyAdam` does the same arithmetic in one op and one
pass per variable, on CPUs, on GPUs and under XLA. Keras has no fused
update of its own, hence this small subclass. AdamW keeps Keras' decoupled
weight decay, which runs before the update as before.

The arithmetic is Keras': `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
`w -= lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)`, with the same
variables, so checkpoints of either optimizer load into the other. Sparse
gradients, AMSGrad and other backends use Keras' own update.

SGD (with Nesterov momentum, an option of the emotion trainer) is Keras'
own, whose update is a few ops per variable already. All of them carry the
loop's weight averaging (`LoopWeightAveraging`).
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


class _FusedAdamUpdate:
  """Replaces `keras.optimizers.Adam.update_step` with `ResourceApplyAdam`."""

  def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
    fusable = (
      keras.backend.backend() == "tensorflow"
      and not self.amsgrad
      and not isinstance(gradient, tf.IndexedSlices)
      and variable.dtype in (tf.float16, tf.bfloat16, tf.float32, tf.float64)
    )
    if not fusable:
      super().update_step(gradient, variable, learning_rate)
      return
    dtype = variable.dtype
    index = self._get_variable_index(variable)
    step = tf.cast(self.iterations + 1, dtype)
    beta_1 = tf.cast(self.beta_1, dtype)
    beta_2 = tf.cast(self.beta_2, dtype)
    tf.raw_ops.ResourceApplyAdam(
      var=variable.handle,
      m=self._momentums[index].handle,
      v=self._velocities[index].handle,
      beta1_power=tf.pow(beta_1, step),
      beta2_power=tf.pow(beta_2, step),
      lr=tf.cast(learning_rate, dtype),
      beta1=beta_1,
      beta2=beta_2,
      epsilon=tf.cast(self.epsilon, dtype),
      grad=tf.cast(gradient, dtype),
    )


class LoopWeightAveraging:
  """Keras' `use_ema` as the loop's weight averaging needs it (`training.weight_averaging`).

  * The averages start as the initial weights. Keras starts them at zero and
    copies the weights in at step 0; a float16 run whose first steps overflow
    skips that step, and our counted skipped steps (`StepCountingLossScaleOptimizer`)
    move the counter past 0, so the average would start from zeros.
  * The trained weights stay in the model when `fit` returns. Keras copies the
    average in there; the loop keeps the average in its checkpoints instead,
    and a second `fit` (finishing an interrupted round, then the rest) must
    go on from the trained weights.
  """

  def build(self, var_list: Any) -> None:
    super().build(var_list)
    if self.use_ema:
      with tf.init_scope():  # Once, even when built inside the first traced step.
        for average, variable in zip(
          self._model_variables_moving_average, self._trainable_variables, strict=True
        ):
          average.assign(variable)

  def finalize_variable_values(self, var_list: Any) -> None:
    del var_list


@keras.saving.register_keras_serializable(package="face_analysis")
class FusedAdam(LoopWeightAveraging, _FusedAdamUpdate, keras.optimizers.Adam):
  """`keras.optimizers.Adam` with one fused update op per variable."""


@keras.saving.register_keras_serializable(package="face_analysis")
class FusedAdamW(LoopWeightAveraging, _FusedAdamUpdate, keras.optimizers.AdamW):
  """`keras.optimizers.AdamW` with one fused update op per variable."""


@keras.saving.register_keras_serializable(package="face_analysis")
class SGD(LoopWeightAveraging, keras.optimizers.SGD):
  """`keras.optimizers.SGD` with the loop's weight averaging."""
