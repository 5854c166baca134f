"""Import DVA's published files into a weight set (``s3edit.weights.weightset``).

``import_weights`` is ``s3edit weights import``: it hashes the source files (a sha256
the registry knows must match), converts them with ``import_dva`` into
``weights_home()/NAME`` (or the folder ``-o`` names) and returns an ``ImportResult`` that ``import_summary`` and
``format_import_summary`` print. ``import_dva`` is the conversion alone, into any folder.

Sources (users download them by hand):
- the network: a PyTorch-Lightning checkpoint (``epoch=51-step=1000000.ckpt``) whose
  ``state_dict`` holds the network twice, ``model.*`` and ``ema_model.*``; we take
  the EMA copy (what DVA edits with);
- optionally the classifier checkpoint: ``ema_classifier.{weight,bias}`` (preferred)
  or ``classifier.{weight,bias}``, and buffers ``conds_mean``/``conds_std``;
- optionally DiffAE-style ``latent.pkl`` statistics (``conds_mean``, ``conds_std``),
  which replace the classifier checkpoint's.

Safety: these files are pickles from strangers, and unpickling can run code. We
first try ``torch.load(weights_only=True)`` (PyTorch's allow-list unpickler). A real
Lightning checkpoint also pickles its training configuration (``hyper_parameters``:
enums and dataclasses of the authors' code), which ``weights_only`` refuses; then we
use our own restricted unpickler (``RestrictedUnpickler``): tensors, storages, plain
containers, numbers, strings and numpy arrays load as themselves; any global from a
module that runs commands or code (``os``, ``subprocess``, ``builtins.eval``, ``runpy``,
``pickle``, ...) makes the load fail; every other global (the authors' own classes,
enums, anything unknown) becomes an inert ``Opaque`` placeholder that is never
imported or called. Nothing in
the file is executed either way, and only tensors are read from the result.

The one name map (``map_name``), DVA checkpoint name (``ema_model.`` stripped) ->
our ``DVA.state_dict()`` key:
- ``encoder.lndnet.backbone.base_net.0.<rest>`` is an alias DVA's MobileNet module
  registers for the same tensors as ``encoder.lndnet.backbone.pretrain_net.features.<rest>``;
  the importer checks that each alias equals its original and does not store it;
- every other name maps to itself.
"""

from __future__ import annotations

import os
import pickle
import types
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from s3edit.errors import InputError, OutputError, WeightsError
from s3edit.model.attributes import CELEBA_ATTRIBUTES
from s3edit.model.config import DVAConfig, dva_256
from s3edit.model.dva import build_dva
from s3edit.paths import require_input_file
from s3edit.weights.hashing import sha256_file
from s3edit.weights.registry import Registry, import_dir, load_registry
from s3edit.weights.weightset import CLASSIFIER_KEYS, DVA_RULES, config_json, write_weight_set_files

EMA_PREFIX = "ema_model."
RAW_PREFIX = "model."
ALIAS_PREFIX = "encoder.lndnet.backbone.base_net.0."
ALIAS_TARGET = "encoder.lndnet.backbone.pretrain_net.features."
SHOW = 5

# Where DVA's files come from and under which terms (shown in config.json).
DVA_SOURCE_URL = "https://github.com/gmkim-ai/Diffusion-Video-Autoencoders"
DVA_LICENCE = (
    "DVA code: MIT (gmkim-ai/Diffusion-Video-Autoencoders). The released checkpoint names no "
    "licence of its own; it bundles ArcFace IR-SE50, MobileNetV2-GDConv (pytorch_face_landmark) "
    "and BiSeNet (face-parsing.PyTorch) weights under their authors' terms, and was trained on "
    "VoxCeleb (research use). Check these before any commercial use."
)


def map_name(name: str) -> tuple[str, bool]:
    """DVA checkpoint name (prefix stripped) -> (our state_dict key, is_alias)."""
    if name.startswith(ALIAS_PREFIX):
        return ALIAS_TARGET + name[len(ALIAS_PREFIX):], True
    return name, False


# --- safe loading ------------------------------------------------------------------------

# Top-level modules whose globals run commands or code: a weights file has no business
# naming them, so their presence refuses the file (every other unknown global is only
# neutralised as an Opaque placeholder, which is never imported or called).
DANGEROUS_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "_posixsubprocess", "sys", "builtins", "__builtin__",
    "importlib", "runpy", "pty", "ctypes", "code", "codeop", "marshal", "pickle", "_pickle",
    "shutil", "socket", "webbrowser", "multiprocessing", "pdb", "bdb", "timeit", "trace",
    "cProfile", "profile", "doctest", "pydoc", "dill", "cloudpickle", "joblib", "types",
    "site", "sysconfig", "_winapi", "msvcrt", "winreg", "signal", "asyncio", "threading",
    "_thread", "http", "urllib", "ftplib", "smtplib", "telnetlib", "xmlrpc", "ssl", "yaml",
    "setuptools", "pip", "distutils", "idlelib", "zipimport", "tarfile", "zipfile",
})

# Globals that load as themselves: tensor rebuilding, containers, numbers, numpy arrays.
SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): torch._utils._rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("builtins", "complex"): complex,
    ("builtins", "bytearray"): bytearray,
    ("_codecs", "encode"): None,  # filled below: bytes in protocol-2 pickles
}
try:
    import _codecs

    SAFE_GLOBALS[("_codecs", "encode")] = _codecs.encode
except ImportError:  # pragma: no cover
    SAFE_GLOBALS.pop(("_codecs", "encode"))
try:
    import numpy as _np

    _multiarray = getattr(_np, "_core", None) or _np.core
    for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        SAFE_GLOBALS[(_mod, "_reconstruct")] = _multiarray.multiarray._reconstruct
        SAFE_GLOBALS[(_mod, "scalar")] = _multiarray.multiarray.scalar
    SAFE_GLOBALS[("numpy", "ndarray")] = _np.ndarray
    SAFE_GLOBALS[("numpy", "dtype")] = _np.dtype
except (ImportError, AttributeError):  # pragma: no cover
    pass
for _dt in ("float16", "bfloat16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"):
    SAFE_GLOBALS[("torch", _dt)] = getattr(torch, _dt)


class Opaque:
    """Inert stand-in for an object of a class we will not import (a training
    config's enum or dataclass). It records what the pickle said and nothing else."""

    global_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args, obj.state, obj.items, obj.values = args, None, {}, []
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):
        self.items[key] = value

    def append(self, value):
        self.values.append(value)

    def extend(self, values):
        self.values.extend(values)

    def __repr__(self) -> str:
        return f"<opaque {self.global_name}>"


_OPAQUE_TYPES: dict[str, type] = {}


def _opaque(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _OPAQUE_TYPES:
        _OPAQUE_TYPES[key] = type(f"Opaque[{key}]", (Opaque,), {"global_name": key})
    return _OPAQUE_TYPES[key]


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global that could run code."""


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals through ``SAFE_GLOBALS``; refuses ``DANGEROUS_MODULES``; turns
    anything else into an ``Opaque`` placeholder class (never imported)."""

    opaque_seen: set[str]

    def find_class(self, module: str, name: str):
        if (module, name) in SAFE_GLOBALS:
            return SAFE_GLOBALS[(module, name)]
        if module.split(".")[0] in DANGEROUS_MODULES:
            raise UnsafePickleError(f"{module}.{name}")
        seen = getattr(self, "opaque_seen", None)
        if seen is None:
            seen = self.opaque_seen = set()
        seen.add(f"{module}.{name}")
        return _opaque(module, name)


def _restricted_pickle_module() -> types.SimpleNamespace:
    """A ``pickle_module`` for ``torch.load`` whose Unpickler is restricted."""

    def load(f, **kwargs):
        return RestrictedUnpickler(f, **kwargs).load()

    return types.SimpleNamespace(Unpickler=RestrictedUnpickler, load=load, __name__="s3edit_restricted_pickle")


def _refused(path: Path, what: str, exc: Exception) -> WeightsError:
    return WeightsError(
        f"{what} {str(path)!r} tries to run code when loaded ({exc}); refusing it. "
        "Download the file again from its official source."
    )


def safe_load(path: str | os.PathLike, what: str = "checkpoint") -> tuple[Any, str]:
    """Load a torch file (or a plain pickle of tensors/arrays) without running code
    from it. Returns (object, how): how is "weights_only", "restricted" or
    "restricted-pickle". Raises WeightsError for unreadable or unsafe files."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {str(path)!r} does not exist.")
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": we fall back below
            warnings.simplefilter("ignore")
            return _torch_load(path, weights_only=True), "weights_only"
    except pickle.UnpicklingError:
        pass  # a global outside PyTorch's allow-list (or not a torch file): try ours
    except (RuntimeError, EOFError, OSError, ValueError):
        pass
    try:
        return _torch_load(path, weights_only=False), "restricted"
    except UnsafePickleError as exc:
        raise _refused(path, what, exc) from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError):
        pass
    try:  # a plain pickle (e.g. latent.pkl written with pickle.dump)
        with open(path, "rb") as f:
            return RestrictedUnpickler(f).load(), "restricted-pickle"
    except UnsafePickleError as exc:
        raise _refused(path, what, exc) from None
    except Exception as exc:  # any parse failure of a damaged or foreign file
        raise WeightsError(
            f"{what} {str(path)!r} is not a PyTorch checkpoint or pickle ({type(exc).__name__}); "
            "check that you passed the right file."
        ) from None


def _torch_load(path: Path, weights_only: bool) -> Any:
    kwargs: dict[str, Any] = {"map_location": "cpu", "weights_only": weights_only}
    if not weights_only:
        kwargs["pickle_module"] = _restricted_pickle_module()
    try:
        return torch.load(path, mmap=True, **kwargs)  # zip checkpoints: no RAM for the tensors
    except RuntimeError as exc:
        if "mmap" not in str(exc):
            raise
        return torch.load(path, **kwargs)  # legacy (non-zip) format


# --- import -------------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What ``import_dva`` found and wrote. ``ok`` when nothing was missing or mis-shaped."""

    checkpoint: str
    out_dir: str
    loader: str = ""  # how the checkpoint was read: "weights_only" or "restricted"
    copy: str = ""  # which copy was taken: "ema_model", "model" or "" (a bare state dict)
    tensors: int = 0  # tensors in the copy
    mapped: int = 0  # tensors mapped onto our keys (aliases included)
    aliases: int = 0  # alias tensors checked equal to their original and not stored
    written: int = 0  # tensors written to model.safetensors
    missing: list[str] = field(default_factory=list)  # our keys the checkpoint lacks
    unmapped: list[str] = field(default_factory=list)  # checkpoint names that map to nothing
    mismatched: list[str] = field(default_factory=list)  # "name (ckpt shape) != (our shape)"
    alias_mismatch: list[str] = field(default_factory=list)  # aliases that differ from the original
    classifier: str | None = None  # "ema_classifier", "classifier" or None
    attributes: int = 0
    stats: str | None = None  # where conds_mean/std came from: "stats file", "classifier checkpoint"
    opaque_globals: list[str] = field(default_factory=list)  # classes replaced by placeholders

    @property
    def ok(self) -> bool:
        return not (self.missing or self.mismatched or self.alias_mismatch)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def _state_dict(obj: Any, path: Path) -> Mapping[str, Any]:
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        return obj["state_dict"]
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj  # a bare state dict
    raise WeightsError(
        f"{str(path)!r} is not a DVA checkpoint (no 'state_dict' of tensors); pass the "
        "Lightning .ckpt file DVA published."
    )


def _take_copy(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], str]:
    for prefix in (EMA_PREFIX, RAW_PREFIX):
        copy = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if copy:
            return copy, prefix[:-1]
    return dict(state), ""


def _shape(t: Any) -> tuple:
    return tuple(t.shape) if isinstance(t, torch.Tensor) else ("not a tensor",)


def map_state(
    ckpt: Mapping[str, Any], expected: Mapping[str, tuple], report: ImportReport
) -> dict[str, torch.Tensor]:
    """Map one copy of DVA's tensors onto our keys, filling the report's lists.
    Returns {our key: tensor} for every key that mapped with its shape."""
    out: dict[str, torch.Tensor] = {}
    aliases: list[tuple[str, str]] = []
    present: set[str] = set()
    for name, tensor in ckpt.items():
        key, is_alias = map_name(name)
        present.add(key)
        if key not in expected:
            report.unmapped.append(name)
        elif _shape(tensor) != tuple(expected[key]):
            report.mismatched.append(f"{name} {_shape(tensor)} != {tuple(expected[key])}")
        elif is_alias:
            aliases.append((name, key))
        else:
            out[key] = tensor
    for name, key in aliases:
        if key in out and not torch.equal(ckpt[name], out[key]):
            report.alias_mismatch.append(name)
    report.aliases = len(aliases)
    report.mapped = len(out) + len(aliases)
    report.missing = [k for k in expected if k not in present]
    return out


def _problem_text(report: ImportReport) -> str:
    parts = []
    for label, items in (("missing", report.missing), ("mis-shaped", report.mismatched),
                         ("alias differs from its original", report.alias_mismatch)):
        if items:
            shown = ", ".join(items[:SHOW]) + (f" and {len(items) - SHOW} more" if len(items) > SHOW else "")
            parts.append(f"{len(items)} {label}: {shown}")
    return "; ".join(parts)


def _as_row(t: torch.Tensor, dim: int, what: str, path: Path) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=torch.float32) if not isinstance(t, torch.Tensor) else t.float()
    if t.numel() != dim:
        raise WeightsError(f"{what} in {str(path)!r} has shape {tuple(t.shape)}, expected ({dim},) or (1, {dim}).")
    return t.reshape(1, dim)


def read_stats(path: Path, dim: int) -> dict[str, torch.Tensor]:
    """conds_mean / conds_std from a DiffAE-style latent.pkl (torch or plain pickle)."""
    obj, _ = safe_load(path, "stats file")
    if not isinstance(obj, Mapping) or "conds_mean" not in obj or "conds_std" not in obj:
        raise WeightsError(f"stats file {str(path)!r} holds no 'conds_mean' and 'conds_std'; pass DVA's latent.pkl.")
    return {k: _as_row(torch.as_tensor(obj[k]), dim, k, path) for k in ("conds_mean", "conds_std")}


def read_classifier(path: Path, id_dim: int, report: ImportReport) -> dict[str, torch.Tensor]:
    """weight/bias (EMA preferred) and, where present, conds_mean/std."""
    obj, _ = safe_load(path, "classifier checkpoint")
    state = _state_dict(obj, path)
    for prefix in ("ema_classifier.", "classifier."):
        if f"{prefix}weight" in state and f"{prefix}bias" in state:
            report.classifier = prefix[:-1]
            weight, bias = state[f"{prefix}weight"], state[f"{prefix}bias"]
            break
    else:
        weight = bias = None
    if not isinstance(weight, torch.Tensor) or not isinstance(bias, torch.Tensor):
        raise WeightsError(
            f"{str(path)!r} has no classifier.weight/bias (nor ema_classifier.*); pass DVA's classifier checkpoint."
        )
    if weight.ndim != 2 or weight.shape[1] != id_dim or tuple(bias.shape) != (weight.shape[0],):
        raise WeightsError(
            f"classifier in {str(path)!r} has weight {tuple(weight.shape)} and bias {tuple(bias.shape)}; "
            f"expected (A, {id_dim}) and (A,)."
        )
    out = {"weight": weight.float().contiguous(), "bias": bias.float().contiguous()}
    if "conds_mean" in state and "conds_std" in state:
        out.update({k: _as_row(state[k], id_dim, k, path) for k in ("conds_mean", "conds_std")})
        report.stats = "classifier checkpoint"
    return out


def import_dva(
    ckpt: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    classifier_ckpt: str | os.PathLike | None = None,
    stats: str | os.PathLike | None = None,
    overwrite: bool = False,
    config: DVAConfig | None = None,
    dtype: torch.dtype | None = None,
    name: str = "dva",
) -> ImportReport:
    """Convert DVA's Lightning checkpoint (EMA copy) [+ classifier checkpoint]
    [+ latent.pkl statistics] into the weight set ``out_dir``.

    Nothing is written unless every tensor of our model is found with its shape; the
    WeightsError then lists the first missing/mis-shaped names and carries the full
    ``ImportReport`` as ``.report``. ``config`` defaults to DVA's (``dva-256``);
    ``dtype`` (e.g. torch.float16) stores the network in that precision (default: as
    in the checkpoint, float32; the classifier always stays float32)."""
    ckpt, out_dir = Path(ckpt), Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise OutputError(f"weight set {str(out_dir)!r} already exists; pass --overwrite to replace it.")
    if stats is not None and classifier_ckpt is None:
        raise InputError("--stats only normalises the attribute classifier; pass --classifier as well.")
    config = config or dva_256()
    report = ImportReport(checkpoint=str(ckpt), out_dir=str(out_dir))
    state = read_network(ckpt, config, report)
    classifier, attributes = None, []
    if classifier_ckpt is not None:
        classifier, attributes = read_classifier_set(Path(classifier_ckpt), stats, config.id_dim, report)
    tensors = {key: _for_disk(t, dtype) for key, t in state.items()}
    meta = {
        "name": name,
        "source": {"kind": "import", "checkpoint": ckpt.name, "copy": report.copy,
                   "classifier": Path(classifier_ckpt).name if classifier_ckpt else None,
                   "stats": Path(stats).name if stats else None, "url": DVA_SOURCE_URL},
        "licence": DVA_LICENCE,
        **DVA_RULES,  # DVA's sampler and plain-mean identity, as its editing script runs them
    }
    write_weight_set_files(out_dir, config_json(config, meta, attributes), tensors, classifier, overwrite=overwrite)
    report.written = len(tensors)
    return report


def read_network(ckpt: Path, config: DVAConfig, report: ImportReport) -> dict[str, torch.Tensor]:
    """The EMA copy of the network, mapped onto our keys; WeightsError if it does not fit."""
    obj, report.loader = safe_load(ckpt, "checkpoint")
    copy, report.copy = _take_copy(_state_dict(obj, ckpt))
    report.tensors = len(copy)
    report.opaque_globals = sorted(_opaque_names(obj))
    expected = {k: tuple(v.shape) for k, v in build_dva(config, device="meta").state_dict().items()}
    state = map_state(copy, expected, report)
    if not report.ok:
        error = WeightsError(f"{str(ckpt)!r} does not fit DVA's network: {_problem_text(report)}.")
        error.report = report
        raise error
    return state


def read_classifier_set(
    path: Path, stats: str | os.PathLike | None, id_dim: int, report: ImportReport
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Classifier tensors (``CLASSIFIER_KEYS``) and their row names (CelebA's 40 when
    there are 40 rows). Statistics from ``stats`` replace the checkpoint's."""
    classifier = read_classifier(path, id_dim, report)
    if stats is not None:
        classifier.update(read_stats(Path(stats), id_dim))
        report.stats = "stats file"
    if "conds_mean" not in classifier:
        raise WeightsError(f"{str(path)!r} has no conds_mean/conds_std; pass DVA's latent.pkl with --stats.")
    rows = classifier["weight"].shape[0]
    report.attributes = rows
    names = list(CELEBA_ATTRIBUTES) if rows == len(CELEBA_ATTRIBUTES) else [f"attr_{i}" for i in range(rows)]
    return {k: classifier[k] for k in CLASSIFIER_KEYS}, names


def _for_disk(t: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    t = t.detach()
    if dtype is not None and t.is_floating_point():
        t = t.to(dtype)
    return t.contiguous()


def _opaque_names(obj: Any, limit: int = 100_000) -> set[str]:
    """Names of the placeholder classes anywhere in a loaded object (for the report)."""
    seen: set[str] = set()
    stack, steps = [obj], 0
    while stack and steps < limit:
        item = stack.pop()
        steps += 1
        if isinstance(item, Opaque):
            seen.add(item.global_name)
            stack.extend([*item.args, item.state, *item.items.values(), *item.values])
        elif isinstance(item, Mapping):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            stack.extend(item)
    return seen


# --- into the weights home (``s3edit weights import``) -------------------------------------


@dataclass
class ImportResult:
    """What ``import_weights`` did: where the set went (``written`` False when
    ``import_dva`` refused the checkpoint), its ``ImportReport``, the sha256 of
    each source file (with the registry's value where it has one) and the refusal."""

    name: str
    path: Path
    report: ImportReport
    sources: list[dict] = field(default_factory=list)  # {role, file, sha256, expected}
    written: bool = True
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when every tensor mapped both ways: nothing missing, mis-shaped or unused."""
        return self.written and self.report.ok and not self.report.unmapped


def import_weights(
    checkpoint: str | os.PathLike,
    *,
    name: str = "dva",
    classifier: str | os.PathLike | None = None,
    stats: str | os.PathLike | None = None,
    overwrite: bool = False,
    registry: Registry | None = None,
    output: str | os.PathLike | None = None,
) -> ImportResult:
    """Convert a published DVA checkpoint (plus optional classifier checkpoint and
    ``latent.pkl`` statistics) into the weight set ``output``, by default
    ``weights_home()/name`` (where ``--weights NAME`` finds it).

    Source files are hashed first; where the registry knows a file's sha256, a
    mismatch is refused before anything is written. A checkpoint whose tensors do not
    fit the network comes back with ``written=False`` and the full ``ImportReport``."""
    registry = registry or load_registry()
    home = import_dir(name)
    out_dir = Path(output).expanduser() if output is not None else home
    if out_dir.exists() and not overwrite:
        where = f"weight set {name!r} already exists at {str(out_dir)!r}" if output is None \
            else f"folder {str(out_dir)!r} already exists"
        raise OutputError(f"{where}; pass --overwrite to replace it.")
    entry = registry.entries.get(name)
    expected = {f.role: f.sha256 for f in entry.files} if entry is not None and entry.kind == "import" else {}
    sources = []
    for role, path in (("checkpoint", checkpoint), ("classifier", classifier), ("stats", stats)):
        if path is None:
            continue
        path = require_input_file(path, f"{role} file")
        sources.append(_hash_source(name, role, path, expected.get(role)))
    try:
        report = import_dva(
            Path(checkpoint),
            out_dir,
            classifier_ckpt=Path(classifier) if classifier is not None else None,
            stats=Path(stats) if stats is not None else None,
            overwrite=overwrite,
            name=name,
        )
    except WeightsError as exc:
        if getattr(exc, "report", None) is None:  # not a mapping failure: the one-line error
            raise
        return ImportResult(name, out_dir, exc.report, sources, written=False, error=str(exc))
    return ImportResult(name=name, path=out_dir, report=report, sources=sources)


def import_summary(result: ImportResult) -> dict:
    """The import as a JSON-ready dict: the ``ImportReport`` plus where, sha256s, ok."""
    return {
        "name": result.name, "path": str(result.path), "written": result.written, "ok": result.ok,
        "error": result.error, "sources": result.sources, "report": result.report.to_dict(),
    }


def format_import_summary(summary: dict) -> str:
    """Plain-text lines for ``s3edit weights import``."""
    r = summary["report"]
    head = f"imported {summary['name']!r} -> {summary['path']}" if summary["written"] \
        else f"NOT imported {summary['name']!r}: nothing was written"
    copy = {"ema_model": "EMA copy", "model": "raw copy (no EMA copy found)", "": "bare state dict"}
    lines = [
        head,
        f"  checkpoint: {Path(r['checkpoint']).name} (read with {r['loader']}, {copy.get(r['copy'], r['copy'])})",
        f"  tensors: {r['tensors']} in the checkpoint, {r['mapped']} mapped ({r['aliases']} aliases checked), "
        f"{r['written']} written",
    ]
    if r["classifier"]:
        lines.append(f"  classifier: {r['classifier']}, {r['attributes']} attributes, statistics from {r['stats']}")
    for src in summary["sources"]:
        known = "matches the registry" if src["expected"] else "the registry records none"
        lines.append(f"  sha256 {Path(src['file']).name}: {src['sha256']} ({known})")
    if r["opaque_globals"]:
        lines.append(f"  {len(r['opaque_globals'])} classes of the authors' code were read as inert "
                     f"placeholders, never imported: {', '.join(r['opaque_globals'])}")
    for label, key in (("missing from the checkpoint", "missing"), ("not used (no matching tensor)", "unmapped"),
                       ("mis-shaped", "mismatched"), ("alias differs from its original", "alias_mismatch")):
        if r[key]:
            lines.append(f"  {label} ({len(r[key])}):")
            lines += [f"    {item}" for item in r[key]]
    lines.append("ok" if summary["ok"] else "FAILED: not every tensor mapped")
    return "\n".join(lines)


def _hash_source(name: str, role: str, path: Path, expected: str | None) -> dict:
    actual = sha256_file(path)
    if expected and actual != expected:
        raise WeightsError(
            f"{role} file {str(path)!r} has sha256 {actual}, but weight set {name!r} expects {expected}; "
            "the file is damaged or a different release, so download it again."
        )
    return {"role": role, "file": str(path), "sha256": actual, "expected": expected}
