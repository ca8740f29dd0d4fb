"""The one classification report, for the trainer's test_report.json and tools.evaluate_emotion."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn import metrics as sk_metrics


def classification_report(
  labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
  """Accuracy, ROC-AUC, macro and weighted averages, per-class scores, confusion matrix.

  Args:
    labels: true class indices `[n]`.
    probabilities: `[n, num_classes]`.
    class_names: names of the columns of `probabilities`.

  ROC-AUC is one-vs-rest per class, macro-averaged over the classes that have
  both positives and negatives (as the training metric does); None when no
  class has.
  """
  labels = np.asarray(labels)
  class_names = list(class_names)
  predicted = probabilities.argmax(axis=-1)
  indices = list(range(len(class_names)))
  report = sk_metrics.classification_report(
    labels,
    predicted,
    labels=indices,
    target_names=class_names,
    output_dict=True,
    zero_division=0,
  )
  roc_auc_by_class = {
    name: float(sk_metrics.roc_auc_score(labels == k, probabilities[:, k]))
    for k, name in enumerate(class_names)
    if 0 < np.sum(labels == k) < len(labels)
  }
  macro, weighted = report["macro avg"], report["weighted avg"]
  return {
    "num_images": int(len(labels)),
    "accuracy": float(sk_metrics.accuracy_score(labels, predicted)),
    "roc_auc_ovr_macro": (
      float(np.mean(list(roc_auc_by_class.values()))) if roc_auc_by_class else None
    ),
    "f1_macro": float(macro["f1-score"]),
    "precision_macro": float(macro["precision"]),
    "recall_macro": float(macro["recall"]),
    "precision_weighted": float(weighted["precision"]),
    "recall_weighted": float(weighted["recall"]),
    "f1_weighted": float(weighted["f1-score"]),
    "per_class": {
      name: {
        "precision": float(report[name]["precision"]),
        "recall": float(report[name]["recall"]),
        "f1": float(report[name]["f1-score"]),
        "support": int(report[name]["support"]),
        "roc_auc": roc_auc_by_class.get(name),
      }
      for name in class_names
    },
    "confusion_matrix": sk_metrics.confusion_matrix(labels, predicted, labels=indices).tolist(),
  }


def classification_report_text(
  labels: np.ndarray, probabilities: np.ndarray, class_names: Sequence[str]
) -> str:
  """scikit-learn's text table of per-class precision/recall/F1/support."""
  return sk_metrics.classification_report(
    labels,
    probabilities.argmax(axis=-1),
    labels=list(range(len(class_names))),
    target_names=list(class_names),
    digits=4,
    zero_division=0,
  )
