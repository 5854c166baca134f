"""Typed configurations of the DVA network (``docs/layout.md``), saved as JSON inside
every weight set (``docs/weights.md``) so a weight set describes itself.

Presets (``PRESETS[name]``):
- ``dva-256``: the released Diffusion Video Autoencoder (Kim et al., CVPR 2023) —
  256², base width 128, mults (1,1,2,2,4,4), attention at 16², 190.6 M UNet
  parameters, ArcFace IR-SE50 + MobileNetV2-GDConv landmarks + BiSeNet parser.
- ``default-64``: the architecture of the default model that ships (64², dlib
  identity, align's landmarks; 3.2 M trained parameters): small enough to train on a CPU.
- ``default-128``: the same at 128², width 48 (23.7 M parameters): the GPU retrain of
  the default model (``weights/default/TRAINING.md``).
- ``small-64``: the same architecture at 64², width 32, mults (1,2,2), for a small
  model that trains on a CPU.
- ``tiny-32``: 32², width 32, mults (1,2), one res block per level: unit tests.
- ``tiny-32-dlib``: ``tiny-32`` with dlib's 128-d identity net and align's landmarks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

ID_ENCODERS = ("arcface", "dlib")  # "arcface": IR-SE50, 512-d; "dlib": dlib ResNet, 128-d
LND_ENCODERS = ("mobilenet", "external")  # "external": 68 landmarks supplied by the caller

# z_lnd = the 51 non-jaw points of the 68-point scheme, (x, y) each: DVA's LNDnet.
LND_DIM = 102


@dataclass
class UNetConfig:
    """DVA's noise predictor eps(x_t, t, z_face) (DiffAE's BeatGANs UNet as DVA modified it).

    The decoder has ``num_res_blocks + 1`` blocks per level; resampling is done by
    ResBlocks (``resblock_updown``), attention (``num_heads``) wherever the feature map
    side is in ``attention_resolutions`` and in the middle block."""

    image_size: int = 256
    in_channels: int = 3
    out_channels: int = 3
    model_channels: int = 128
    channel_mult: tuple[int, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    num_heads: int = 1
    dropout: float = 0.1
    embed_channels: int = 512  # width of the time embedding MLP
    cond_channels: int = 512  # width of z_face
    norm_groups: int = 32

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        down = 2 ** (len(self.channel_mult) - 1)
        if self.image_size % down:
            raise ValueError(f"image_size {self.image_size} is not divisible by {down}")
        widths = {self.model_channels * m for m in self.channel_mult}
        if any(w % self.norm_groups for w in widths):
            raise ValueError(f"norm_groups {self.norm_groups} does not divide widths {sorted(widths)}")


@dataclass
class DVAConfig:
    """The whole network: UNet + semantic encoder (identity, landmarks, fusion, parser)."""

    unet: UNetConfig = field(default_factory=UNetConfig)
    id_encoder: str = "arcface"
    id_dim: int = 512
    lnd_encoder: str = "mobilenet"
    lnd_dim: int = LND_DIM
    face_dim: int = 512
    face_parser: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.unet, dict):
            self.unet = UNetConfig(**self.unet)
        if self.id_encoder not in ID_ENCODERS:
            raise ValueError(f"id_encoder {self.id_encoder!r} is not one of {ID_ENCODERS}")
        if self.lnd_encoder not in LND_ENCODERS:
            raise ValueError(f"lnd_encoder {self.lnd_encoder!r} is not one of {LND_ENCODERS}")
        if self.lnd_dim != LND_DIM:
            raise ValueError(f"lnd_dim must be {LND_DIM} (51 points x 2)")
        if self.unet.cond_channels != self.face_dim:
            raise ValueError(
                f"unet.cond_channels ({self.unet.cond_channels}) must equal face_dim ({self.face_dim})"
            )

    @property
    def image_size(self) -> int:
        return self.unet.image_size

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DVAConfig":
        """Inverse of ``to_dict``; unknown keys are an error (a newer format)."""
        names = {f.name for f in dataclasses.fields(cls)}
        extra = set(data) - names
        if extra:
            raise ValueError(f"unknown model config fields: {sorted(extra)}")
        unet = dict(data.get("unet", {}))
        unet_names = {f.name for f in dataclasses.fields(UNetConfig)}
        if set(unet) - unet_names:
            raise ValueError(f"unknown unet config fields: {sorted(set(unet) - unet_names)}")
        return cls(**{**data, "unet": UNetConfig(**unet)})


def dva_256() -> DVAConfig:
    """DVA's released configuration (Kim et al., 2023: the published checkpoint's)."""
    return DVAConfig()


def small_64() -> DVAConfig:
    """64² model of the same architecture, small enough to train on a CPU."""
    unet = UNetConfig(
        image_size=64, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2,
        attention_resolutions=(16,), embed_channels=128, cond_channels=256, norm_groups=8,
    )
    return DVAConfig(unet=unet, face_dim=256, face_parser=False)


def tiny_32() -> DVAConfig:
    """32² model for unit tests (runs in milliseconds on a CPU)."""
    unet = UNetConfig(
        image_size=32, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
        attention_resolutions=(16,), embed_channels=64, cond_channels=64, norm_groups=8,
        dropout=0.0,
    )
    return DVAConfig(unet=unet, face_dim=64, face_parser=False)


def tiny_32_dlib() -> DVAConfig:
    """``tiny-32`` with the offline encoders: dlib's 128-d identity net and the
    landmarks from ``align`` (no ArcFace, no landmark net): fast CPU tests."""
    config = tiny_32()
    config.id_encoder, config.id_dim, config.lnd_encoder = "dlib", 128, "external"
    return config


def default_128() -> DVAConfig:
    """The default model's architecture at 128² for a GPU retrain
    (``weights/default/TRAINING.md``): width 48, mults (1,1,2,2,4), attention at 16²,
    dlib's 128-d identity net and align's landmarks, no face parser: 23.7 M parameters,
    47 MB in float16."""
    unet = UNetConfig(
        image_size=128, model_channels=48, channel_mult=(1, 1, 2, 2, 4), num_res_blocks=2,
        attention_resolutions=(16,), embed_channels=256, cond_channels=256, norm_groups=16,
    )
    return DVAConfig(unet=unet, id_encoder="dlib", id_dim=128, lnd_encoder="external",
                     face_dim=256, face_parser=False)


def default_64() -> DVAConfig:
    """The architecture of the default model that ships inside the project
    (``weights/default/MODEL_CARD.md``), sized to train on two CPU cores: 64², width 32,
    mults (1,2,2,2), one res block per level, attention at 8² (and the middle), no
    dropout, dlib's 128-d identity net and align's landmarks, no face parser: 3.2 M
    trained parameters (8.8 M with the frozen dlib net; 18 MB in float16)."""
    unet = UNetConfig(
        image_size=64, model_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1,
        attention_resolutions=(8,), embed_channels=128, cond_channels=256, norm_groups=8,
        dropout=0.0,
    )
    return DVAConfig(unet=unet, id_encoder="dlib", id_dim=128, lnd_encoder="external",
                     face_dim=256, face_parser=False)


def default_96() -> DVAConfig:
    """``default-64`` at 96²: the same width, blocks and levels (96, 48, 24, 12; attention
    at 12² and the middle), so the same 3.2 M trained parameters see 2.25 times the
    pixels: the largest crop the default model's training fits in on two CPU cores
    (``weights/default/TRAINING.md`` step 4)."""
    config = default_64()
    config.unet.image_size, config.unet.attention_resolutions = 96, (12,)
    return config


PRESETS = {
    "dva-256": dva_256, "default-64": default_64, "default-96": default_96, "default-128": default_128,
    "small-64": small_64,
    "tiny-32": tiny_32, "tiny-32-dlib": tiny_32_dlib,
}


def preset(name: str) -> DVAConfig:
    """A fresh config by preset name (``dva-256``, ``small-64``, ``tiny-32``)."""
    if name not in PRESETS:
        raise KeyError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()
