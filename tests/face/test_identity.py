"""The identity-net interface and its dlib C++ back-end."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from s3edit.errors import InputError
from s3edit.face.detect import make_detector
from s3edit.face.identity import ID_NETS, IdentityNet, l2_normalise, make_identity_net


@pytest.fixture(scope="module")
def net() -> IdentityNet:
    return make_identity_net("dlib-cpp")


@pytest.fixture(scope="module")
def astronaut():
    image = data.astronaut()  # (512, 512, 3) uint8 RGB, public domain
    return image, make_detector("dlib").detect(image)[0].landmarks


def test_embeddings_are_normalised_and_match_dlib_single_calls(net, astronaut):
    import dlib

    image, lm = astronaut
    shifted = np.zeros((600, 640, 3), np.uint8)
    shifted[40:552, 100:612] = image  # same face, other canvas and position
    e = net.embed([image, shifted], np.stack([lm, lm + (100, 40)]))
    assert e.shape == (2, 128) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    assert float(e[0] @ e[1]) > 0.999  # translation-invariant: dlib cuts its own chip
    # the batched call equals dlib's one-face call
    rect = dlib.rectangle(*map(int, (*lm.min(0), *lm.max(0))))
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in lm])
    single = np.array(net._net.compute_face_descriptor(image, shape))
    assert float(e[0] @ (single / np.linalg.norm(single))) > 0.99999


def test_same_face_rotated_is_close_and_noise_is_far(net, astronaut):
    import cv2

    image, lm = astronaut
    m = cv2.getRotationMatrix2D((256.0, 160.0), 12.0, 0.8)  # turn 12 degrees, shrink
    turned = cv2.warpAffine(image, m, (512, 512), flags=cv2.INTER_CUBIC)
    lm_turned = lm @ m[:, :2].T + m[:, 2]
    noise = np.random.default_rng(0).integers(0, 255, image.shape, dtype=np.uint8)
    e = net.embed(np.stack([image, turned, noise]), np.stack([lm, lm_turned, lm]))
    assert float(e[0] @ e[1]) > 0.97
    # dlib's 128-d vectors share a common direction: even noise keeps a high cosine,
    # so identity scores on this net live on a compressed scale (README note).
    assert float(e[0] @ e[2]) < float(e[0] @ e[1]) - 0.05
    assert net.embed([], np.zeros((0, 68, 2))).shape == (0, 128)


def test_bad_inputs_and_names(net, astronaut):
    image, lm = astronaut
    with pytest.raises(ValueError, match="landmarks must be"):
        net.embed([image], lm)
    with pytest.raises(ValueError, match="uint8"):
        net.embed([image.astype(np.float32)], lm[None])
    with pytest.raises(InputError, match=r"unknown identity net 'arcface'; choose one of: .*dlib-cpp"):
        make_identity_net("arcface")
    assert "dlib-cpp" in ID_NETS and net.dim == 128 and "C++" in net.name


def test_l2_normalise_rows():
    x = l2_normalise(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(x, [[0.6, 0.8], [0.0, 0.0]])
