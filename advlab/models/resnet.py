"""Residual networks the adversarial-robustness literature trains on CIFAR-10.

- `preact-resnet18` (PreActResNet18): the pre-activation ResNet-18 of Wong et al. 2020 and Rice et
  al. 2020 (He et al. 2016b blocks): 3x3 stem conv, no max-pool, four stages of two blocks
  (64/128/256/512 channels, strides 1/2/2/2), a final BN-ReLU, global average pool, linear.
- `resnet18` (ResNet18): ResNet-18 with the CIFAR stem (3x3 conv stride 1, BN, ReLU, no max-pool)
  and post-activation basic blocks (conv-BN-ReLU-conv-BN, add, ReLU; 1x1 conv + BN projections).
- `wrn` (WideResNet): WRN-depth-width of Zagoruyko & Komodakis 2016 as TRADES, Madry's CIFAR
  challenge and Rice et al. use it: 3x3 stem conv (16), three stages of (depth - 4) / 6
  pre-activation blocks (16k/32k/64k channels, strides 1/2/2), final BN-ReLU, pool, linear.

All take (N, C, H, W) images with any number of channels and any spatial size (global average
pooling is adaptive, so 8x8 digits, 28x28 Fashion-MNIST and 32x32 CIFAR-10 all work), and flat
(N, C*H*W) input too. Parameter counts for 10 classes on 3x32x32 (tests/test_models_resnet.py):
ResNet-18 11,173,962; PreAct-ResNet-18 11,172,170; WRN-28-10 36,479,194; WRN-34-10 46,160,474.

Options, named alike across the three (`--model-arg width=8`):
- `width`: how wide the network is. ResNets: the first stage's channel count (default 64, the
  published network; stages are width, 2 width, 4 width, 8 width). WRN: the widening factor k
  (default 10; stages 16k, 32k, 64k after a 16-channel stem), the "10" of WRN-28-10.
- `depth` (wrn only): total depth, 6n + 4 for n blocks per stage (default 28; 34 for TRADES).
- `dropout` (wrn only): dropout between the two convolutions of each block (default 0).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .shapes import as_image, check_image_shape


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)


def _check_width(width: int, name: str) -> None:
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"{name}: width must be an integer >= 1, got {width!r}")


class BasicBlock(nn.Module):
    """Post-activation block (He et al. 2016a): relu(bn(conv(relu(bn(conv(x))))) + shortcut(x))."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(c_in, c_out, stride), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = _conv3x3(c_out, c_out), nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, c_in, H, W) -> (N, c_out, H/s, W/s)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation block (He et al. 2016b): conv(relu(bn(conv(relu(bn(x)))))) + shortcut.

    A projection shortcut (1x1 conv, no BN) reads the pre-activated input relu(bn(x)), as in Rice
    et al.'s and kuangliu's code; an identity shortcut reads x itself. `dropout` (WRN) sits between
    the two convolutions.
    """

    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float = 0.0):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), _conv3x3(c_in, c_out, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), _conv3x3(c_out, c_out)
        self.dropout = dropout
        self.shortcut = None
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, c_in, H, W) -> (N, c_out, H/s, W/s)
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = F.relu(self.bn2(self.conv1(out)))
        if self.dropout:
            out = F.dropout(out, p=self.dropout, training=self.training)
        return self.conv2(out) + skip


def _stage(block, c_in: int, c_out: int, blocks: int, stride: int, **kwargs) -> nn.Sequential:
    """`blocks` blocks; the first changes channels and stride, the rest keep them."""
    return nn.Sequential(*[block(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, **kwargs)
                           for i in range(blocks)])


class _ResNetBase(nn.Module):
    """stem -> stages -> head (BN-ReLU for pre-activation nets) -> global average pool -> linear."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = as_image(x, self.input_shape)   # (N, C, H, W)
        h = self.stages(self.stem(x))         # (N, F, H', W')
        h = self.head(h)
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)  # (N, F)
        return self.linear(h)                 # (N, K)


class ResNet18(_ResNetBase):
    """ResNet-18, CIFAR variant. `width` (default 64): channels of the first stage."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 64):
        super().__init__()
        check_image_shape(input_shape, "resnet18")
        _check_width(width, "resnet18")
        self.input_shape = tuple(input_shape)
        c = input_shape[0]
        w = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(_conv3x3(c, w[0]), nn.BatchNorm2d(w[0]), nn.ReLU())
        self.stages = nn.Sequential(*[_stage(BasicBlock, w[max(i - 1, 0)], w[i], 2, 1 if i == 0 else 2)
                                      for i in range(4)])
        self.head = nn.Identity()
        self.linear = nn.Linear(w[3], num_classes)


class PreActResNet18(_ResNetBase):
    """PreAct-ResNet-18 of Wong et al. 2020 / Rice et al. 2020. `width` (default 64): channels of
    the first stage."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 64):
        super().__init__()
        check_image_shape(input_shape, "preact-resnet18")
        _check_width(width, "preact-resnet18")
        self.input_shape = tuple(input_shape)
        c = input_shape[0]
        w = [width, 2 * width, 4 * width, 8 * width]
        self.stem = _conv3x3(c, w[0])  # no BN-ReLU: the first block pre-activates
        self.stages = nn.Sequential(*[_stage(PreActBlock, w[max(i - 1, 0)], w[i], 2, 1 if i == 0 else 2)
                                      for i in range(4)])
        self.head = nn.Sequential(nn.BatchNorm2d(w[3]), nn.ReLU())
        self.linear = nn.Linear(w[3], num_classes)


class WideResNet(_ResNetBase):
    """WRN-depth-width (TRADES / Madry CIFAR variant). `depth` = 6n + 4 (default 28), `width` = the
    widening factor k (default 10), `dropout` between each block's convolutions (default 0).

    Initialised as in the TRADES and Rice et al. code: Kaiming-normal (fan_out) convolutions, BN
    weight 1 and bias 0, linear bias 0.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, depth: int = 28, width: int = 10,
                 dropout: float = 0.0):
        super().__init__()
        check_image_shape(input_shape, "wrn")
        _check_width(width, "wrn")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
            raise ValueError(f"wrn: depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 34, ...), got {depth!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise ValueError(f"wrn: dropout must be in [0, 1), got {dropout!r}")
        self.input_shape = tuple(input_shape)
        self.depth, self.width = depth, width
        n = (depth - 4) // 6
        c = input_shape[0]
        w = [16, 16 * width, 32 * width, 64 * width]
        self.stem = _conv3x3(c, w[0])
        self.stages = nn.Sequential(*[_stage(PreActBlock, w[i], w[i + 1], n, 1 if i == 0 else 2,
                                             dropout=float(dropout)) for i in range(3)])
        self.head = nn.Sequential(nn.BatchNorm2d(w[3]), nn.ReLU())
        self.linear = nn.Linear(w[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
