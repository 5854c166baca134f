"""DVA's noise predictor: eps = UNet(x_t, t, z_face).

Our own implementation of the UNet the Diffusion Video Autoencoder (Kim et al., 2023)
inherits from DiffAE / guided-diffusion, with DVA's ResBlock (below). Module names
equal the released checkpoint's, so its tensors load key for key:

    time_embed.time_embed.{0,2}     sinusoidal(model_channels) -> Linear -> SiLU -> Linear
    input_blocks.0.0                conv3x3(in_channels -> C0)
    input_blocks.k.{0,1}            ResBlock (+ AttentionBlock) | ResBlock(down)
    middle_block.{0,1,2}            ResBlock, AttentionBlock, ResBlock
    output_blocks.k.{0,1,2}         ResBlock(cat skip) (+ AttentionBlock) (+ ResBlock(up))
    out.{0,2}                       GroupNorm, SiLU, zero-initialised conv3x3

A ResBlock (names ``in_layers``/``emb_layers``/``cond_emb_layers``/``out_layers``):

    h = conv(SiLU(GN(x)))                                   in_layers 0,1,2
    h = GN(h) * (1 + s_t) + b_t     (s_t, b_t) = Linear(SiLU(emb))     out_layers 0
    h = GN(conv(SiLU(h)))                                    out_layers 1,2,3
    h = h * (1 + s_c) + b_c         (s_c, b_c) = Linear(SiLU(z_face))  cond_emb_layers
    h = conv0(Dropout(SiLU(h)))                              out_layers 4,5,6 (conv zero-init)
    return skip(x) + h              skip = Identity or conv1x1

Resampling ResBlocks apply 2x average pooling / nearest upsampling to x and to h
(between in_layers' SiLU and its conv). Attention is guided-diffusion's legacy
(heads split before q/k/v) with scale 1/sqrt(head width), run by PyTorch's
``scaled_dot_product_attention``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from s3edit.model.config import UNetConfig

# guided-diffusion's sinusoidal embedding: cos first, then sin; periods up to 10000.
MAX_PERIOD = 10_000


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t: (N,) timesteps in [0, T) (float allowed) -> (N, dim) float32 [cos | sin]."""
    half = dim // 2
    freqs = torch.exp(-math.log(MAX_PERIOD) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in float32 and returned in the input's dtype (as DVA does),
    so half-precision weights or activations keep a stable normalisation."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.float() if self.weight is not None else None
        b = self.bias.float() if self.bias is not None else None
        return F.group_norm(x.float(), self.num_groups, w, b, self.eps).to(x.dtype)


def zero_init(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimeEmbed(nn.Module):
    """Holds ``time_embed`` (Linear, SiLU, Linear) under DVA's doubled name."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.time_embed = nn.Sequential(
            nn.Linear(in_channels, out_channels), nn.SiLU(), nn.Linear(out_channels, out_channels)
        )

    def forward(self, t_emb: torch.Tensor) -> torch.Tensor:
        return self.time_embed(t_emb)


def _modulate(h: torch.Tensor, scale_shift: torch.Tensor) -> torch.Tensor:
    """h * (1 + s) + b with (s, b) = scale_shift.chunk(2) broadcast over H, W."""
    scale, shift = scale_shift.to(h.dtype)[..., None, None].chunk(2, dim=1)
    return torch.addcmul(shift, h, 1 + scale)


class ResBlock(nn.Module):
    """DVA's ResBlock (module docstring). x: (N, C_in, H, W) -> (N, C_out, H', W')."""

    def __init__(
        self, channels: int, out_channels: int, cfg: UNetConfig, *, up: bool = False, down: bool = False
    ):
        super().__init__()
        groups = cfg.norm_groups
        self.resample = "up" if up else "down" if down else None
        self.in_layers = nn.Sequential(
            GroupNorm32(groups, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(cfg.embed_channels, 2 * out_channels))
        self.cond_emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(cfg.cond_channels, 2 * out_channels))
        self.out_layers = nn.Sequential(
            GroupNorm32(groups, out_channels),
            nn.SiLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
            GroupNorm32(groups, out_channels),
            nn.SiLU(),
            nn.Dropout(cfg.dropout),
            zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.resample == "down":
            return F.avg_pool2d(x, 2)
        if self.resample == "up":
            return F.interpolate(x, scale_factor=2, mode="nearest")
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        norm_act, conv = self.in_layers[:-1], self.in_layers[-1]
        h = conv(self._resample(norm_act(x)))
        x = self._resample(x)
        out = self.out_layers
        h = _modulate(out[0](h), self.emb_layers(emb))  # time scale/shift after 1st GN
        h = out[3](out[2](out[1](h)))
        h = _modulate(h, self.cond_emb_layers(cond))  # z_face scale/shift after 2nd GN
        h = out[6](out[5](out[4](h)))
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """Self-attention over H*W positions. x: (N, C, H, W) -> same."""

    def __init__(self, channels: int, num_heads: int, groups: int):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels do not split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_init(nn.Conv1d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        x = x.reshape(N, C, H * W)
        qkv = self.qkv(self.norm(x))  # (N, 3C, T)
        # legacy order: split heads first, then q, k, v inside each head
        qkv = qkv.reshape(N * self.num_heads, 3 * C // self.num_heads, H * W)
        q, k, v = (part.transpose(1, 2) for part in qkv.chunk(3, dim=1))  # (N*heads, T, ch)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(N, C, H * W)
        return (x + self.proj_out(h)).reshape(N, C, H, W)


class Stage(nn.ModuleList):
    """One UNet step: layers applied in order; ResBlocks also get (emb, cond)."""

    def forward(self, h: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        for layer in self:
            h = layer(h, emb, cond) if isinstance(layer, ResBlock) else layer(h)
        return h


class UNet(nn.Module):
    """eps = UNet(x_t, t, cond). See the module docstring for layout and names."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.unet_config = cfg
        C, groups = cfg.model_channels, cfg.norm_groups
        self.time_embed = TimeEmbed(C, cfg.embed_channels)

        ch = C * cfg.channel_mult[0]
        self.input_blocks = nn.ModuleList([Stage([nn.Conv2d(cfg.in_channels, ch, 3, padding=1)])])
        skip_chans = [ch]
        res = cfg.image_size
        last = len(cfg.channel_mult) - 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, C * mult, cfg)]
                ch = C * mult
                if res in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, cfg.num_heads, groups))
                self.input_blocks.append(Stage(layers))
                skip_chans.append(ch)
            if level != last:
                self.input_blocks.append(Stage([ResBlock(ch, ch, cfg, down=True)]))
                skip_chans.append(ch)
                res //= 2

        self.middle_block = Stage(
            [ResBlock(ch, ch, cfg), AttentionBlock(ch, cfg.num_heads, groups), ResBlock(ch, ch, cfg)]
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_chans.pop(), C * mult, cfg)]
                ch = C * mult
                if res in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, cfg.num_heads, groups))
                if level and i == cfg.num_res_blocks:
                    layers.append(ResBlock(ch, ch, cfg, up=True))
                    res *= 2
                self.output_blocks.append(Stage(layers))

        self.out = nn.Sequential(
            GroupNorm32(groups, ch), nn.SiLU(), zero_init(nn.Conv2d(ch, cfg.out_channels, 3, padding=1))
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """x_t: (N, in_channels, S, S); t: (N,) or scalar timestep in [0, T);
        cond: (N, cond_channels) z_face -> eps: (N, out_channels, S, S) in x_t's dtype."""
        N = x_t.shape[0]
        t = torch.as_tensor(t, device=x_t.device)
        if t.ndim == 0:
            t = t.expand(N)
        emb = self.time_embed(timestep_embedding(t, self.unet_config.model_channels).to(x_t.dtype))
        cond = cond.to(x_t.dtype)
        hs = []
        h = x_t
        for block in self.input_blocks:
            h = block(h, emb, cond)
            hs.append(h)
        h = self.middle_block(h, emb, cond)
        for block in self.output_blocks:
            h = block(torch.cat([h, hs.pop()], dim=1), emb, cond)
        return self.out(h).to(x_t.dtype)
