"""Edit pairs: frames of two jobs that show the same face without and with an attribute.

A pairs file tells ``s3edit tune --pairs FILE`` which training frames are the same face
before and after an edit, so that the decoder can be taught what the edit draws
(``s3edit.train.objective.PairTerm``). The synthetic-glasses twins of the default model's
portraits are such pairs (``scripts/glasses_job.py`` writes the file beside the job);
any two aligned jobs whose frames match one to one can be paired the same way.

Format (JSON, ``PAIRS_FORMAT`` version ``PAIRS_VERSION``)::

    {
      "format": "s3edit-edit-pairs", "version": 1,
      "attribute": "Eyeglasses",         # a head of the weight set being tuned
      "without": "job",                  # job folder of the frames without it,
      "with": "classic-glasses-job",     #   and with it; relative to this file's folder
      "frames": [[0, 0], [3, 1], ...],   # (frame in "without", frame in "with"); both valid
      "note": "..."                      # free text: how the pairs were made
    }

``resolve_pairs`` maps the frame numbers to rows of the training data that ``tune``
assembles from its jobs (``s3edit.train.data.load_jobs``, in input order).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from s3edit.errors import InputError
from s3edit.paths import write_json_atomic

PAIRS_FORMAT = "s3edit-edit-pairs"
PAIRS_VERSION = 1


@dataclass(frozen=True)
class EditPairs:
    """One pairs file, read: ``frames`` (M, 2) int64 (frame without, frame with)."""

    path: Path
    attribute: str
    without: Path
    with_: Path
    frames: np.ndarray


def write_pairs(path: str | Path, attribute: str, without: str | Path, with_: str | Path,
                frames: np.ndarray, note: str = "") -> Path:
    """Write a pairs file; job paths inside the file's folder are stored relative to it."""
    path = Path(path)
    frames = np.asarray(frames, np.int64).reshape(-1, 2)

    def rel(job: str | Path) -> str:
        job = Path(job)
        try:
            return str(job.resolve().relative_to(path.parent.resolve()))
        except ValueError:
            return str(job.resolve())

    write_json_atomic(path, {"format": PAIRS_FORMAT, "version": PAIRS_VERSION, "attribute": attribute,
                             "without": rel(without), "with": rel(with_),
                             "frames": frames.tolist(), "note": note})
    return path


def read_pairs(path: str | Path) -> EditPairs:
    """Read and check a pairs file (one clear sentence on anything wrong)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"pairs file {str(path)!r} does not exist.")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"pairs file {str(path)!r} is not readable JSON ({exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != PAIRS_FORMAT or meta.get("version") != PAIRS_VERSION:
        raise InputError(f"{str(path)!r} is not an s3edit pairs file of version {PAIRS_VERSION} "
                         "(scripts/glasses_job.py writes one).")
    try:
        frames = np.asarray(meta["frames"], np.int64).reshape(-1, 2)
        attribute, without, with_ = str(meta["attribute"]), meta["without"], meta["with"]
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"pairs file {str(path)!r} lacks or mangles {exc}; write it again.") from None
    if len(frames) == 0:
        raise InputError(f"pairs file {str(path)!r} holds no pairs.")
    return EditPairs(path, attribute, path.parent / without, path.parent / with_, frames)


def resolve_pairs(pairs: EditPairs, job_roots: list[Path], frame_numbers: list[np.ndarray]) -> np.ndarray:
    """Rows (M, 2) of the training data for ``pairs``: ``job_roots[j]`` is the j-th
    job of the data and ``frame_numbers[j]`` its valid frame numbers in data order
    (the data's rows are those of job 0, then job 1, ...)."""
    roots = [Path(r).resolve() for r in job_roots]
    starts = np.cumsum([0] + [len(f) for f in frame_numbers])
    columns = []
    for side, job in (("without", pairs.without), ("with", pairs.with_)):
        job = job.resolve()
        if job not in roots:
            raise InputError(f"the {side!r} job {str(job)!r} of {str(pairs.path)!r} is not among the "
                             "training inputs; pass it too.")
        j = roots.index(job)
        wanted = pairs.frames[:, 0 if side == "without" else 1]
        where = np.searchsorted(frame_numbers[j], wanted)
        found = (where < len(frame_numbers[j])) & (frame_numbers[j][np.minimum(where, len(frame_numbers[j]) - 1)] == wanted)
        if not found.all():
            raise InputError(f"frame {int(wanted[~found][0])} of {str(pairs.path)!r} is not a valid frame of "
                             f"job {str(job)!r}.")
        columns.append(starts[j] + where)
    return np.stack(columns, axis=1).astype(np.int64)
