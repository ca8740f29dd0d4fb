"""Streaming metrics agree with scikit-learn."""

import numpy as np
import pytest
from sklearn import metrics as sk

from training import metrics


def _data(num=300, classes=7, seed=0, drop_class=None):
  rng = np.random.default_rng(seed)
  true = rng.integers(0, classes, num)
  if drop_class is not None:
    true[true == drop_class] = (drop_class + 1) % classes
  logits = rng.normal(size=(num, classes)) + 2.0 * np.eye(classes)[true] * rng.random((num, 1))
  probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  return true, np.eye(classes, dtype=np.float32)[true], probabilities.astype(np.float32)


def _streamed(metric, one_hot, probabilities, batch=32):
  for start in range(0, len(one_hot), batch):
    metric.update_state(one_hot[start : start + batch], probabilities[start : start + batch])
  return float(metric.result())


@pytest.mark.parametrize("drop_class", [None, 1])
def test_weighted_precision_and_f1_match_sklearn(drop_class):
  true, one_hot, probabilities = _data(drop_class=drop_class)
  predicted = probabilities.argmax(-1)
  assert _streamed(metrics.WeightedPrecision(7), one_hot, probabilities) == pytest.approx(
    sk.precision_score(true, predicted, average="weighted", zero_division=0), abs=1e-6
  )
  assert _streamed(metrics.WeightedF1(7), one_hot, probabilities) == pytest.approx(
    sk.f1_score(true, predicted, average="weighted", zero_division=0), abs=1e-6
  )


def test_roc_auc_matches_sklearn_one_vs_rest_macro():
  true, one_hot, probabilities = _data()
  expected = sk.roc_auc_score(true, probabilities, multi_class="ovr", average="macro")
  assert 0.6 < expected < 0.95
  assert _streamed(metrics.OneVsRestRocAuc(7), one_hot, probabilities) == pytest.approx(
    expected, abs=2e-3
  )


def test_roc_auc_ignores_absent_classes():
  true, one_hot, probabilities = _data(drop_class=2)
  present = [k for k in range(7) if k != 2]
  expected = np.mean([sk.roc_auc_score(true == k, probabilities[:, k]) for k in present])
  assert _streamed(metrics.OneVsRestRocAuc(7), one_hot, probabilities) == pytest.approx(
    expected, abs=2e-3
  )


def test_metrics_reset_and_serialise():
  _, one_hot, probabilities = _data(num=40)
  for cls in (metrics.WeightedF1, metrics.WeightedPrecision, metrics.OneVsRestRocAuc):
    metric = cls(7)
    first = _streamed(metric, one_hot, probabilities)
    metric.reset_state()
    assert _streamed(metric, one_hot, probabilities) == pytest.approx(first)
    clone = cls.from_config(metric.get_config())
    assert _streamed(clone, one_hot, probabilities) == pytest.approx(first)
