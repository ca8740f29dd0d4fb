"""Streaming classification metrics that match scikit-learn's definitions.

They run inside the compiled train and test steps, so train and validation
figures come out of one `model.fit` with no extra pass over the data:

* `WeightedPrecision`, `WeightedF1`: `precision_score`/`f1_score` with
  `average="weighted"` (argmax predictions, classes weighted by support,
  zero where undefined), exact, from a streaming confusion matrix.
* `OneVsRestRocAuc`: `roc_auc_score(multi_class="ovr", average="macro")` from
  probabilities, as a trapezoidal ROC over fixed thresholds (the same
  approximation as `keras.metrics.AUC`), averaged over the classes that have
  both positives and negatives, where scikit-learn would refuse.

All take one-hot (or smoothed) `y_true` and probabilities `y_pred`.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops


class _ConfusionMatrixMetric(keras.metrics.Metric):
  """Accumulates a `[num_classes, num_classes]` (true, predicted) count matrix."""

  def __init__(self, num_classes: int, name: str, **kwargs: Any):
    super().__init__(name=name, **kwargs)
    self.num_classes = num_classes
    self.confusion = self.add_variable(
      shape=(num_classes, num_classes),
      initializer="zeros",
      name="confusion",
      dtype="float32",
    )

  def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
    true = ops.one_hot(ops.argmax(y_true, axis=-1), self.num_classes, dtype="float32")
    pred = ops.one_hot(ops.argmax(y_pred, axis=-1), self.num_classes, dtype="float32")
    if sample_weight is not None:
      true = true * ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
    self.confusion.assign_add(ops.matmul(ops.transpose(true), pred))

  def _per_class(self) -> tuple[Any, Any, Any]:
    """Returns (true positives, support, predicted count) per class."""
    return (
      ops.diagonal(self.confusion),
      ops.sum(self.confusion, axis=1),
      ops.sum(self.confusion, axis=0),
    )

  def _support_weighted(self, per_class: Any) -> Any:
    _, support, _ = self._per_class()
    return ops.divide_no_nan(ops.sum(per_class * support), ops.sum(support))

  def reset_state(self) -> None:
    self.confusion.assign(ops.zeros_like(self.confusion))

  def get_config(self) -> dict[str, Any]:
    return {**super().get_config(), "num_classes": self.num_classes}


@keras.saving.register_keras_serializable(package="face_analysis")
class WeightedPrecision(_ConfusionMatrixMetric):
  """Support-weighted precision of argmax predictions."""

  def __init__(self, num_classes: int, name: str = "precision", **kwargs: Any):
    super().__init__(num_classes, name=name, **kwargs)

  def result(self) -> Any:
    true_positives, _, predicted = self._per_class()
    return self._support_weighted(ops.divide_no_nan(true_positives, predicted))


@keras.saving.register_keras_serializable(package="face_analysis")
class WeightedF1(_ConfusionMatrixMetric):
  """Support-weighted F1 of argmax predictions."""

  def __init__(self, num_classes: int, name: str = "f1", **kwargs: Any):
    super().__init__(num_classes, name=name, **kwargs)

  def result(self) -> Any:
    true_positives, support, predicted = self._per_class()
    return self._support_weighted(ops.divide_no_nan(2.0 * true_positives, support + predicted))


@keras.saving.register_keras_serializable(package="face_analysis")
class OneVsRestRocAuc(keras.metrics.AUC):
  """Macro one-vs-rest ROC-AUC from class probabilities."""

  def __init__(
    self,
    num_classes: int | None = None,
    num_thresholds: int = 1000,
    name: str = "roc_auc",
    **kwargs: Any,
  ):
    num_classes = kwargs.pop("num_labels", num_classes)
    for fixed in ("curve", "multi_label", "from_logits", "summation_method"):
      kwargs.pop(fixed, None)
    super().__init__(
      num_thresholds=num_thresholds,
      curve="ROC",
      summation_method="interpolation",
      multi_label=True,
      num_labels=num_classes,
      from_logits=False,
      name=name,
      **kwargs,
    )

  def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
    # Label smoothing does not reach metrics (Keras smooths inside the loss),
    # but round anyway so that soft targets count as their class.
    return super().update_state(ops.round(y_true), y_pred, sample_weight)

  def result(self) -> Any:
    tp, fp = self.true_positives, self.false_positives
    tn, fn = self.true_negatives, self.false_negatives
    tpr = ops.divide_no_nan(tp, tp + fn)
    fpr = ops.divide_no_nan(fp, fp + tn)
    # Thresholds ascend, so rates descend: widths are fpr[i] - fpr[i + 1].
    by_class = ops.sum((fpr[:-1] - fpr[1:]) * (tpr[:-1] + tpr[1:]) / 2.0, axis=0)
    positives, negatives = (tp + fn)[0], (fp + tn)[0]
    defined = ops.cast(ops.logical_and(positives > 0, negatives > 0), "float32")
    return ops.divide_no_nan(ops.sum(by_class * defined), ops.sum(defined))


def classification_metrics(num_classes: int) -> list[keras.metrics.Metric]:
  """The compiled metrics of both tasks, the columns of metrics.csv: accuracy, ROC-AUC
  (one-vs-rest macro), support-weighted precision and F1."""
  return [
    keras.metrics.CategoricalAccuracy(name="accuracy"),
    OneVsRestRocAuc(num_classes, name="roc_auc"),
    WeightedPrecision(num_classes, name="precision"),
    WeightedF1(num_classes, name="f1"),
  ]
