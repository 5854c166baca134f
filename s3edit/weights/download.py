"""Getting weight sets onto the machine and checking them: hub downloads (through
``huggingface_hub`` into its usual cache, sha256-checked), imports of published
checkpoints (``s3edit.weights.importer``), and ``verify``.

Every user-fixable failure is one ``WeightsError`` sentence that says what to run.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from s3edit import console
from s3edit.errors import OutputError, WeightsError
from s3edit.weights.registry import (
    Registry,
    RegistryEntry,
    hub_filename,
    hub_cache_dir,
    import_dir,
    installed_path,
    load_registry,
    missing_message,
    resolve_weights,
)
from s3edit.paths import require_input_file

HASH_CHUNK = 1 << 20  # 1 MiB reads: streamed hashing, memory independent of file size
HASH_PROGRESS_MIN = 64 << 20  # files above 64 MiB get a progress bar while hashed
OFFLINE_ENV = "HF_HUB_OFFLINE"  # huggingface_hub's own switch, read here at call time


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (a progress bar for large files)."""
    path = Path(path)
    size = path.stat().st_size
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        if size < HASH_PROGRESS_MIN:
            for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
                digest.update(chunk)
        else:
            with console.progress(f"sha256 {path.name}", total=(size + HASH_CHUNK - 1) // HASH_CHUNK) as advance:
                for chunk in iter(lambda: fh.read(HASH_CHUNK), b""):
                    digest.update(chunk)
                    advance(1)
    return digest.hexdigest()


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set now (huggingface_hub reads it only at import)."""
    return os.environ.get(OFFLINE_ENV, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


# --- download (hub sets) ------------------------------------------------------------------


def download_weights(name: str, registry: Registry | None = None) -> Path:
    """Fetch every file of the hub weight set ``name`` into the huggingface_hub cache,
    check each against its registry sha256, and return the set's folder.

    A file whose sha256 does not match is deleted from the cache and refused."""
    registry = registry or load_registry()
    entry = registry.get(name)
    if entry.kind != "hub":
        return _not_downloadable(entry, registry)
    for f in entry.files:
        local = _hub_download_one(entry, hub_filename(entry, f), required=f.required)
        if local is not None and f.sha256:
            _check_or_discard(entry, local, f.sha256)
    folder = installed_path(entry, registry)
    if folder is None:  # pragma: no cover - every required file was just fetched
        raise WeightsError(missing_message(entry, registry))
    return folder


def _not_downloadable(entry: RegistryEntry, registry: Registry) -> Path:
    """Bundled and package entries are already here (or say how to get them); import
    entries cannot be fetched automatically."""
    if entry.kind == "import":
        message = missing_message(entry, registry)
        raise WeightsError(message.replace("is not imported", "cannot be downloaded automatically"))
    path = installed_path(entry, registry)
    if path is None:
        raise WeightsError(missing_message(entry, registry))
    console.note(f"{entry.name!r} ships with s3edit ({entry.kind}); nothing to download.")
    return path


def _hub_download_one(entry: RegistryEntry, filename: str, required: bool) -> Path | None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    again = f"run `s3edit weights download {entry.name}`"
    try:
        return Path(
            hf_hub_download(
                entry.repo_id,
                filename,
                revision=entry.revision,
                cache_dir=hub_cache_dir(),
                local_files_only=hub_offline(),
                endpoint=os.environ.get("HF_ENDPOINT") or None,
            )
        )
    except (LocalEntryNotFoundError, OfflineModeIsEnabled) as exc:
        why = "offline mode is on (HF_HUB_OFFLINE)" if hub_offline() or isinstance(exc, OfflineModeIsEnabled) \
            else "the hub could not be reached"
        raise WeightsError(
            f"cannot download {filename} of weight set {entry.name!r} from {entry.repo_id}: {why} and the file "
            f"is not in the cache at {str(hub_cache_dir())!r}; connect to the internet, unset {OFFLINE_ENV}, "
            f"and {again}."
        ) from exc
    except GatedRepoError as exc:
        raise WeightsError(
            f"hub repository {entry.repo_id} is gated; accept its terms on huggingface.co, log in with "
            f"`hf auth login`, and {again}."
        ) from exc
    except RepositoryNotFoundError as exc:
        raise WeightsError(
            f"hub repository {entry.repo_id} of weight set {entry.name!r} was not found (or needs a login: "
            f"`hf auth login`); check the registry entry, then {again}."
        ) from exc
    except RevisionNotFoundError as exc:
        raise WeightsError(
            f"revision {entry.revision!r} of hub repository {entry.repo_id} was not found; the registry "
            "entry is out of date, so update s3edit."
        ) from exc
    except EntryNotFoundError as exc:
        if not required:
            return None
        raise WeightsError(
            f"{filename} is not in hub repository {entry.repo_id} at revision {entry.revision!r}; the "
            "registry entry is out of date, so update s3edit."
        ) from exc
    except (HfHubHTTPError, OSError) as exc:
        raise WeightsError(f"downloading {filename} from {entry.repo_id} failed ({exc}); {again} again.") from exc


def _check_or_discard(entry: RegistryEntry, local: Path, expected: str) -> None:
    """Refuse a file whose sha256 is not the registry's: delete it from the cache (the
    snapshot link and the blob it points to) so the next download fetches it anew."""
    actual = sha256_file(local)
    if actual == expected:
        return
    blob = local.resolve()
    for path in {local, blob}:
        if path.exists() or path.is_symlink():
            path.unlink()
    raise WeightsError(
        f"{local.name} of weight set {entry.name!r} has sha256 {actual}, not the registry's {expected}; "
        f"the corrupt file was deleted from the cache, so run `s3edit weights download {entry.name}` again."
    )


# --- import (published checkpoints) -------------------------------------------------------


@dataclass
class ImportResult:
    """What ``import_weights`` did: where the set went (``written`` False when the
    importer refused the checkpoint), the importer's ``ImportReport``, the sha256 of
    each source file (with the registry's value where it has one) and the refusal."""

    name: str
    path: Path
    report: object  # s3edit.weights.importer.ImportReport
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
) -> ImportResult:
    """Convert a published DVA checkpoint (plus optional classifier checkpoint and
    ``latent.pkl`` statistics) into the weight set ``weights_home()/name``.

    Source files are hashed first; where the registry knows a file's sha256, a
    mismatch is refused before anything is written. A checkpoint whose tensors do not
    fit the network comes back with ``written=False`` and the importer's full report."""
    registry = registry or load_registry()
    out_dir = import_dir(name)
    if out_dir.exists() and not overwrite:
        raise OutputError(
            f"weight set {name!r} already exists at {str(out_dir)!r}; pass --overwrite to replace it."
        )
    entry = registry.entries.get(name)
    expected = {f.role: f.sha256 for f in entry.files} if entry is not None and entry.kind == "import" else {}
    sources = []
    for role, path in (("checkpoint", checkpoint), ("classifier", classifier), ("stats", stats)):
        if path is None:
            continue
        path = require_input_file(path, f"{role} file")
        sources.append(_hash_source(name, role, path, expected.get(role)))
    from s3edit.weights.importer import import_dva  # torch and the model modules: only when needed

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
    """The import as a JSON-ready dict: the importer's report plus where, sha256s, ok."""
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


# --- verify -----------------------------------------------------------------------------


@dataclass
class FileCheck:
    file: str
    expected: str | None
    actual: str | None
    status: str  # "ok", "mismatch", "missing", "unknown" (the registry has no sha256)


@dataclass
class VerifyReport:
    target: str
    path: str
    kind: str
    files: list[FileCheck] = field(default_factory=list)
    tensors: int | None = None  # tensors loaded by load_weight_set (None: not a weight set)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def verify_weights(name_or_path: str | os.PathLike, registry: Registry | None = None) -> VerifyReport:
    """Check a weight set (registry name or folder) or a registered model file: sha256
    of each file against the registry where it has one, then load the set with
    ``load_weight_set`` and check that every tensor is finite. Problems are listed in
    the report, never raised; a name that resolves nowhere raises WeightsError."""
    registry = registry or load_registry()
    text = os.fspath(name_or_path)
    entry = registry.entries.get(text)
    if entry is not None and entry.kind == "package":
        return _verify_package_file(entry, registry)
    folder = resolve_weights(text, registry)
    report = VerifyReport(target=text, path=str(folder), kind=entry.kind if entry else "folder")
    if entry is not None and entry.kind in ("bundled", "hub"):
        report.files = [_check_file(folder / f.filename, f.sha256, f.required) for f in entry.files]
    for check in report.files:
        if check.status == "mismatch":
            report.problems.append(
                f"{check.file}: sha256 {check.actual} does not match the registry's {check.expected}"
            )
        elif check.status == "missing":
            report.problems.append(f"{check.file}: missing")
    _verify_tensors(folder, report)
    return report


def _check_file(path: Path, expected: str | None, required: bool = True) -> FileCheck:
    if not path.is_file():
        return FileCheck(str(path), expected, None, "missing" if required else "unknown")
    actual = sha256_file(path)
    if expected is None:
        return FileCheck(str(path), None, actual, "unknown")
    return FileCheck(str(path), expected, actual, "ok" if actual == expected else "mismatch")


def _verify_package_file(entry: RegistryEntry, registry: Registry) -> VerifyReport:
    path = installed_path(entry, registry)
    if path is None:
        raise WeightsError(missing_message(entry, registry))
    report = VerifyReport(target=entry.name, path=str(path), kind=entry.kind)
    report.files = [_check_file(path, entry.files[0].sha256)]
    if report.files[0].status == "mismatch":
        report.problems.append(f"{path}: sha256 {report.files[0].actual} does not match the registry's "
                               f"{report.files[0].expected}; reinstall the {entry.package!r} package")
    return report


def _verify_tensors(folder: Path, report: VerifyReport) -> None:
    """Load the set and count its tensors; a load failure or a non-finite tensor is a problem."""
    import torch

    from s3edit.weights.weightset import load_weight_set

    try:
        weight_set = load_weight_set(folder)
    except WeightsError as exc:
        report.problems.append(f"cannot load: {exc}")
        return
    tensors = dict(_iter_tensors(weight_set))
    report.tensors = len(tensors)
    bad = [key for key, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        report.problems.append(f"{len(bad)} tensor(s) hold NaN or inf: {shown}")


def _iter_tensors(weight_set):
    """(name, tensor) pairs of a loaded WeightSet: the network, then the classifier."""
    for key, t in weight_set.model.state_dict().items():
        yield f"model.{key}", t
    if weight_set.classifier is not None:
        for key, t in weight_set.classifier.tensors().items():
            yield f"classifier.{key}", t


def format_verify(report: VerifyReport) -> str:
    """Plain-text lines for ``s3edit weights verify``."""
    lines = [f"{report.target} ({report.kind}): {report.path}"]
    for check in report.files:
        note = {"unknown": "no registry sha256; sha256 is " + str(check.actual)}.get(check.status, check.status)
        lines.append(f"  {Path(check.file).name}: {note}")
    if report.tensors is not None:
        lines.append(f"  tensors loaded: {report.tensors}")
    lines += [f"  problem: {p}" for p in report.problems]
    lines.append("ok" if report.ok else f"FAILED: {len(report.problems)} problem(s)")
    return "\n".join(lines)
