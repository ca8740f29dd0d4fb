"""PyTorch reference of the original emotion and deepfake training scripts.

What users run today, rebuilt from the product description so that the Keras
system can be measured against it on the same machine: the emotion ResNet18
(3x3 stride-1 stem, BasicBlocks 64/128/256/512, head Linear -> BatchNorm ->
GELU -> Dropout -> Linear) trained with AdamW and label smoothing from a
`DataLoader` whose workers apply torchvision transforms to PIL images, and the
deepfake EfficientNetB0 + LSTM with temporal attention trained with Adam. On a
GPU both loops use automatic mixed precision, as the originals do.

Module names mirror the Keras layer names with `.` for `_`
(`stage1_block1.conv1` <-> `stage1_block1_conv1`), so `port_weights` can copy
weights by name.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# The same constants as input_pipeline.augment, on torchvision's 0-1 scale.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
  """torchvision's BasicBlock: two 3x3 conv-BN layers and a shortcut."""

  def __init__(self, in_channels: int, channels: int, stride: int):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(channels)
    self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(channels)
    self.has_projection = stride != 1 or in_channels != channels
    if self.has_projection:
      self.downsample_conv = nn.Conv2d(in_channels, channels, 1, stride, bias=False)
      self.downsample_bn = nn.BatchNorm2d(channels)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    shortcut = self.downsample_bn(self.downsample_conv(x)) if self.has_projection else x
    out = F.relu(self.bn1(self.conv1(x)))
    out = self.bn2(self.conv2(out))
    return F.relu(out + shortcut)


class EmotionResNet18(nn.Module):
  """The original emotion model (NCHW float input, ImageNet-normalised)."""

  def __init__(
    self,
    num_classes: int = 7,
    width: int = 64,
    head_units: int = 256,
    dropout: float = 0.5,
    stem_pool: bool = False,
  ):
    super().__init__()
    self.stem_conv = nn.Conv2d(3, width, 3, 1, 1, bias=False)
    self.stem_bn = nn.BatchNorm2d(width)
    self.stem_pool = nn.MaxPool2d(3, 2, 1) if stem_pool else nn.Identity()
    blocks = []
    in_channels = width
    for stage in range(4):
      channels = width * 2**stage
      for block in range(2):
        stride = 2 if stage > 0 and block == 0 else 1
        name = f"stage{stage + 1}_block{block + 1}"
        self.add_module(name, BasicBlock(in_channels, channels, stride))
        blocks.append(name)
        in_channels = channels
    self.block_names = blocks
    self.head_dense = nn.Linear(in_channels, head_units)
    self.head_bn = nn.BatchNorm1d(head_units)
    self.head_dropout = nn.Dropout(dropout)
    self.logits = nn.Linear(head_units, num_classes)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.stem_pool(F.relu(self.stem_bn(self.stem_conv(x))))
    for name in self.block_names:
      x = getattr(self, name)(x)
    x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    x = self.head_dropout(F.gelu(self.head_bn(self.head_dense(x))))
    return self.logits(x)


class DeepfakeDetector(nn.Module):
  """TimeDistributed EfficientNetB0 + LSTM + temporal attention, 2 classes."""

  def __init__(self, lstm_units: int = 256, dropout: float = 0.5):
    super().__init__()
    from torchvision.models import efficientnet_b0

    self.backbone = efficientnet_b0(weights=None).features
    self.lstm = nn.LSTM(1280, lstm_units, batch_first=True)
    self.score = nn.Linear(lstm_units, 1)
    self.dropout = nn.Dropout(dropout)
    self.logits = nn.Linear(lstm_units, 2)

  def forward(self, clips: torch.Tensor) -> torch.Tensor:
    batch, frames = clips.shape[:2]
    features = self.backbone(clips.flatten(0, 1))
    features = F.adaptive_avg_pool2d(features, 1).flatten(1).view(batch, frames, -1)
    sequence, _ = self.lstm(features)
    weights = torch.softmax(self.score(sequence).squeeze(-1), dim=1)
    pooled = (sequence * weights.unsqueeze(-1)).sum(1)
    return self.logits(self.dropout(pooled))


def emotion_train_transform(image_size: int) -> Callable[[Any], torch.Tensor]:
  """The original script's torchvision train transforms."""
  from torchvision import transforms as T

  return T.Compose(
    [
      T.RandomResizedCrop(image_size, scale=(0.8, 1.0)),
      T.RandomHorizontalFlip(),
      T.RandomApply([T.ColorJitter(0.2, 0.2, 0.2, 0.05)], p=0.8),
      T.RandomGrayscale(p=0.2),
      T.RandomRotation(20),
      T.ToTensor(),
      T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
      T.RandomErasing(p=0.25),
    ]
  )


class ImageDataset(torch.utils.data.Dataset):
  """uint8 grayscale images `[n, h, w]` as PIL RGB images through `transform`."""

  def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable):
    self.images = images
    self.labels = labels
    self.transform = transform

  def __len__(self) -> int:
    return len(self.images)

  def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
    from PIL import Image

    image = Image.fromarray(self.images[index]).convert("RGB")
    return self.transform(image), int(self.labels[index])


class ClipDataset(torch.utils.data.Dataset):
  """uint8 clips `[n, t, 3, h, w]`: a random flip per clip, ImageNet-normalised."""

  def __init__(self, clips: torch.Tensor, labels: torch.Tensor):
    self.clips = clips
    self.labels = labels
    self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

  def __len__(self) -> int:
    return len(self.clips)

  def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    clip = self.clips[index].float() / 255
    if torch.rand(()) < 0.5:
      clip = clip.flip(-1)
    return (clip - self.mean) / self.std, self.labels[index]


def emotion_loader(
  images: np.ndarray, labels: np.ndarray, image_size: int, batch_size: int, workers: int
) -> torch.utils.data.DataLoader:
  return torch.utils.data.DataLoader(
    ImageDataset(images, labels, emotion_train_transform(image_size)),
    batch_size=batch_size,
    shuffle=True,
    num_workers=workers,
    pin_memory=torch.cuda.is_available(),
    drop_last=True,
    persistent_workers=workers > 0,
  )


def forever(loader: torch.utils.data.DataLoader) -> Iterator[Any]:
  """The loader's batches, epoch after epoch."""
  while True:
    yield from loader


def time_training(
  model: nn.Module,
  optimizer: torch.optim.Optimizer,
  loss_fn: Callable,
  batches: Iterator[Any],
  warmup_steps: int,
  timed_steps: int,
  device: torch.device,
) -> float:
  """Seconds for `timed_steps` training steps after `warmup_steps`, AMP on CUDA."""
  model.train()
  use_amp = device.type == "cuda"
  amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
  scaler = torch.amp.GradScaler(enabled=use_amp and amp_dtype == torch.float16)
  start = 0.0
  for step in range(warmup_steps + timed_steps):
    if step == warmup_steps:
      if use_amp:
        torch.cuda.synchronize()
      start = time.perf_counter()
    inputs, targets = next(batches)
    inputs = inputs.to(device, non_blocking=True)
    targets = targets.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
      loss = loss_fn(model(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
  if use_amp:
    torch.cuda.synchronize()
  return time.perf_counter() - start
