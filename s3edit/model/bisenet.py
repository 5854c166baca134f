"""Face parser: BiSeNet (zllrunning's face-parsing.PyTorch, trained on CelebAMask-HQ,
19 classes) as DVA carries it in its checkpoint (``encoder.bgnet.backbone.*``). Our
own code; module names equal DVA's.

Layout: ResNet-18 context path (``cp.resnet``) giving 1/8, 1/16, 1/32 features;
attention refinement (``arm16``, ``arm32``: conv3x3-BN-ReLU, global pool, 1x1 conv,
BN, sigmoid gate) with a global-context branch (``conv_avg``); nearest upsampling and
``conv_head32/16``; the 1/8 ResNet feature stands in for the spatial path; feature
fusion (``ffm``: 1x1 conv-BN-ReLU, squeeze-excite gate, residual); heads
``conv_out`` (+ auxiliary ``conv_out16/32``, kept for loading, unused at inference);
bilinear (align_corners=True) upsampling to the input size. All convs are bias-free.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from s3edit.model.idnet import FrozenNet
from s3edit.model.lndnet import IMAGENET_MEAN, IMAGENET_STD

N_CLASSES = 19
# CelebAMask-HQ classes as face-parsing.PyTorch numbers them.
CLASS_NAMES = ("background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear",
               "r_ear", "ear_r", "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth",
               "hair", "hat")
# DVA's BGnet: parse at 512 (nearest resize); its mask for videos keeps every class but
# background, hat and cloth (what its image mask drops) and ears, neck and hair.
PARSE_SIZE = 512
DVA_VIDEO_DROP_CLASSES = tuple(CLASS_NAMES.index(name) for name in (
    "background", "hat", "cloth", "l_ear", "r_ear", "neck", "hair"))  # 0, 18, 16, 7, 8, 14, 17


class ConvBNReLU(nn.Module):
    def __init__(self, inp: int, out: int, k: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(inp, out, k, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    def __init__(self, inp: int, out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.downsample = None
        if inp != out or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        s = x if self.downsample is None else self.downsample(x)
        return F.relu(s + r)


def _layer(inp: int, out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(BasicBlock(inp, out, stride), BasicBlock(out, out, 1))


class ResNet18(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = _layer(64, 64, 1)
        self.layer2 = _layer(64, 128, 2)
        self.layer3 = _layer(128, 256, 2)
        self.layer4 = _layer(256, 512, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinement(nn.Module):
    def __init__(self, inp: int, out: int):
        super().__init__()
        self.conv = ConvBNReLU(inp, out)
        self.conv_atten = nn.Conv2d(out, out, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        gate = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * gate


class ContextPath(nn.Module):
    def __init__(self):
        super().__init__()
        self.resnet = ResNet18()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, k=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))  # nearest-upsampling a 1x1 = broadcast
        up32 = F.interpolate(self.arm32(feat32) + avg, size=feat16.shape[-2:], mode="nearest")
        up32 = self.conv_head32(up32)
        up16 = F.interpolate(self.arm16(feat16) + up32, size=feat8.shape[-2:], mode="nearest")
        return feat8, self.conv_head16(up16)


class FeatureFusion(nn.Module):
    def __init__(self, inp: int, out: int):
        super().__init__()
        self.convblk = ConvBNReLU(inp, out, k=1, padding=0)
        self.conv1 = nn.Conv2d(out, out // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out // 4, out, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        gate = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat * gate + feat


class OutputHead(nn.Module):
    def __init__(self, inp: int, mid: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(inp, mid)
        self.conv_out = nn.Conv2d(mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """x: (N, 3, H, W) ImageNet-normalised -> (N, 19, H, W) class logits."""

    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = OutputHead(256, 256, n_classes)
        self.conv_out16 = OutputHead(128, 64, n_classes)  # auxiliary (training only)
        self.conv_out32 = OutputHead(128, 64, n_classes)  # auxiliary (training only)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat8, cp8 = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, cp8))
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=True)


class FaceParser(FrozenNet):
    """DVA's ``bgnet``: parse aligned crops and build face masks."""

    def __init__(self):
        super().__init__()
        self.backbone = BiSeNet(N_CLASSES)
        self.freeze()

    def parse(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, S, S) in [-1, 1] -> (N, S, S) int64 class labels (parsed at 512)."""
        size = x.shape[-2:]
        y = F.interpolate(x, size=(PARSE_SIZE, PARSE_SIZE), mode="nearest").clamp(-1, 1)
        mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        labels = self.backbone(((y + 1) / 2 - mean) / std).argmax(dim=1, keepdim=True)
        return F.interpolate(labels.float(), size=size, mode="nearest").long()[:, 0]

    def face_mask(self, x: torch.Tensor, drop_classes=DVA_VIDEO_DROP_CLASSES) -> torch.Tensor:
        """x: (N, 3, S, S) in [-1, 1] -> (N, 1, S, S) float {0, 1}: 1 where the class is
        not in ``drop_classes`` (DVA's hard video mask by default)."""
        labels = self.parse(x)
        drop = torch.tensor(drop_classes, device=x.device)
        return (~torch.isin(labels, drop)).float()[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.face_mask(x)
