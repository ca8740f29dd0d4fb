"""The PyTorch reference ResNet18's weights give the same logits in Keras.

Needs PyTorch (`pip install -r benchmarks/requirements.txt`); skipped without it.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from benchmarks import port_weights, torch_reference  # noqa: E402
from keras_models.resnet import build_resnet18  # noqa: E402


@pytest.mark.parametrize("stem_pool", [False, True])
@pytest.mark.parametrize("training", [False, True])
def test_ported_weights_reproduce_the_torch_logits(stem_pool, training):
  torch.manual_seed(0)
  dropout = 0.0 if training else 0.5
  source = torch_reference.EmotionResNet18(
    width=8, head_units=16, dropout=dropout, stem_pool=stem_pool
  )
  port_weights.randomize_batch_norm(source)
  target = build_resnet18(
    (24, 24, 3), width=8, head_units=16, dropout=dropout, stem_pool=stem_pool, dtype="float32"
  )
  stem, blocks, projections, head = 2, 8 * 4, 3 * 2, 3  # layers with weights
  assert port_weights.port_resnet18(source, target) == stem + blocks + projections + head
  assert sum(p.numel() for p in source.parameters()) == target.count_params() - sum(
    int(np.prod(w.shape)) for w in target.non_trainable_weights
  )
  images = np.random.default_rng(0).normal(size=(4, 24, 24, 3)).astype(np.float32)
  error = port_weights.max_logit_difference(source, target, images, training=training)
  assert error <= 1e-4


def test_port_names_the_layer_it_cannot_match():
  source = torch_reference.EmotionResNet18(width=8, head_units=16)
  target = build_resnet18((24, 24, 3), width=8, head_units=16, num_classes=5)
  del source.logits
  with pytest.raises(KeyError, match="'logits'"):
    port_weights.port_resnet18(source, target)
