"""Identity and attribute metrics (docs/metrics.md), as matrix operations.

Inputs are per-frame identity embeddings of the source and the edited video, ``E_src``
and ``E_edit`` of shape ``(N, D)``, L2-normalised, and ``valid`` ``(N,)`` bool: frames
that have a face (rows of invalid frames are ignored, whatever they hold).

    S_src  = E_src  E_srcᵀ        cosine similarity between source frames   (N, N)
    S_edit = E_edit E_editᵀ       the same for the edited frames            (N, N)
    TL-ID       = mean over adjacent valid pairs (i, i+1) of S_edit[i,i+1] / S_src[i,i+1]
    TG-ID       = mean over all valid pairs i != j of S_edit[i,j] / S_src[i,j]
    ID-Preserve = mean over valid i of cos(E_edit[i], E_src[i])

TL-ID and TG-ID are about 1 when the edit is as temporally consistent as the source and
can exceed 1 (the edit can be *more* self-similar than the source). Ratios assume the
source's similarities are well away from 0, which holds for frames of one person.

TACR / NAPR take attribute predictions ``(N, A)`` (logits unless ``threshold`` says
otherwise) of the same frames before and after the edit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# TG-ID is evaluated over row blocks of S so that memory stays O(BLOCK * N) on long clips
# (a 10-minute 30 fps clip has 18,000 frames: a full S would be 1.3 GB in float32).
TG_BLOCK_ROWS = 2048


def _check(e_src: np.ndarray, e_edit: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    if e_src.shape != e_edit.shape or e_src.ndim != 2:
        raise ValueError(f"embeddings must both be (N, D); got {e_src.shape} and {e_edit.shape}")
    if valid is None:
        return np.ones(len(e_src), dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != (len(e_src),):
        raise ValueError(f"valid must be ({len(e_src)},), got {valid.shape}")
    return valid


def similarity_matrix(e: np.ndarray) -> np.ndarray:
    """``e`` (N, D) L2-normalised -> cosine similarities (N, N) float64."""
    e = np.asarray(e, dtype=np.float64)
    return e @ e.T


def adjacent_similarity(e: np.ndarray) -> np.ndarray:
    """cos(e[i], e[i+1]) for i in 0..N-2: the superdiagonal of ``similarity_matrix``,
    without forming it. (N, D) -> (N-1,) float64."""
    e = np.asarray(e, dtype=np.float64)
    return np.einsum("nd,nd->n", e[:-1], e[1:])


def frame_similarity(e_src: np.ndarray, e_edit: np.ndarray) -> np.ndarray:
    """cos(e_edit[i], e_src[i]) per frame: (N, D) x2 -> (N,) float64."""
    return np.einsum(
        "nd,nd->n", np.asarray(e_src, dtype=np.float64), np.asarray(e_edit, dtype=np.float64)
    )


def id_preserve(e_src: np.ndarray, e_edit: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean over frames with a face of cos(ID(edited_i), ID(original_i)); NaN if none."""
    valid = _check(e_src, e_edit, valid)
    if not valid.any():
        return float("nan")
    return float(frame_similarity(e_src[valid], e_edit[valid]).mean())


def tl_id(e_src: np.ndarray, e_edit: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Temporal-local identity consistency: mean over adjacent pairs (i, i+1), both with a
    face, of S_edit[i, i+1] / S_src[i, i+1]. NaN when no such pair exists."""
    valid = _check(e_src, e_edit, valid)
    pairs = valid[:-1] & valid[1:]
    if not pairs.any():
        return float("nan")
    ratio = adjacent_similarity(e_edit) / adjacent_similarity(e_src)
    return float(ratio[pairs].mean())


def tg_id(e_src: np.ndarray, e_edit: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Temporal-global identity consistency: mean over all ordered pairs i != j of frames
    with a face of S_edit[i, j] / S_src[i, j]. NaN with fewer than two such frames."""
    valid = _check(e_src, e_edit, valid)
    src = np.asarray(e_src, dtype=np.float64)[valid]
    edit = np.asarray(e_edit, dtype=np.float64)[valid]
    n = len(src)
    if n < 2:
        return float("nan")
    total = 0.0
    for start in range(0, n, TG_BLOCK_ROWS):  # row blocks of S, not pairs
        rows = slice(start, min(start + TG_BLOCK_ROWS, n))
        ratio = (edit[rows] @ edit.T) / (src[rows] @ src.T)  # (B, n)
        idx = np.arange(rows.start, rows.stop)
        ratio[idx - start, idx] = 0.0  # drop the diagonal i == j
        total += ratio.sum()
    return float(total / (n * (n - 1)))


@dataclass
class IdentitySeries:
    """Per-frame series for plots, each (N,) float64 with NaN where undefined.

    to_source[i]     cos(E_edit[i], E_src[i])
    adjacent_src[i]  cos(E_src[i-1], E_src[i])    (NaN at i = 0)
    adjacent_edit[i] cos(E_edit[i-1], E_edit[i])  (NaN at i = 0)
    """

    to_source: np.ndarray
    adjacent_src: np.ndarray
    adjacent_edit: np.ndarray


def identity_series(
    e_src: np.ndarray, e_edit: np.ndarray, valid: np.ndarray | None = None
) -> IdentitySeries:
    valid = _check(e_src, e_edit, valid)
    n = len(valid)
    to_source = np.where(valid, frame_similarity(e_src, e_edit), np.nan)
    pairs = np.zeros(n, dtype=bool)
    pairs[1:] = valid[:-1] & valid[1:]
    adj_src = np.full(n, np.nan)
    adj_edit = np.full(n, np.nan)
    if n > 1:
        adj_src[1:] = adjacent_similarity(e_src)
        adj_edit[1:] = adjacent_similarity(e_edit)
    return IdentitySeries(
        to_source=to_source,
        adjacent_src=np.where(pairs, adj_src, np.nan),
        adjacent_edit=np.where(pairs, adj_edit, np.nan),
    )


# --- attribute metrics --------------------------------------------------------


def _labels(pred: np.ndarray, threshold: float) -> np.ndarray:
    return np.asarray(pred, dtype=np.float64) > threshold


def _flipped(before: np.ndarray, after: np.ndarray, threshold: float) -> np.ndarray:
    """(N, A) bool: the label (present / absent at ``threshold``) changed through the edit."""
    return _labels(before, threshold) != _labels(after, threshold)


def _check_attr(before: np.ndarray, after: np.ndarray, target: int, valid) -> np.ndarray:
    if before.shape != after.shape or before.ndim != 2:
        raise ValueError(f"predictions must both be (N, A); got {before.shape} and {after.shape}")
    if not 0 <= target < before.shape[1]:
        raise ValueError(f"target index {target} is outside 0..{before.shape[1] - 1}")
    if valid is None:
        return np.ones(len(before), dtype=bool)
    return np.asarray(valid, dtype=bool)


def tacr(
    before: np.ndarray,
    after: np.ndarray,
    target: int,
    direction: int,
    valid: np.ndarray | None = None,
    threshold: float = 0.0,
) -> float:
    """Target-attribute change rate: the share of frames with a face whose prediction of
    attribute ``target`` moved to the target side (present for ``direction`` > 0, absent
    for < 0), i.e. was not there before the edit and is after. Frames already on the
    target side count as not moved. ``before``/``after`` (N, A); ``threshold`` splits
    present/absent (0 for logits, 0.5 for probabilities)."""
    valid = _check_attr(before, after, target, valid)
    if direction == 0:
        raise ValueError("direction must be +1 (add the attribute) or -1 (remove it)")
    if not valid.any():
        return float("nan")
    want = direction > 0
    was = _labels(before[:, target], threshold) == want
    now = _labels(after[:, target], threshold) == want
    return float((now & ~was)[valid].mean())


def label_flips(
    before: np.ndarray,
    after: np.ndarray,
    valid: np.ndarray | None = None,
    threshold: float = 0.0,
) -> np.ndarray:
    """The share of frames with a face whose label (present / absent at ``threshold``)
    of each attribute changed through the edit: (N, A) x2 -> (A,). NAPR's failures,
    attribute by attribute; NaN rows where no frame is valid."""
    valid = np.ones(len(before), bool) if valid is None else np.asarray(valid, bool)
    if not valid.any():
        return np.full(before.shape[1], np.nan)
    return _flipped(before, after, threshold)[valid].mean(0)


def napr(
    before: np.ndarray,
    after: np.ndarray,
    target: int,
    valid: np.ndarray | None = None,
    threshold: float = 0.0,
) -> float:
    """Non-target attribute preservation rate: the share of frames with a face whose
    predictions of every attribute other than ``target`` kept their label (present /
    absent at ``threshold``) through the edit. (N, A) x2 -> float."""
    valid = _check_attr(before, after, target, valid)
    if not valid.any():
        return float("nan")
    others = np.ones(before.shape[1], dtype=bool)
    others[target] = False
    return float((~_flipped(before, after, threshold)[:, others].any(axis=1))[valid].mean())
