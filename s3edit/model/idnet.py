"""Identity encoder z_id: ArcFace IR-SE50 (InsightFace's IR-SE50 as ported to PyTorch
by TreB1eN and used by pSp/e4e/DiffAE/DVA), with DVA's crop. Our own code; module
names equal DVA's checkpoint (``encoder.idnet.backbone.*``).

IR-SE50: conv3x3(3->64) BN PReLU, then 3+4+14+3 bottlenecks of widths 64/128/256/512
(first of each stage strided by 2), then BN, Dropout, Flatten, Linear(512*7*7 -> 512),
BN1d, L2 normalisation. A bottleneck: res = BN, conv3x3, PReLU, conv3x3(stride), BN,
squeeze-excitation (reduction 16, ReLU, sigmoid, no biases); shortcut = 1x1-strided
max-pool when widths match, else conv1x1(stride) + BN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# DVA's IDnet: the [-1, 1] crop is pooled to 256, cut to this box, pooled to 112.
ID_POOL_SIZE = 256
ID_CROP_ROWS = (35, 223)
ID_CROP_COLS = (32, 220)
ID_INPUT_SIZE = 112
ID_DIM = 512

# (in width, out width, units) per stage of IR-50 (InsightFace get_blocks(50))
IR50_STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))
SE_REDUCTION = 16


class SEModule(nn.Module):
    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1))))
        return x * torch.sigmoid(w)


class BottleneckIRSE(nn.Module):
    def __init__(self, in_ch: int, depth: int, stride: int):
        super().__init__()
        if in_ch == depth:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_ch, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_ch),
            nn.Conv2d(in_ch, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """x: (N, 3, 112, 112) in [-1, 1] -> (N, 512) unit vectors."""

    def __init__(self, drop_ratio: float = 0.6):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        units = []
        for in_ch, depth, n in IR50_STAGES:
            units.append(BottleneckIRSE(in_ch, depth, 2))
            units += [BottleneckIRSE(depth, depth, 1) for _ in range(n - 1)]
        self.body = nn.Sequential(*units)
        side = ID_INPUT_SIZE // 16
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512),
            nn.Dropout(drop_ratio),
            nn.Flatten(),
            nn.Linear(512 * side * side, ID_DIM),
            nn.BatchNorm1d(ID_DIM),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1)


def id_crop(x: torch.Tensor) -> torch.Tensor:
    """DVA's identity crop. x: (N, 3, S, S) in [-1, 1] -> (N, 3, 112, 112)."""
    if x.shape[-1] != ID_POOL_SIZE or x.shape[-2] != ID_POOL_SIZE:
        x = F.adaptive_avg_pool2d(x, ID_POOL_SIZE)
    x = x[:, :, ID_CROP_ROWS[0]:ID_CROP_ROWS[1], ID_CROP_COLS[0]:ID_CROP_COLS[1]]
    return F.adaptive_avg_pool2d(x, ID_INPUT_SIZE)


class FrozenNet(nn.Module):
    """A pretrained net that stays in eval mode (BatchNorm statistics are never
    updated) and has no trainable parameters; gradients still flow to its input."""

    def __init__(self) -> None:
        super().__init__()

    def freeze(self) -> None:
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)


class IDNet(FrozenNet):
    """z_id = ArcFace(id_crop(x)). x: (N, 3, S, S) aligned crops in [-1, 1] -> (N, 512)."""

    out_dim = ID_DIM

    def __init__(self):
        super().__init__()
        self.backbone = IRSE50()
        self.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(id_crop(x))
