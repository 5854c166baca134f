"""``s3edit weights download``: the files of a hub weight set fetched through
``huggingface_hub`` into its usual cache, each checked against the registry's sha256.

Every user-fixable failure is one ``WeightsError`` sentence that says what to run.
"""

from __future__ import annotations

import os
from pathlib import Path

from s3edit import console
from s3edit.errors import WeightsError
from s3edit.weights.hashing import sha256_file
from s3edit.weights.registry import (
    Registry,
    RegistryEntry,
    hub_cache_dir,
    hub_filename,
    installed_path,
    load_registry,
    missing_message,
)

OFFLINE_ENV = "HF_HUB_OFFLINE"  # huggingface_hub's own switch, read here at call time


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set now (huggingface_hub reads it only at import)."""
    return os.environ.get(OFFLINE_ENV, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


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
