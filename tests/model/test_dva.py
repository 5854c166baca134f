"""The whole DVA network on its small preset: semantic encoding (z_id, z_lnd, z_face),
DVA's crops, the face parser's mask, frozen encoders, the eps contract."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from s3edit.model import bisenet
from s3edit.model.config import preset
from s3edit.model.dva import build_dva
from s3edit.model.idnet import id_crop
from s3edit.model.lndnet import LND_DIM, lnd_input


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_dva(preset("tiny-32")).eval()


def test_encode_semantics_shapes_ranges_and_gradients(tiny):
    """One real pass through IR-SE50 + MobileNet (seconds on a CPU): shapes, unit z_id,
    z_lnd in [0, 1], z_face = Linear(cat), and gradients reach the input (L_id needs them)."""
    x = (torch.rand(1, 3, 32, 32) * 2 - 1).requires_grad_(True)
    z_id, z_lnd, z_face = tiny.encode_semantics(x)
    assert z_id.shape == (1, 512) and z_lnd.shape == (1, LND_DIM) and z_face.shape == (1, 64)
    torch.testing.assert_close(z_id.norm(dim=1), torch.ones(1))
    assert z_lnd.min() >= 0 and z_lnd.max() <= 1
    torch.testing.assert_close(z_face, tiny.encoder.linear(torch.cat([z_id, z_lnd], dim=1)))
    z_id.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_fuse_broadcasts_the_clip_identity(tiny):
    z_id_rep, z_lnd = F.normalize(torch.randn(512), dim=0), torch.rand(4, LND_DIM)
    with torch.no_grad():
        torch.testing.assert_close(tiny.fuse(z_id_rep, z_lnd), tiny.fuse(z_id_rep.expand(4, -1), z_lnd))


def test_external_landmarks_drop_the_jaw(tiny):
    points = torch.rand(2, 68, 2)
    z = tiny.z_lnd(torch.zeros(2, 3, 32, 32), landmarks=points)
    assert torch.equal(z, points[:, 17:].reshape(2, 102))


def test_id_crop_is_dvas_box():
    """256 crop -> rows 35:223, cols 32:220 -> 112 by average pooling."""
    x = torch.zeros(1, 3, 256, 256)
    x[:, :, 35:223, 32:220] = 1.0
    crop = id_crop(x)
    assert crop.shape == (1, 3, 112, 112) and torch.all(crop == 1.0)
    x[:, :, 34, :] = 5.0  # just outside the box: no effect
    assert torch.all(id_crop(x) == 1.0)
    small = id_crop(torch.ones(1, 3, 64, 64))  # other sizes are pooled to 256 first
    assert small.shape == (1, 3, 112, 112)


def test_landmark_input_is_centre_crop_with_imagenet_normalisation():
    x = torch.full((1, 3, 256, 256), -1.0)
    x[:, :, 16:240, 16:240] = 1.0
    y = lnd_input(x)
    assert y.shape == (1, 3, 224, 224)
    expected = (1 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(y[0, :, 100, 100], expected)
    assert torch.allclose(y[0, :, 0, 0], expected)  # the -1 border is cropped away


def test_encoders_stay_frozen_in_train_mode(tiny):
    tiny.train()
    try:
        enc = tiny.encoder
        assert not enc.idnet.training and not enc.lndnet.training
        assert not any(p.requires_grad for p in enc.idnet.parameters())
        assert not any(p.requires_grad for p in enc.lndnet.parameters())
        assert enc.linear.weight.requires_grad and tiny.input_blocks.training
    finally:
        tiny.eval()


def test_forward_is_the_eps_contract(tiny):
    x, z_face = torch.randn(2, 3, 32, 32), torch.randn(2, 64)
    with torch.no_grad():
        eps = tiny(x, torch.tensor([3, 800]), z_face)
    assert eps.shape == x.shape


def test_face_parser_mask_drops_dvas_video_classes(monkeypatch):
    parser = bisenet.FaceParser()
    labels = torch.arange(19).repeat_interleave(2)[:32]  # one class per 2-pixel column band

    class FakeBackbone(torch.nn.Module):
        def forward(self, x):
            return fake_logits(x)

    def fake_logits(x):
        logits = torch.zeros(x.shape[0], 19, *x.shape[-2:])
        cols = F.interpolate(labels[None, None].float(), size=x.shape[-1], mode="nearest")[0, 0].long()
        logits[:, cols, :, torch.arange(x.shape[-1])] = 1.0
        return logits

    monkeypatch.setattr(parser, "backbone", FakeBackbone())
    mask = parser.face_mask(torch.zeros(1, 3, 32, 32))
    assert mask.shape == (1, 1, 32, 32)
    kept = {int(c) for c in labels[mask[0, 0, 0] > 0]}
    assert kept == set(range(19)) - set(bisenet.DVA_VIDEO_DROP_CLASSES)


def test_bisenet_logits_have_input_size():
    net = bisenet.BiSeNet().eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 19, 64, 64)


@pytest.mark.parametrize("name, trained, fp16_mb",
                         [("default-64", 3_196_131, 18), ("default-96", 3_196_131, 18), ("default-128", None, 50)])
def test_default_presets_are_offline_and_fit_the_shipping_limit(name, trained, fp16_mb):
    """The default model's architectures need no weights but their own (dlib's identity
    net, align's landmarks) and stay under the 50 MB a shipped set may take in float16."""
    config = preset(name)
    assert (config.id_encoder, config.id_dim, config.lnd_encoder, config.face_parser) == ("dlib", 128, "external", False)
    model = build_dva(config, device="meta")
    learned = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder.idnet."))
    if trained is not None:
        assert learned == trained
    total = sum(p.numel() for p in model.parameters())
    assert total * 2 / 1e6 < fp16_mb
