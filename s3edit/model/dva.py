"""The Diffusion Video Autoencoder network (Kim et al., CVPR 2023): the noise-predicting
UNet plus the semantic encoder that turns a face crop into z_face = Linear(cat(z_id,
z_lnd)). Its place in the package: ``docs/layout.md``.

Module names equal the released checkpoint's: UNet parts at the root (``time_embed``,
``input_blocks``, ...), the encoder under ``encoder.{idnet, lndnet, bgnet, linear}``.

The one model contract every sampler uses::

    eps = model(x_t, t, z_face)
        x_t    (N, 3, S, S)  noisy frames
        t      (N,) or ()    training timesteps in [0, T) (float allowed)
        z_face (N, face_dim)
"""

from __future__ import annotations

import torch
from torch import nn

from s3edit.errors import WeightsError
from s3edit.model.bisenet import FaceParser
from s3edit.model.config import DVAConfig
from s3edit.model.idnet import IDNet
from s3edit.model.lndnet import LNDNet, landmarks_to_z_lnd
from s3edit.model.unet import UNet


def build_id_net(cfg: DVAConfig) -> nn.Module:
    """The identity encoder the config names: (N, 3, S, S) in [-1, 1] -> (N, id_dim).

    ``arcface``: IR-SE50 (512-d). ``dlib``: the torch port of dlib's 128-d ResNet,
    expected as ``s3edit.face.dlib_resnet.DlibIDNet`` (an ``nn.Module`` taking aligned
    crops in [-1, 1] and exposing ``out_dim``)."""
    if cfg.id_encoder == "arcface":
        net: nn.Module = IDNet()
    else:
        try:
            from s3edit.face.dlib_resnet import DlibIDNet
        except ImportError as exc:
            raise WeightsError(
                "this weight set uses the dlib identity encoder, which this install lacks "
                f"({exc}); update s3edit."
            ) from exc
        net = DlibIDNet()
    dim = getattr(net, "out_dim", cfg.id_dim)
    if dim != cfg.id_dim:
        raise ValueError(f"id encoder {cfg.id_encoder!r} gives {dim}-d vectors, config says id_dim={cfg.id_dim}")
    return net


class SemanticEncoder(nn.Module):
    """DVA's ``encoder``: ``idnet`` (z_id), ``lndnet`` (z_lnd; absent when landmarks
    are supplied by the caller), ``bgnet`` (face parser; optional), ``linear`` (fusion)."""

    def __init__(self, cfg: DVAConfig):
        super().__init__()
        self.idnet = build_id_net(cfg)
        self.lndnet = LNDNet() if cfg.lnd_encoder == "mobilenet" else None
        self.bgnet = FaceParser() if cfg.face_parser else None
        self.linear = nn.Linear(cfg.id_dim + cfg.lnd_dim, cfg.face_dim)


class DVA(UNet):
    """UNet (``forward(x_t, t, z_face) -> eps``) + ``encoder`` (semantics of a crop)."""

    def __init__(self, config: DVAConfig):
        super().__init__(config.unet)
        self.config = config
        self.encoder = SemanticEncoder(config)

    @property
    def has_face_parser(self) -> bool:
        return self.encoder.bgnet is not None

    @property
    def needs_landmarks_for_id(self) -> bool:
        """The dlib identity encoder takes its face chip from the crop's landmarks."""
        return self.config.id_encoder == "dlib"

    def z_id(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, 3, S, S) aligned crops in [-1, 1] -> (N, id_dim) unit vectors.
        ``landmarks`` (N, 68, 2) in [0, 1] crop coordinates: required by the dlib
        encoder, ignored by ArcFace (which uses DVA's fixed crop box)."""
        if not self.needs_landmarks_for_id:
            return self.encoder.idnet(x)
        if landmarks is None:
            raise ValueError("this model's dlib identity encoder needs landmarks (N, 68, 2) in [0, 1]")
        return self.encoder.idnet(x, landmarks)

    def z_lnd(self, x: torch.Tensor, landmarks: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N, 3, S, S) in [-1, 1] -> (N, 102): the 51 non-jaw points in [0, 1].

        ``landmarks`` (N, 68, 2) in [0, 1] crop coordinates replaces the landmark net;
        it is required when the config's ``lnd_encoder`` is ``external``."""
        if landmarks is not None:
            return landmarks_to_z_lnd(landmarks.to(x.dtype))
        if self.encoder.lndnet is None:
            raise ValueError("this model has no landmark net; pass landmarks (N, 68, 2) in [0, 1]")
        return self.encoder.lndnet(x)

    def fuse(self, z_id: torch.Tensor, z_lnd: torch.Tensor) -> torch.Tensor:
        """z_face = Linear(cat(z_id, z_lnd)). z_id: (N, id_dim) or (id_dim,) (one clip
        identity z_id_rep, broadcast over frames); z_lnd: (N, 102) -> (N, face_dim)."""
        if z_id.ndim == 1:
            z_id = z_id.expand(z_lnd.shape[0], -1)
        z = torch.cat([z_id, z_lnd.to(z_id.dtype)], dim=1)
        return self.encoder.linear(z)

    def encode_semantics(
        self, x: torch.Tensor, landmarks: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (N, 3, S, S) aligned crops in [-1, 1] -> (z_id, z_lnd, z_face) per frame."""
        z_id = self.z_id(x, landmarks)
        z_lnd = self.z_lnd(x, landmarks)
        return z_id, z_lnd, self.fuse(z_id, z_lnd)

    def face_mask(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N, 3, S, S) in [-1, 1] -> (N, 1, S, S) DVA's hard face mask (parser)."""
        if self.encoder.bgnet is None:
            raise ValueError("this model has no face parser (config face_parser=False)")
        return self.encoder.bgnet(x)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, z_face: torch.Tensor) -> torch.Tensor:
        """eps = model(x_t, t, z_face); shapes in the module docstring."""
        return super().forward(x_t, t, z_face)


def build_dva(config: DVAConfig, device: torch.device | str | None = None) -> DVA:
    """A freshly initialised DVA (``device="meta"`` builds shapes only, for loading)."""
    with torch.device(device or "cpu"):
        return DVA(config)
