"""``s3edit weights verify``: a weight set (registry name or folder) or a registered
model file checked in full: the sha256 of each file against the registry where it has
one and against the set's own checksums.json (``s3edit.weights.weightset``) for any
folder, always read from disk (no cached hash), then the set loaded with every tensor
checked finite. What is wrong with the files is listed in a ``VerifyReport``, never
raised; a name that resolves nowhere is a ``WeightsError``."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from s3edit.errors import WeightsError
from s3edit.weights.hashing import (
    CHECKSUMS_FILE,
    read_checksums,
    remember_sha256,
    sha256_file,
)
from s3edit.weights.registry import (
    Registry,
    RegistryEntry,
    installed_path,
    load_registry,
    missing_message,
    resolve_weights,
)
from s3edit.weights.weightset import TENSOR_FILES, load_weight_set, nonfinite_tensors

REGISTRY = "registry"


@dataclass
class FileCheck:
    file: str
    expected: str | None
    actual: str | None
    status: str  # "ok", "mismatch", "missing", "unknown" (no sha256 on record)
    against: str = REGISTRY  # where the expected sha256 comes from: "registry" or "checksums.json"
    size: int | None = None  # the size on record (checksums.json), else None
    actual_size: int | None = None


@dataclass
class VerifyReport:
    target: str
    path: str
    kind: str
    files: list[FileCheck] = field(default_factory=list)
    tensors: int | None = None  # tensors loaded by load_weight_set (None: not a weight set)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing, not a failure

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def verify_weights(name_or_path: str | os.PathLike, registry: Registry | None = None) -> VerifyReport:
    """Check a weight set (registry name or folder) or a registered model file: sha256
    of each file against the registry where it has one and against the set's
    checksums.json, then load the set with ``load_weight_set`` and check that every
    tensor is finite. Problems are listed in the report, never raised; a name that
    resolves nowhere raises WeightsError."""
    registry = registry or load_registry()
    text = os.fspath(name_or_path)
    entry = registry.entries.get(text)
    if entry is not None and entry.kind == "package":
        return _verify_package_file(entry, registry)
    folder = resolve_weights(text, registry)
    report = VerifyReport(target=text, path=str(folder), kind=entry.kind if entry else "folder")
    hashes: dict[Path, str] = {}
    if entry is not None and entry.kind in ("bundled", "hub"):
        report.files = [_check_file(folder / f.filename, f.sha256, f.required, hashes) for f in entry.files]
    _check_own_sums(folder, report, hashes)
    for check in report.files:
        source = "the registry's" if check.against == REGISTRY else f"the one in {CHECKSUMS_FILE}"
        if check.status == "mismatch":
            sizes = (f" (size {check.actual_size} where {check.size} is recorded)"
                     if check.size is not None and check.size != check.actual_size else "")
            report.problems.append(
                f"{check.file}: sha256 {check.actual} does not match {source} {check.expected}{sizes}"
            )
        elif check.status == "missing":
            report.problems.append(f"{check.file}: missing")
    _verify_tensors(folder, report)
    return report


def _check_own_sums(folder: Path, report: VerifyReport, hashes: dict[Path, str]) -> None:
    """The folder's checksums.json: each file it records, and no tensor file it does not."""
    try:
        sums = read_checksums(folder)
    except WeightsError as exc:
        report.problems.append(str(exc))
        return
    if sums is None:
        if not report.files:
            report.notes.append(f"no {CHECKSUMS_FILE}: the set records no sha256 of its files (it was written "
                                "before s3edit recorded them); re-import or re-export it to add them")
        return
    for name, s in sums.items():
        check = _check_file(folder / name, s.sha256, True, hashes)
        check.against, check.size = CHECKSUMS_FILE, s.size
        if check.status != "missing":
            check.actual_size = (folder / name).stat().st_size
        if check.status == "ok":
            remember_sha256(folder / name, check.actual)
        report.files.append(check)
    for name in TENSOR_FILES:
        if (folder / name).is_file() and name not in sums:
            report.problems.append(f"{folder / name}: not recorded in {CHECKSUMS_FILE} (added after the set "
                                   "was written)")


def _check_file(path: Path, expected: str | None, required: bool = True,
                hashes: dict[Path, str] | None = None) -> FileCheck:
    if not path.is_file():
        return FileCheck(str(path), expected, None, "missing" if required else "unknown")
    hashes = {} if hashes is None else hashes
    if path not in hashes:
        hashes[path] = sha256_file(path)
    actual = hashes[path]
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
    try:
        weight_set = load_weight_set(folder, check_files=False, check_finite=False)
    except WeightsError as exc:
        report.problems.append(f"cannot load: {exc}")
        return
    tensors = dict(_iter_tensors(weight_set))
    report.tensors = len(tensors)
    bad = nonfinite_tensors(tensors)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        report.problems.append(f"{len(bad)} tensor(s) hold NaN or inf: {shown}")


def _iter_tensors(weight_set):
    """(name, tensor) pairs of a loaded WeightSet: the network, the classifier, then
    S3Editor's transforms."""
    for key, t in weight_set.model.state_dict().items():
        yield f"model.{key}", t
    if weight_set.classifier is not None:
        for key, t in weight_set.classifier.tensors().items():
            yield f"classifier.{key}", t
    for key, t in (weight_set.s3_tensors or {}).items():
        yield f"s3.{key}", t


def format_verify(report: VerifyReport) -> str:
    """Plain-text lines for ``s3edit weights verify``."""
    lines = [f"{report.target} ({report.kind}): {report.path}"]
    for check in report.files:
        note = {"unknown": "no registry sha256; sha256 is " + str(check.actual)}.get(check.status, check.status)
        lines.append(f"  {Path(check.file).name}: {note} ({check.against})")
    if report.tensors is not None:
        lines.append(f"  tensors loaded: {report.tensors}")
    lines += [f"  note: {n}" for n in report.notes]
    lines += [f"  problem: {p}" for p in report.problems]
    lines.append("ok" if report.ok else f"FAILED: {len(report.problems)} problem(s)")
    return "\n".join(lines)
