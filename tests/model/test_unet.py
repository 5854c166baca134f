"""DVA's UNet: names and shapes of the full configuration against the released
checkpoint's table, the parameter count, and the behaviour of its blocks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from s3edit.model.config import DVAConfig, UNetConfig, preset
from s3edit.model.dva import build_dva
from s3edit.weights.importer import map_name
from s3edit.model.unet import AttentionBlock, ResBlock, UNet, timestep_embedding

TINY = UNetConfig(image_size=16, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(8,), embed_channels=32, cond_channels=24, norm_groups=8, dropout=0.0)



def randomised(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised layers random weights (a fresh UNet predicts 0)."""
    torch.manual_seed(seed)
    for p in model.parameters():
        if not p.detach().any():
            torch.nn.init.normal_(p, std=0.1)
    return model.eval()


def test_full_config_matches_dva_checkpoint_table(dva_reference_table):
    """Every tensor of DVA's table maps onto our full model (one name map) with its
    shape, and nothing of ours is left over."""
    model = build_dva(preset("dva-256"), device="meta")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    table = dva_reference_table
    assert len(table) == 1986
    mapped = {}
    for name, shape in table.items():
        key, _ = map_name(name)
        assert key in ours, name
        assert ours[key] == shape, name
        mapped[key] = name
    assert set(mapped) == set(ours)


def test_full_unet_has_dvas_parameter_count():
    model = build_dva(preset("dva-256"), device="meta")  # shapes only: no memory, no init time
    unet_params = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder."))
    assert unet_params == 190_576_643  # the UNet of DVA's released checkpoint: 190.6 M
    assert round(unet_params / 1e6, 1) == 190.6


def test_timestep_embedding_is_cos_then_sin():
    emb = timestep_embedding(torch.tensor([0.0, 10.0]), 8)
    assert emb.shape == (2, 8)
    assert torch.equal(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    freqs = torch.exp(-math.log(10_000) * torch.arange(4) / 4)
    torch.testing.assert_close(emb[1], torch.cat([torch.cos(10 * freqs), torch.sin(10 * freqs)]))


def test_resblock_follows_dvas_order():
    """in_layers; time scale/shift after the 1st GN of out_layers; z_face scale/shift
    after the 2nd GN; zero conv last; 1x1 skip when widths differ."""
    block = randomised(ResBlock(16, 24, TINY))
    x, emb, cond = torch.randn(2, 16, 8, 8), torch.randn(2, 32), torch.randn(2, 24)
    o = block.out_layers
    h = block.in_layers(x)
    ts, tb = block.emb_layers(emb)[..., None, None].chunk(2, dim=1)
    cs, cb = block.cond_emb_layers(cond)[..., None, None].chunk(2, dim=1)
    h = o[0](h) * (1 + ts) + tb
    h = o[3](o[2](F.silu(h)))
    h = h * (1 + cs) + cb
    h = o[6](F.silu(h))
    torch.testing.assert_close(block(x, emb, cond), block.skip_connection(x) + h)
    assert isinstance(block.skip_connection, torch.nn.Conv2d)
    fresh = ResBlock(16, 16, TINY)
    assert not fresh.out_layers[6].weight.any() and not fresh.out_layers[6].bias.any()
    assert isinstance(fresh.skip_connection, torch.nn.Identity)


def test_resampling_resblocks_change_resolution():
    x, emb, cond = torch.randn(1, 16, 8, 8), torch.randn(1, 32), torch.randn(1, 24)
    assert randomised(ResBlock(16, 16, TINY, down=True))(x, emb, cond).shape == (1, 16, 4, 4)
    up = ResBlock(16, 16, TINY, up=True)  # fresh: the residual branch is zero
    torch.testing.assert_close(up(x, emb, cond), F.interpolate(x, scale_factor=2, mode="nearest"))
    down = ResBlock(16, 16, TINY, down=True)
    torch.testing.assert_close(down(x, emb, cond), F.avg_pool2d(x, 2))


def test_attention_is_softmax_attention_with_legacy_head_order():
    block = randomised(AttentionBlock(16, num_heads=2, groups=8))
    x = torch.randn(2, 16, 4, 4)
    qkv = block.qkv(block.norm(x.reshape(2, 16, 16))).reshape(4, 24, 16)  # (N*heads, 3*ch, T)
    q, k, v = qkv.split(8, dim=1)
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(8), dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(2, 16, 16)
    expected = (x.reshape(2, 16, 16) + block.proj_out(a)).reshape(2, 16, 4, 4)
    torch.testing.assert_close(block(x), expected)


def test_fresh_unet_predicts_zero_and_shapes():
    unet = UNet(TINY).eval()
    x = torch.randn(3, 3, 16, 16)
    eps = unet(x, torch.tensor([0, 500, 999]), torch.randn(3, 24))
    assert eps.shape == x.shape and not eps.any()  # zero-initialised output conv


def test_unet_is_batch_consistent_and_depends_on_inputs():
    unet = randomised(UNet(TINY))
    x, cond = torch.randn(3, 3, 16, 16), torch.randn(3, 24)
    t = torch.tensor([5, 400, 900])
    with torch.no_grad():
        batched = unet(x, t, cond)
        single = torch.cat([unet(x[i:i + 1], t[i:i + 1], cond[i:i + 1]) for i in range(3)])
        torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)
        same_t = unet(x, 400, cond)  # a scalar t is broadcast
        torch.testing.assert_close(same_t[1], batched[1], atol=1e-5, rtol=1e-4)
        assert not torch.allclose(unet(x, t, cond + 1), batched)
        assert not torch.allclose(unet(x, t + 50, cond), batched)


def test_unet_under_bf16_autocast_is_close_to_fp32():
    unet = randomised(UNet(TINY))
    x, t, cond = torch.randn(2, 3, 16, 16), torch.tensor([10, 700]), torch.randn(2, 24)
    with torch.no_grad():
        ref = unet(x, t, cond)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = unet(x, t, cond)
    assert low.dtype == torch.float32 and low.shape == ref.shape
    assert (low - ref).abs().max() < 0.05 * ref.abs().max() + 1e-3


def test_config_round_trip_and_validation():
    cfg = preset("small-64")
    assert DVAConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="norm_groups"):
        UNetConfig(model_channels=20, norm_groups=8)
    with pytest.raises(ValueError, match="face_dim"):
        DVAConfig(unet=UNetConfig(cond_channels=64), face_dim=512)
    with pytest.raises(ValueError, match="unknown model config fields"):
        DVAConfig.from_dict({**cfg.to_dict(), "colour": 1})
    with pytest.raises(KeyError, match="tiny-32"):
        preset("huge")
