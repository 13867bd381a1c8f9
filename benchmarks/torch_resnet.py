"""A plain-PyTorch ResNet-18 with the CIFAR stem, the reference for `benchmarks/train_step.py --torch`.

Same architecture as `gence_jax.models.ResNet18` (and as ``torchvision.models.resnet18`` with its stem replaced by a
3x3 stride-1 convolution and no max-pool): a 3x3 stride-1 convolution of ``width`` channels, BatchNorm, ReLU, four
stages of two basic blocks with widths ``width * (1, 2, 4, 8)`` and strides 1/2/2/2, a projection shortcut (1x1
convolution + BatchNorm) where the shape changes, global average pooling and one linear layer. Convolutions carry no
bias; initialisation is He-normal in fan-out mode as in torchvision. Only ``torch`` is needed (no torchvision), and
``width`` can be narrowed (e.g. 16) for quick CPU runs.

``python benchmarks/torch_resnet.py`` prints the parameter count (11,173,962 with 10 classes and width 64, as for the
Flax model) and, when torchvision imports, checks that it matches torchvision's CIFAR-adapted ResNet-18.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with BatchNorm; a projection shortcut when the stride or the channel count changes."""

  def __init__(self, in_channels: int, channels: int, stride: int = 1):
    super().__init__()
    self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(channels)
    self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(channels)
    self.relu = nn.ReLU(inplace=True)
    self.shortcut = None
    if stride != 1 or in_channels != channels:
      self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))

  def forward(self, x):
    y = self.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return self.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class ResNet18(nn.Module):
  """ResNet-18 with the CIFAR stem; input ``[batch, 3, height, width]``, output logits ``[batch, num_classes]``."""

  def __init__(self, num_classes: int = 10, width: int = 64, in_channels: int = 3):
    super().__init__()
    self.stem = nn.Sequential(
      nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
    )
    blocks = []
    channels = width
    for stage in range(4):
      out = width * 2**stage
      for i in range(2):
        blocks.append(BasicBlock(channels, out, 2 if stage > 0 and i == 0 else 1))
        channels = out
    self.blocks = nn.Sequential(*blocks)
    self.pool = nn.AdaptiveAvgPool2d(1)
    self.head = nn.Linear(channels, num_classes)
    for m in self.modules():
      if isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
      elif isinstance(m, nn.BatchNorm2d):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)

  def forward(self, x):
    x = self.blocks(self.stem(x))
    return self.head(torch.flatten(self.pool(x), 1))


def torchvision_resnet18_cifar(num_classes: int = 10) -> nn.Module:
  """torchvision's ResNet-18 with the CIFAR stem (3x3 stride-1 first convolution, no max-pool); needs torchvision."""
  import torchvision  # pylint: disable=import-outside-toplevel

  model = torchvision.models.resnet18(num_classes=num_classes)
  model.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
  nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
  model.maxpool = nn.Identity()
  return model


def num_params(model: nn.Module) -> int:
  return sum(p.numel() for p in model.parameters())


if __name__ == "__main__":
  ours = ResNet18(10)
  print(f"plain-torch ResNet-18 (CIFAR stem, 10 classes, width 64): {num_params(ours):,} parameters")
  out = ours(torch.zeros(2, 3, 32, 32))
  assert out.shape == (2, 10), out.shape
  try:
    reference = torchvision_resnet18_cifar(10)
  except ImportError:
    print("torchvision not importable; skipped the comparison")
  else:
    print(f"torchvision ResNet-18 (CIFAR stem): {num_params(reference):,} parameters")
    assert num_params(reference) == num_params(ours)
