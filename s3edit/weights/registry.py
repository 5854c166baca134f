"""The weights registry: named weight sets and model files, and where each lives.

The registry is ``weights/registry.json`` (format documented in ``weights/README.md``).
Each entry has a *kind*:

- ``bundled``: a weight-set folder inside the project's ``weights/`` (``folder``);
- ``hub``: files of a Hugging Face hub repository (``repo_id``, ``revision``,
  optional ``subfolder``), downloaded by ``s3edit weights download`` into the
  huggingface_hub cache;
- ``import``: files the user downloads by hand (``url``) and converts once with
  ``s3edit weights import``; the result lives in ``weights_home() / NAME``;
- ``package``: one model file shipped by a Python package (the dlib models of
  ``face_recognition_models``); not a weight set, listed so its licence and sha256
  are on record.

``resolve_weights(name_or_path)`` turns what a user passes to ``--weights`` into a
weight-set folder, or raises one ``WeightsError`` that says what to run.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

from s3edit.errors import WeightsError

PROJECT_WEIGHTS_DIR = Path(__file__).resolve().parents[2] / "weights"
REGISTRY_PATH = PROJECT_WEIGHTS_DIR / "registry.json"
REGISTRY_FORMAT = "s3edit-weights-registry"
REGISTRY_VERSION = 1

REGISTRY_ENV = "S3EDIT_REGISTRY"  # another registry file (tests, site-wide registries)
HOME_ENV = "S3EDIT_HOME"  # user data dir; imported sets live in $S3EDIT_HOME/weights/NAME
DEFAULT_HOME = Path("~/.cache/s3edit")

SET_KINDS = ("bundled", "hub", "import")
KINDS = SET_KINDS + ("package",)
CONFIG_NAME = "config.json"  # every weight-set folder holds one (see s3edit.weights.weightset)
HUB_REVISION = "main"


@dataclass(frozen=True)
class FileEntry:
    """One file of an entry. ``sha256`` is None where nobody could hash the file."""

    filename: str
    sha256: str | None = None
    role: str | None = None  # import entries: "checkpoint", "classifier", "stats"
    url: str | None = None  # import entries: where to download it by hand
    required: bool = True


@dataclass(frozen=True)
class RegistryEntry:
    name: str
    kind: str
    description: str
    licence: str  # short, for tables
    files: tuple[FileEntry, ...]
    licence_notes: str = ""  # the full statement, with sources
    folder: str | None = None  # bundled: relative to the registry's folder
    repo_id: str | None = None  # hub
    revision: str = HUB_REVISION  # hub
    subfolder: str | None = None  # hub
    package: str | None = None  # package
    homepage: str | None = None
    notes: str | None = None
    shipped: bool = True  # bundled: False while the project does not ship the files yet

    @property
    def is_weight_set(self) -> bool:
        return self.kind in SET_KINDS

    def file(self, role: str) -> FileEntry | None:
        return next((f for f in self.files if f.role == role), None)


@dataclass(frozen=True)
class Registry:
    default: str
    entries: dict[str, RegistryEntry]
    root: Path  # folder of the registry file; bundled folders are relative to it

    def get(self, name: str) -> RegistryEntry:
        """The entry called ``name``, or a WeightsError naming the closest names."""
        if name in self.entries:
            return self.entries[name]
        raise WeightsError(f"unknown weight set {name!r}; {_suggest(name, self.names())}")

    def names(self) -> list[str]:
        return list(self.entries)


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "? (see `s3edit weights list`)"
    return "run `s3edit weights list` to see the known names, or pass a weight-set folder."


# --- reading the registry -------------------------------------------------------------


def registry_path() -> Path:
    return Path(os.environ.get(REGISTRY_ENV) or REGISTRY_PATH)


def load_registry(path: str | os.PathLike | None = None) -> Registry:
    """Read and check a registry file (default: ``$S3EDIT_REGISTRY`` or the project's)."""
    path = Path(path) if path is not None else registry_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise WeightsError(f"weights registry {str(path)!r} is missing; reinstall s3edit.") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"weights registry {str(path)!r} cannot be read ({exc}); reinstall s3edit.") from exc
    if data.get("format") != REGISTRY_FORMAT or data.get("version") != REGISTRY_VERSION:
        raise WeightsError(
            f"{str(path)!r} is not a version-{REGISTRY_VERSION} s3edit weights registry; reinstall s3edit."
        )
    entries = {name: _parse_entry(name, raw, path) for name, raw in data.get("sets", {}).items()}
    return Registry(default=data.get("default", ""), entries=entries, root=path.parent)


def _parse_entry(name: str, raw: dict, path: Path) -> RegistryEntry:
    kind = raw.get("kind")
    if kind not in KINDS:
        raise WeightsError(f"registry {str(path)!r}: entry {name!r} has unknown kind {kind!r}.")
    files = tuple(
        FileEntry(
            filename=f["filename"],
            sha256=(f.get("sha256") or None) and f["sha256"].lower(),
            role=f.get("role"),
            url=f.get("url"),
            required=f.get("required", True),
        )
        for f in raw.get("files", [])
    )
    missing = {"bundled": "folder", "hub": "repo_id", "package": "package"}.get(kind)
    if missing and not raw.get(missing):
        raise WeightsError(f"registry {str(path)!r}: {kind} entry {name!r} has no {missing!r}.")
    return RegistryEntry(
        name=name,
        kind=kind,
        description=raw.get("description", ""),
        licence=raw.get("licence", "unknown"),
        licence_notes=raw.get("licence_notes", ""),
        files=files,
        folder=raw.get("folder"),
        repo_id=raw.get("repo_id"),
        revision=raw.get("revision") or HUB_REVISION,
        subfolder=raw.get("subfolder"),
        package=raw.get("package"),
        homepage=raw.get("homepage"),
        notes=raw.get("notes"),
        shipped=bool(raw.get("shipped", True)),
    )


# --- where sets live --------------------------------------------------------------------


def s3edit_home() -> Path:
    """The user data dir: ``$S3EDIT_HOME``, default ``~/.cache/s3edit``."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def weights_home() -> Path:
    """Where imported weight sets live: ``s3edit_home() / "weights"``."""
    return s3edit_home() / "weights"


def import_dir(name: str) -> Path:
    """The folder ``s3edit weights import --name NAME`` writes."""
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise WeightsError(f"weight-set name {name!r} must be a plain name such as 'dva' (no slashes).")
    return weights_home() / name


def hub_cache_dir() -> Path:
    """The huggingface_hub cache, read from the environment at call time (HF_HUB_CACHE,
    then HF_HOME/hub), so a changed environment is honoured after import."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    return Path(constants.HF_HUB_CACHE)


def hub_folder(entry: RegistryEntry) -> Path | None:
    """The snapshot folder holding a hub set's files when all are cached, else None.

    Looks only at the local cache (never the network)."""
    from huggingface_hub import try_to_load_from_cache

    found = []
    for f in entry.files:
        hit = try_to_load_from_cache(
            entry.repo_id, hub_filename(entry, f), cache_dir=hub_cache_dir(), revision=entry.revision
        )
        if not isinstance(hit, str):  # None (unknown) or the "known missing" sentinel
            if f.required:
                return None
            continue
        found.append(Path(hit))
    if not found:
        return None
    # The snapshot folder (plus subfolder), not the blob the symlinks point to.
    return found[0].parent


def hub_filename(entry: RegistryEntry, f: FileEntry) -> str:
    return f"{entry.subfolder}/{f.filename}" if entry.subfolder else f.filename


def package_file(entry: RegistryEntry) -> Path | None:
    """The installed file of a ``package`` entry, or None when the package is absent."""
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / entry.files[0].filename
    return path if path.is_file() else None


def installed_path(entry: RegistryEntry, registry: Registry) -> Path | None:
    """Where the entry is on this machine (folder for sets, file for package entries),
    or None when it is not installed. Never raises for a missing entry."""
    if entry.kind == "bundled":
        folder = registry.root / entry.folder
        return folder if (folder / CONFIG_NAME).is_file() else None
    if entry.kind == "import":
        folder = weights_home() / entry.name
        return folder if (folder / CONFIG_NAME).is_file() else None
    if entry.kind == "hub":
        return hub_folder(entry)
    return package_file(entry)


# --- --weights NAME|PATH ----------------------------------------------------------------


def _is_path_syntax(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~"))


def resolve_weights(name_or_path: str | os.PathLike | None = None, registry: Registry | None = None) -> Path:
    """What a user passed to ``--weights`` -> a weight-set folder holding config.json.

    ``None`` means the registry's default set. Text with a slash (or starting with
    ``.`` or ``~``) is a folder; otherwise a registry name resolves by its kind, then a
    set imported under that name (``weights_home()/NAME``), then an existing folder of
    that name. Every failure is one WeightsError that says what to run."""
    registry = registry or load_registry()
    text = os.fspath(name_or_path) if name_or_path is not None else registry.default
    if not text:
        raise WeightsError("no weight set given and the registry names no default; pass --weights NAME|PATH.")
    if isinstance(name_or_path, os.PathLike) or _is_path_syntax(text):
        return _check_folder(Path(text).expanduser())
    if text in registry.entries:
        return _resolve_entry(registry.entries[text], registry)
    if (weights_home() / text / CONFIG_NAME).is_file():
        return weights_home() / text
    if Path(text).exists():
        return _check_folder(Path(text))
    return registry.get(text)  # raises, suggesting close names


def _check_folder(folder: Path) -> Path:
    if not folder.exists():
        raise WeightsError(f"weight-set folder {str(folder)!r} does not exist; pass a registry name or a folder.")
    if not folder.is_dir():
        raise WeightsError(
            f"{str(folder)!r} is a file, not a weight-set folder; to convert a DVA checkpoint run "
            f"`s3edit weights import {folder}`."
        )
    if not (folder / CONFIG_NAME).is_file():
        raise WeightsError(
            f"{str(folder)!r} holds no {CONFIG_NAME}, so it is not an s3edit weight set; "
            "make one with `s3edit weights import` or `s3edit tune`."
        )
    return folder


def _resolve_entry(entry: RegistryEntry, registry: Registry) -> Path:
    if not entry.is_weight_set:
        raise WeightsError(
            f"{entry.name!r} is a single model file used by the face tools, not a weight set; "
            "pass a weight set (see `s3edit weights list`)."
        )
    path = installed_path(entry, registry)
    if path is not None:
        return path
    raise WeightsError(missing_message(entry, registry))


def missing_message(entry: RegistryEntry, registry: Registry) -> str:
    """One sentence: the entry is not installed, and what to run."""
    if entry.kind == "hub":
        return f"weight set {entry.name!r} is not downloaded; run `s3edit weights download {entry.name}`."
    if entry.kind == "import":
        ckpt = entry.file("checkpoint") or entry.files[0]
        where = ckpt.url or entry.homepage or "its authors' release page"
        return (
            f"weight set {entry.name!r} is not imported; download {ckpt.filename} from {where} "
            f"and run `s3edit weights import PATH --name {entry.name}`."
        )
    if entry.kind == "bundled" and not entry.shipped:
        return (
            f"weight set {entry.name!r} is not shipped with this version of s3edit yet; pass "
            "--weights NAME|PATH, e.g. DVA's checkpoint after `s3edit weights import` "
            "(see `s3edit weights list`)."
        )
    if entry.kind == "bundled":
        return (
            f"the bundled weight set {entry.name!r} is missing from {str(registry.root / entry.folder)!r}; "
            "reinstall s3edit, or pass --weights NAME|PATH (see `s3edit weights list`)."
        )
    return f"{entry.name!r} is not installed; install the {entry.package!r} Python package."


# --- listing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsRow:
    """One line of ``s3edit weights list``."""

    name: str
    kind: str  # a registry kind, or "local" for an imported set the registry does not name
    installed: bool
    path: str | None
    licence: str
    description: str
    licence_notes: str = ""
    default: bool = False
    s3: dict | None = None  # S3Editor facts of a tuned set (config.json "s3"), else None


def list_weights(registry: Registry | None = None) -> list[WeightsRow]:
    """Every registry entry, then every imported set under ``weights_home()`` that the
    registry does not name. Installed sets report the S3 facts of their config.json."""
    registry = registry or load_registry()
    rows = []
    for entry in registry.entries.values():
        path = installed_path(entry, registry)
        config = read_set_config(path) if path is not None and entry.is_weight_set else {}
        rows.append(WeightsRow(
            name=entry.name, kind=entry.kind, installed=path is not None,
            path=str(path) if path is not None else None, licence=entry.licence,
            description=entry.description, licence_notes=entry.licence_notes,
            default=entry.name == registry.default,
            s3=config.get("s3") or None,
        ))
    home = weights_home()
    local = sorted(p for p in home.iterdir() if (p / CONFIG_NAME).is_file()) if home.is_dir() else []
    for folder in local:
        if folder.name in registry.entries:
            continue
        config = read_set_config(folder)
        rows.append(WeightsRow(
            name=folder.name, kind="local", installed=True, path=str(folder),
            licence=str(config.get("licence") or "unknown"), description=str(config.get("source") or ""),
            s3=config.get("s3") or None,
        ))
    return rows


def read_set_config(folder: Path) -> dict:
    """A weight set's config.json as a dict ({} when unreadable: listing never fails)."""
    try:
        data = json.loads((Path(folder) / CONFIG_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_s3(s3: dict | None) -> str:
    """'K=5 q=0.1 zeroed=3' from a config.json "s3" block ('' when there is none)."""
    if not s3:
        return ""
    parts = []
    for label, keys in (("K", ("K", "k", "clusters")), ("q", ("q", "Q", "sparsity"))):
        value = next((s3[k] for k in keys if k in s3), None)
        if value is not None:
            parts.append(f"{label}={value}")
    zeroed = next((s3[k] for k in ("groups_zeroed", "zeroed_groups", "zeroed") if k in s3), None)
    if zeroed is not None:
        parts.append(f"zeroed={len(zeroed) if isinstance(zeroed, (list, tuple, dict)) else zeroed}")
    return " ".join(parts)
