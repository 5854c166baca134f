"""Weight sets: a folder that holds one DVA network (and optionally its attribute
classifier and S3Editor's transforms) and describes itself. docs/weights.md describes
the format with the registry and the imports; in short:

    NAME/
      config.json            what the folder is (below)
      model.safetensors      the network (the EMA copy for imported DVA checkpoints);
                             keys = ``DVA.state_dict()`` keys; float tensors may be
                             stored as float16/bfloat16 (cast to the requested dtype on load)
      classifier.safetensors optional attribute heads on normalised z_id:
                             ``weight`` (A, id_dim), ``bias`` (A,),
                             ``conds_mean`` (1, id_dim), ``conds_std`` (1, id_dim)
      s3.safetensors         only in a set made by ``s3edit tune --objective s3``: the
                             S3Editor cluster transforms T_k, keys of
                             ``ClusterTransforms.state_dict()`` (``transforms.{k}.0.weight``
                             (H, id_dim+102), ``transforms.{k}.0.bias`` (H,),
                             ``transforms.{k}.2.weight`` (face_dim, H), ``transforms.{k}.2.bias``);
                             described by config.json "s3" (``s3edit.s3.selftrain.s3_record``)
      checksums.json         size and sha256 of each tensor file above (below)

config.json::

    {
      "format": "s3edit-weights",     # fixed
      "version": 1,                   # bumped on incompatible changes
      "name": "dva",                  # a short name for reports
      "model": {...},                 # DVAConfig.to_dict()
      "attributes": ["5_o_Clock_Shadow", ...],  # names of the classifier rows (CelebA
                                      # spelling); [] without a classifier
      "source": {...},                # where the tensors came from (free-form)
      "licence": "...",               # the licence of the weights
      "s3": null,                     # S3Editor routing/sparsity state: null for a plain
                                      # DVA set; else {"K", "q", "Q", "groups_zeroed",
                                      # "zeroed_per_cluster", "clusters", "hidden", ...}
                                      # (``s3edit.s3.selftrain.s3_record``)
      "sampler": "s3edit",            # the DDIM sampler runs use unless told otherwise:
                                      # "s3edit" or "dva" (docs/sampler.md)
      "identity": "l2norm_mean"       # the clip identity encode makes from the frames'
                                      # z_id: "l2norm_mean" (s3edit's) or "mean" (DVA's
                                      # plain mean; docs/edit.md)
    }

``sampler`` and ``identity`` are DVA_RULES in a set imported from DVA and S3EDIT_RULES
in every other; a config without them (the bundled default's) means S3EDIT_RULES.

Any further top-level keys are kept in ``WeightSet.meta`` and written back unchanged.

checksums.json, written by every writer of a set (``write_weight_set_files``: ``save_weight_set``,
hence ``s3edit tune`` and ``scripts/export_default.py``, and ``s3edit weights import``)::

    {
      "format": "s3edit-checksums",   # fixed
      "version": 1,
      "files": {"model.safetensors": {"size": 1234567, "sha256": "<64 hex digits>"},
                "classifier.safetensors": {...}, "s3.safetensors": {...}}
    }

It covers the tensor files, not config.json (which is read as JSON and checked against
the network's shapes, and which a user may annotate). ``load_weight_set`` refuses a set
whose tensor file is missing from it, has another size, or fails its sha256; each
file's sha256 is computed once per change of the file (size, mtime, inode), cached
under ``$S3EDIT_HOME`` (``s3edit.weights.hashing``). It then refuses any tensor that
holds NaN or infinity. A set without checksums.json (written before they existed)
loads with the safetensors header checks only; ``s3edit weights verify`` says so.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from s3edit.errors import OutputError, WeightsError
from s3edit.model.attributes import CLASSIFIER_KEYS, Classifier
from s3edit.model.config import DVAConfig
from s3edit.model.dva import DVA, build_dva
from s3edit.paths import apply_umask, describe_os_error, os_error_naming
from s3edit.weights.hashing import (
    check_sha256,
    check_sizes,
    read_checksums,
    remember_sha256,
    write_checksums,
)

FORMAT = "s3edit-weights"
VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
CLASSIFIER_FILE = "classifier.safetensors"
S3_FILE = "s3.safetensors"  # S3Editor transforms (tuned sets only)
TENSOR_FILES = (MODEL_FILE, CLASSIFIER_FILE, S3_FILE)
SHOW = 5  # names listed in an error message
SAMPLER_KEY, IDENTITY_KEY = "sampler", "identity"
S3EDIT_RULES = {SAMPLER_KEY: "s3edit", IDENTITY_KEY: "l2norm_mean"}  # sets trained by s3edit
DVA_RULES = {SAMPLER_KEY: "dva", IDENTITY_KEY: "mean"}  # sets imported from DVA: its code's


@dataclass
class WeightSet:
    """A loaded weight set: the network (eval mode), the classifier or None, and the
    rest of config.json (name, attributes, source, licence, s3, ...) as ``meta``."""

    config: DVAConfig
    model: DVA
    classifier: Classifier | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    s3_tensors: dict[str, torch.Tensor] | None = None  # s3.safetensors, when present

    @property
    def name(self) -> str:
        return str(self.meta.get("name", ""))


# --- save ---------------------------------------------------------------------------------


def _tensors_for_disk(state: dict[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    out = {}
    for key, t in state.items():
        t = t.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[key] = t.contiguous()
    return out


def write_weight_set_files(
    directory: str | os.PathLike,
    config_json: dict[str, Any],
    model_state: dict[str, torch.Tensor],
    classifier: dict[str, torch.Tensor] | None,
    *,
    overwrite: bool = False,
    s3_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write a weight set folder atomically: the files and their checksums.json go to
    a hidden sibling folder that replaces ``directory`` only when complete, with the
    modes the umask gives new files and folders. Low level: ``save_weight_set`` and
    the importer build the arguments. An OS error (a read-only folder, a full disk) is
    one OutputError naming ``directory``; nothing is left behind."""
    directory = Path(directory)
    if directory.exists() and not overwrite:
        raise OutputError(f"weight set {str(directory)!r} already exists; pass --overwrite to replace it.")
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{str(directory)!r} is a file, not a weight-set folder; choose another path.")
    files = {MODEL_FILE: model_state, CLASSIFIER_FILE: classifier, S3_FILE: s3_tensors}
    try:
        sums = _write_set(directory, config_json, {k: v for k, v in files.items() if v is not None})
    except Exception as exc:
        error = os_error_naming(exc, directory) or exc
        if not isinstance(error, OSError):
            raise
        raise OutputError(describe_os_error(error, f"the weight-set folder {str(directory)!r}", "write",
                                            "choose a folder you can write")) from exc
    for name, file_sum in sums.items():  # just hashed: the first load need not read them again
        remember_sha256(directory / name, file_sum.sha256)
    return directory


def _write_set(directory: Path, config: dict[str, Any], tensors: dict[str, dict[str, torch.Tensor]]):
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{directory.name}-", dir=directory.parent))
    try:
        for name, state in tensors.items():
            save_file(state, str(tmp / name), metadata={"format": FORMAT})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        sums = write_checksums(tmp, list(tensors))
        for path in (*tmp.iterdir(), tmp):  # tempfile and safetensors make them private
            apply_umask(path)
        if directory.exists():
            old = directory.with_name(f".old-{directory.name}-{os.getpid()}")
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return sums


def config_json(config: DVAConfig, meta: dict[str, Any] | None, attributes: list[str]) -> dict[str, Any]:
    meta = dict(meta or {})
    for key in ("format", "version", "model", "attributes"):
        meta.pop(key, None)
    return {
        "format": FORMAT,
        "version": VERSION,
        "name": meta.pop("name", ""),
        "model": config.to_dict(),
        "attributes": list(attributes),
        "source": meta.pop("source", {}),
        "licence": meta.pop("licence", "unknown"),
        "s3": meta.pop("s3", None),
        **{key: meta.pop(key, value) for key, value in S3EDIT_RULES.items()},
        **meta,
    }


def save_weight_set(
    directory: str | os.PathLike,
    model: DVA,
    config: DVAConfig | None = None,
    classifier: Classifier | None = None,
    meta: dict[str, Any] | None = None,
    *,
    dtype: torch.dtype | None = None,
    overwrite: bool = False,
    s3_tensors: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model`` (and ``classifier``, and S3Editor's ``s3_tensors``) as a weight
    set folder (format above).

    meta: name, source, licence, s3 and any extra keys for config.json. ``dtype``
    (e.g. torch.float16) stores floating tensors in that precision."""
    config = config or model.config
    cls_tensors = _tensors_for_disk(classifier.tensors(), dtype) if classifier is not None else None
    names = list(classifier.names) if classifier is not None else []
    if classifier is not None and len(names) != classifier.weight.shape[0]:
        raise ValueError(f"{len(names)} attribute names for {classifier.weight.shape[0]} classifier rows")
    return write_weight_set_files(
        directory, config_json(config, meta, names), _tensors_for_disk(model.state_dict(), dtype),
        cls_tensors, overwrite=overwrite,
        s3_tensors=None if s3_tensors is None else _tensors_for_disk(s3_tensors, None),
    )


# --- load ---------------------------------------------------------------------------------


def _names(items, n: int = SHOW) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f" and {len(items) - n} more" if len(items) > n else "")


def read_config(directory: str | os.PathLike) -> dict[str, Any]:
    """config.json of a weight set, checked for format and version."""
    directory = Path(directory)
    if not directory.is_dir():
        raise WeightsError(
            f"weight set {str(directory)!r} does not exist; run `s3edit weights list` to see the "
            "installed sets or `s3edit weights import` to make one."
        )
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise WeightsError(f"{str(directory)!r} is not a weight set: it has no {CONFIG_FILE}.")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{str(path)!r} is not valid JSON ({exc}); re-import or re-download the set.") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise WeightsError(f"{str(path)!r} is not an s3edit weight-set config (format must be {FORMAT!r}).")
    version = data.get("version")
    if version != VERSION:
        raise WeightsError(
            f"weight set {str(directory)!r} has format version {version!r}; this s3edit reads "
            f"version {VERSION}, so update s3edit or re-import the set."
        )
    return data


def _check_shapes(what: str, expected: dict[str, tuple], found: dict[str, tuple]) -> None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    mis = [f"{k} {tuple(found[k])} != {tuple(expected[k])}"
           for k in expected if k in found and tuple(found[k]) != tuple(expected[k])]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensor(s): {_names(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensor(s): {_names(unexpected)}")
    if mis:
        problems.append(f"{len(mis)} mis-shaped tensor(s): {_names(mis)}")
    if problems:
        raise WeightsError(
            f"{what} does not fit its config: " + "; ".join(problems) + "; re-import or re-download it."
        )


def _file_shapes(path: Path) -> dict[str, tuple]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for damaged files
        raise WeightsError(
            f"{str(path)!r} is not a readable safetensors file ({exc}); re-import or re-download it."
        ) from exc


def _cast(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return t.to(dtype) if dtype is not None and t.is_floating_point() else t


def load_classifier(path: Path, names: list[str], id_dim: int, device="cpu", dtype=torch.float32) -> Classifier:
    shapes = _file_shapes(path)
    A = len(names)
    expected = {"weight": (A, id_dim), "bias": (A,), "conds_mean": (1, id_dim), "conds_std": (1, id_dim)}
    _check_shapes(f"classifier {str(path)!r}", expected, shapes)
    t = load_file(str(path), device=str(device))
    return Classifier(**{k: _cast(t[k], dtype) for k in CLASSIFIER_KEYS}, names=list(names))


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating tensors that hold NaN or infinity.

    A NaN or infinity anywhere makes a tensor's sum non-finite, and a sum in the
    tensor's own dtype reads it once without the boolean copy ``isfinite`` makes (0.2 s
    instead of about 7 s for DVA's 250 M float32 values on one loaded CPU core); only a
    sum that overflowed is checked element by element."""
    return [k for k, t in tensors.items()
            if t.is_floating_point() and not bool(torch.isfinite(t.sum()))
            and not bool(torch.isfinite(t).all())]


def _refuse_nonfinite(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    bad = nonfinite_tensors(tensors)
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise WeightsError(
            f"tensor {bad[0]!r}{more} of {str(path)!r} holds NaN or infinite values (the file is "
            "damaged or its training diverged); get the set again (re-download, re-import or re-export "
            "it), or retrain it."
        )


def check_set_files(directory: Path, *, cached: bool = True) -> dict[str, str] | None:
    """The integrity checks ``load_weight_set`` makes before reading tensors (module
    docstring): with a checksums.json, every tensor file present is recorded there with
    its size, each safetensors header reads and the sha256 of each file matches
    (computed once per change of the file when ``cached``); without one, the headers
    only. Returns name -> sha256 (None without checksums.json); problems raise
    WeightsError."""
    present = [name for name in TENSOR_FILES if (directory / name).is_file()]
    sums = read_checksums(directory)
    if sums is not None:
        check_sizes(directory, sums, present)
    for name in present:
        _file_shapes(directory / name)  # the header: a damaged one is one clear error
    return None if sums is None else check_sha256(directory, sums, cached=cached)


def load_weight_set(
    directory: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype | None = torch.float32,
    *, check_files: bool = True, check_finite: bool = True,
) -> WeightSet:
    """Load a weight set folder -> WeightSet(config, model (eval, on ``device``, float
    tensors cast to ``dtype``), classifier or None, meta). Problems raise WeightsError.

    ``check_files``: the files against checksums.json first (``check_set_files``);
    ``check_finite``: refuse a tensor that holds NaN or infinity (as stored, before the
    cast). ``s3edit weights verify`` turns both off and makes the checks itself, to list
    every problem instead of stopping at the first."""
    directory = Path(directory)
    data = read_config(directory)
    try:
        config = DVAConfig.from_dict(data["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"the model config in {str(directory / CONFIG_FILE)!r} is invalid ({exc}).") from exc
    model_path = directory / MODEL_FILE
    if not model_path.is_file():
        raise WeightsError(f"weight set {str(directory)!r} has no {MODEL_FILE}; re-import or re-download it.")
    if check_files:
        check_set_files(directory)

    model = build_dva(config, device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    _check_shapes(f"{str(model_path)!r}", expected, _file_shapes(model_path))
    stored = load_file(str(model_path), device=str(device))
    if check_finite:
        _refuse_nonfinite(model_path, stored)
    state = {k: _cast(v, dtype) for k, v in stored.items()}
    del stored
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()

    attributes = list(data.get("attributes") or [])
    classifier = None
    if (directory / CLASSIFIER_FILE).is_file():
        classifier = load_classifier(directory / CLASSIFIER_FILE, attributes, config.id_dim, device, dtype or torch.float32)
        if check_finite:
            _refuse_nonfinite(directory / CLASSIFIER_FILE, classifier.tensors())
    meta = {k: v for k, v in data.items() if k not in ("format", "version", "model")}
    s3_tensors = None
    if (directory / S3_FILE).is_file():
        _file_shapes(directory / S3_FILE)  # a damaged file: one clear WeightsError
        s3_tensors = load_file(str(directory / S3_FILE), device=str(device))
        if check_finite:
            _refuse_nonfinite(directory / S3_FILE, s3_tensors)
        s3_tensors = {k: _cast(v, dtype) for k, v in s3_tensors.items()}
    return WeightSet(config=config, model=model, classifier=classifier, meta=meta, s3_tensors=s3_tensors)


def random_weight_set(
    directory: str | os.PathLike, preset_name: str = "tiny-32-dlib", seed: int = 0,
    *, name: str = "tiny-random", overwrite: bool = False, meta: dict[str, Any] | None = None,
) -> Path:
    """A weight set of random weights with random heads over the 40 CelebA names, for
    exercising the machinery (tests, ``benchmarks/ablation.py --quick``, timing a
    preset's architecture in ``benchmarks/speed.py``): it runs every stage, it edits
    nothing meaningfully. Zero-initialised layers get small random weights so eps depends
    on x_t, t and z_face; the identity net keeps its own. ``meta``: more config.json keys
    (e.g. ``DVA_RULES``)."""
    from s3edit.model.attributes import CELEBA_ATTRIBUTES
    from s3edit.model.config import preset

    torch.manual_seed(seed)
    config = preset(preset_name)
    model = build_dva(config).eval()
    for key, p in model.named_parameters():
        if not key.startswith("encoder.idnet.") and not p.detach().any():
            torch.nn.init.normal_(p, std=0.02)
    g = torch.Generator().manual_seed(seed)
    D, A = config.id_dim, len(CELEBA_ATTRIBUTES)
    classifier = Classifier(torch.randn(A, D, generator=g), torch.randn(A, generator=g),
                            torch.randn(1, D, generator=g) * 0.01, torch.full((1, D), 0.05),
                            list(CELEBA_ATTRIBUTES))
    return save_weight_set(directory, model, classifier=classifier,
                           meta={"name": name, "licence": "random weights, for tests", **(meta or {})},
                           overwrite=overwrite)
