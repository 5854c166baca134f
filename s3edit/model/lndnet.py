"""Landmark encoder z_lnd: MobileNetV2-GDConv (Cunjian Chen's pytorch_face_landmark,
as DVA uses it). Our own code; module names equal DVA's checkpoint
(``encoder.lndnet.backbone.pretrain_net.*``).

Network: torchvision-layout MobileNetV2 features (224² -> 1280 x 7 x 7; the unused
ImageNet head ``classifier.1`` Linear(1280, 1000) is kept so checkpoints load key for
key), a global depthwise 7x7 conv + BN, a 1x1 conv to 136 + BN. DVA reads it as
68 (x, y) points in [0, 1] of the 224 crop, drops the 17 jaw points and keeps 51
points = 102 numbers. DVA's model also registers the features a second time under
``base_net.0`` (same tensors); we do not, and the importer checks and drops those
aliases (see ``s3edit.weights.importer.map_name``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from s3edit.model.idnet import FrozenNet

# DVA's LNDnet: the 256 crop is cut to its central 224 x 224 ([16:240]) and normalised with
# the ImageNet statistics after mapping [-1, 1] -> [0, 1].
LND_CROP = (16, 240)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
N_LANDMARKS = 68
JAW_POINTS = 17  # points 0..16 of the 68-point scheme
LND_DIM = (N_LANDMARKS - JAW_POINTS) * 2  # 102

# MobileNetV2 inverted residual settings (expansion t, width c, repeats n, stride s)
MOBILENET_V2_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                         (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn_relu6(inp: int, out: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, out: int, stride: int, expand: int):
        super().__init__()
        hidden = inp * expand
        self.use_res = stride == 1 and inp == out
        layers: list[nn.Module] = [conv_bn_relu6(inp, hidden, k=1)] if expand != 1 else []
        layers += [
            conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out, 1, bias=False),
            nn.BatchNorm2d(out),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [conv_bn_relu6(3, 32, stride=2)]
        ch = 32
        for t, c, n, s in MOBILENET_V2_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(ch, c, s if i == 0 else 1, t))
                ch = c
        layers.append(conv_bn_relu6(ch, 1280, k=1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))  # unused


class ConvBlock(nn.Module):
    """conv (no bias) + BN, no activation (the GDConv "linear" blocks)."""

    def __init__(self, inp: int, out: int, k: int, groups: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(inp, out, k, 1, 0, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class MobileNetGDConv(nn.Module):
    """x: (N, 3, 224, 224) ImageNet-normalised -> (N, 136) raw landmark regressions."""

    def __init__(self, num_outputs: int = 2 * N_LANDMARKS):
        super().__init__()
        self.pretrain_net = MobileNetV2()
        self.linear7 = ConvBlock(1280, 1280, 7, groups=1280)
        self.linear1 = ConvBlock(1280, num_outputs, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear1(self.linear7(self.pretrain_net.features(x)))
        return x.flatten(1)


def lnd_input(x: torch.Tensor) -> torch.Tensor:
    """DVA's landmark input. x: (N, 3, S, S) in [-1, 1] -> (N, 3, 224, 224) normalised.

    Crops other than 256 are resized to 256 first (bilinear; our extension, DVA only
    ever sees 256)."""
    if x.shape[-1] != 256 or x.shape[-2] != 256:
        x = F.interpolate(x, size=(256, 256), mode="bilinear", align_corners=False, antialias=True)
    x = x[:, :, LND_CROP[0]:LND_CROP[1], LND_CROP[0]:LND_CROP[1]]
    mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return ((x + 1) / 2 - mean) / std


def landmarks_to_z_lnd(points: torch.Tensor) -> torch.Tensor:
    """points: (N, 68, 2) in [0, 1] crop coordinates -> (N, 102): jaw dropped, flattened."""
    return points[:, JAW_POINTS:, :].reshape(points.shape[0], LND_DIM)


class LNDNet(FrozenNet):
    """z_lnd. x: (N, 3, S, S) aligned crops in [-1, 1] -> (N, 102) in [0, 1]."""

    out_dim = LND_DIM

    def __init__(self):
        super().__init__()
        self.backbone = MobileNetGDConv()
        self.freeze()

    def points(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 68, 2) landmarks in [0, 1] of the 224 centre crop."""
        return self.backbone(lnd_input(x)).clamp(0, 1).reshape(-1, N_LANDMARKS, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return landmarks_to_z_lnd(self.points(x))
