"""Aligning still portraits: read a photo, pad it, find the largest face, FFHQ crop.

Video frames go through ``s3edit.pipeline.align`` (tracking, temporal smoothing); a
still has one frame and one face of interest, so here it is simply::

    image --pad_image--> padded --detect--> largest face --quad--> aligned crop

Why pad first: portrait collections (Pixabay in ``../shared/faces``) are cropped tight
around the head. dlib's HOG detector needs some margin around a face, and the FFHQ quad
(half-size >= 2x the eye distance) reaches well outside such a photo. FFHQ's own recipe
pads by mirroring and then blurs the mirrored band and fades it toward the median
colour, so the crop's corners show a plausible soft background rather than a mirrored
half face; ``pad_image`` does the same (our own code, FFHQ's idea). Detections whose
centre lies in the padding (mirror images) are ignored; where no face is found the
detector is tried again on the photo as it is, with less padding and upsampled
(``DETECT_TRIES``).

Layout of an aligned dataset folder (format DATASET_FORMAT, version DATASET_VERSION)::

    OUT/
      params.json            what it is being made from and how (root, csv, size, pad,
                             detector, rows); a rerun with other params is refused
      shards/NNNNNN.safetensors  results of rows [NNNNNN, NNNNNN + chunk) while running
                             (resume points; removed once merged); same arrays as below
                             plus metadata "records" (JSON)
      portraits.safetensors  the aligned faces, M = aligned count, in row order:
        crops           (M, S, S, 3) uint8  RGB crops
        landmarks       (M, 68, 2) f32      crop px (pixel-centre origin)
        image_landmarks (M, 68, 2) f32      photo px
        quads           (M, 4, 2)  f32      FFHQ quad in photo px (TL, BL, BR, TR)
        scores          (M,)       f32      detector score of the chosen face
        faces           (M,)       int32    faces found by the try that succeeded
        rows            (M,)       int64    row of the listing (csv order)
      dataset.json           format, version, params, counts per source
                             ({"aligned", "skipped"}), "items" (M records: the csv
                             columns + "row"), "skipped" (records + "reason")
      job/                   the same crops as an s3edit job (``s3edit.job``) whose
                             "frames" are the portraits: ``s3edit tune OUT/job`` trains
                             on them. Its source is marked codec "stills"; it has no
                             video, so only align-reading stages (encode, tune) apply.
      glasses-job/           optional (``scripts/glasses_job.py``): the synthetic-glasses
                             twins of the faces the Eyeglasses head is fitted on, as a
                             second job for training (``write_glasses_job``)
      glasses-job-pairs.json  which frame of job/ each twin is (``s3edit.train.pairs``)
      classic-glasses-job/   optional (``--style classic``): the same faces in one fixed
                             style, the edit pairs the default model's decoder learns
                             Eyeglasses from (+ classic-glasses-job-pairs.json)
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from s3edit.errors import InputError, OutputError
from s3edit.face.align import apply_transform, quad_from_landmarks, quad_to_transform, warp_crop
from s3edit.face.detect import Face, LandmarkDetector, make_detector
from s3edit.job import Job
from s3edit.video.io import SourceInfo
from s3edit.paths import atomic_path, write_json_atomic

CROP_SIZE = 128  # aligned crop side for the default model's training data (TRAINING.md, step 1)
# Padding on each side, as a fraction of the photo's longest side. 0.5 leaves room for
# the quad of a face that fills a tight crop (quad side ~ 4x the eye distance).
PAD_FRACTION = 0.5
# FFHQ recipe: blur sigma ~ 2 % of the quad size (a tight portrait's quad is about twice
# its longest side); the mirrored band is blended to its blurred self over the first
# third of the pad and toward the median colour over the first half (FFHQ: all of it;
# faster here, since mirrored faces in the crop's corners are what must go).
PAD_BLUR_FRACTION = 0.02
PAD_BLUR_RAMP = 3.0
PAD_FADE_RAMP = 2.0
# Detection tries of ``detect_largest``, in order: ("pad", times the pad fraction) or
# ("scale", resize factor of the photo).
DETECT_TRIES = (("pad", 1.0), ("scale", 1.0), ("pad", 0.5), ("scale", 2.0))


@dataclass
class AlignedPortrait:
    """One aligned still. crop (S, S, 3) uint8 RGB; landmarks (68, 2) float32 crop px;
    image_landmarks (68, 2) float32 photo px; quad (4, 2) float32 photo px (TL, BL, BR,
    TR); transform (3, 3) float64 photo px -> crop px; faces: how many faces the
    detector found; score: the chosen face's detector score."""

    crop: np.ndarray
    landmarks: np.ndarray
    image_landmarks: np.ndarray
    quad: np.ndarray
    transform: np.ndarray
    faces: int
    score: float


def read_portrait(path: str | Path) -> np.ndarray:
    """A photo as (H, W, 3) uint8 RGB (grey photos become 3 equal channels; EXIF
    orientation applied, as OpenCV's imread does by default)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(f"{str(path)!r} is not a readable image; check the file or leave it out.")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _pad_weights(h: int, w: int, pad: int) -> np.ndarray:
    """(h + 2 pad, w + 2 pad) float32: 0 inside the photo, rising linearly to 1 at
    ``pad`` pixels outside it (distance to the nearer edge, per axis, the larger)."""
    ys = np.arange(h + 2 * pad, dtype=np.float32) - pad
    xs = np.arange(w + 2 * pad, dtype=np.float32) - pad
    dy = np.maximum(np.maximum(-ys, ys - (h - 1)), 0) / pad
    dx = np.maximum(np.maximum(-xs, xs - (w - 1)), 0) / pad
    return np.maximum(dy[:, None], dx[None, :])


def pad_image(image: np.ndarray, fraction: float = PAD_FRACTION) -> tuple[np.ndarray, int]:
    """Mirror-pad a photo by ``fraction`` of its longest side on every side, blurring
    the mirrored band and fading it toward the median colour (FFHQ's padding).

    image (H, W, 3) uint8 -> (padded (H + 2p, W + 2p, 3) uint8, p). Photo pixel (x, y)
    is padded pixel (x + p, y + p)."""
    h, w = image.shape[:2]
    pad = int(round(fraction * max(h, w)))
    if pad <= 0:
        return image.copy(), 0
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT_101).astype(np.float32)
    # BORDER_REFLECT_101 needs the pad < the image side; a wider pad mirrors again (cv2
    # handles it), which the blur and fade below hide.
    sigma = max(1.0, PAD_BLUR_FRACTION * 2 * max(h, w))
    blurred = cv2.GaussianBlur(padded, (0, 0), sigma)
    weight = _pad_weights(h, w, pad)[..., None]
    padded += (blurred - padded) * np.clip(weight * PAD_BLUR_RAMP, 0, 1)
    median = np.median(image.reshape(-1, 3), axis=0).astype(np.float32)
    padded += (median - padded) * np.clip(weight * PAD_FADE_RAMP, 0, 1)
    return np.clip(np.rint(padded), 0, 255).astype(np.uint8), pad


def largest_face(faces: list[Face], inside: tuple[float, float, float, float] | None = None) -> Face | None:
    """The face with the largest box; with ``inside`` = (x0, y0, x1, y1), only faces
    whose box centre lies in that rectangle count. None when none is left."""
    keep = []
    for face in faces:
        cx, cy = (face.box[0] + face.box[2]) / 2, (face.box[1] + face.box[3]) / 2
        if inside is None or (inside[0] <= cx < inside[2] and inside[1] <= cy < inside[3]):
            keep.append(face)
    if not keep:
        return None
    return max(keep, key=lambda f: float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))


def _detect_in(image: np.ndarray, detector: LandmarkDetector, how: str, amount: float):
    """Faces of one detection try, in photo px: ``pad`` (``pad_image`` by ``amount``)
    or ``scale`` (the photo resized by ``amount``, cubic)."""
    if how == "pad":
        padded, pad = pad_image(image, amount)
        faces = detector.detect(padded)
        shift, scale = pad, 1.0
    else:
        scaled = image if amount == 1 else cv2.resize(image, None, fx=amount, fy=amount,
                                                      interpolation=cv2.INTER_CUBIC)
        faces = detector.detect(scaled)
        shift, scale = 0, amount
    # pixel centres: resized u -> photo (u + 0.5) / s - 0.5; padded u -> photo u - pad
    back = lambda p: ((p - shift) + 0.5) / scale - 0.5  # noqa: E731
    return [Face(back(f.box), back(f.landmarks).astype(np.float32), f.score) for f in faces]


def detect_largest(image: np.ndarray, detector: LandmarkDetector, pad_fraction: float = PAD_FRACTION
                   ) -> tuple[Face, int] | None:
    """The largest face of a photo in photo px and how many faces that try found, or
    None. Tries in order until one finds a face (dlib's HOG is picky about margins and
    scale; measured on 200 ../shared/faces photos, each try rescues a few):
    padded by ``pad_fraction``; as it is; padded by half as much; upsampled 2x."""
    h, w = image.shape[:2]
    for how, amount in DETECT_TRIES:
        faces = _detect_in(image, detector, how, amount * pad_fraction if how == "pad" else amount)
        face = largest_face(faces, inside=(0, 0, w, h))  # mirror images in the padding lie outside
        if face is not None:
            return face, len(faces)
    return None


def align_portrait(
    image: np.ndarray,
    detector: LandmarkDetector,
    size: int = CROP_SIZE,
    pad_fraction: float = PAD_FRACTION,
) -> AlignedPortrait | None:
    """FFHQ-aligned crop of the largest face in a photo ((H, W, 3) uint8 RGB), or None
    when the detector finds no face in the photo itself (not in its padding)."""
    found = detect_largest(image, detector, pad_fraction)
    if found is None:
        return None
    face, n_faces = found
    padded, pad = pad_image(image, pad_fraction)
    landmarks = (face.landmarks + pad).astype(np.float32)  # padded-image px
    quad = quad_from_landmarks(landmarks)
    transform = quad_to_transform(quad, size)
    crop = warp_crop(padded, transform, size)
    crop_landmarks = apply_transform(transform, landmarks).astype(np.float32)
    # back to photo coordinates: padded px = photo px + pad
    shift = np.array([[1, 0, pad], [0, 1, pad], [0, 0, 1]], np.float64)
    return AlignedPortrait(
        crop=crop,
        landmarks=crop_landmarks,
        image_landmarks=landmarks - pad,
        quad=quad - pad,
        transform=transform @ shift,
        faces=n_faces,
        score=face.score,
    )


# --- a folder of portraits -> an aligned dataset (layout: module docstring) -----------

DATASET_FORMAT = "s3edit-portraits"
DATASET_VERSION = 1
PARAMS_FILE = "params.json"
ARRAYS_FILE = "portraits.safetensors"
META_FILE = "dataset.json"
SHARDS_DIR = "shards"
JOB_DIR = "job"
GLASSES_JOB_DIR = "glasses-job"
CLASSIC_GLASSES_JOB_DIR = "classic-glasses-job"
SUNGLASSES_JOB_DIR = "sunglasses-job"
SMILING_JOB_DIR = "smiling-job"
CLASSIC_SMILING_JOB_DIR = "classic-smiling-job"
CHUNK = 64  # portraits per resume point
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
ARRAY_SPECS = {  # name -> (per-item shape given crop size S, dtype)
    "crops": (lambda s: (s, s, 3), np.uint8),
    "landmarks": (lambda s: (68, 2), np.float32),
    "image_landmarks": (lambda s: (68, 2), np.float32),
    "quads": (lambda s: (4, 2), np.float32),
    "scores": (lambda s: (), np.float32),
    "faces": (lambda s: (), np.int32),
    "rows": (lambda s: (), np.int64),
}


@dataclass
class PrepareConfig:
    """How a portrait folder is aligned: crop ``size``, ``pad_fraction`` (see
    ``pad_image``), ``detector`` (``make_detector`` name), ``limit`` (None = all rows;
    else that many rows spread evenly over the listing, for quick checks)."""

    size: int = CROP_SIZE
    pad_fraction: float = PAD_FRACTION
    detector: str = "dlib"
    limit: int | None = None


@dataclass
class Portraits:
    """A loaded aligned dataset: ``arrays`` (see the layout above), ``items`` (M dicts,
    one per aligned face, csv columns + "row") and ``meta`` (dataset.json)."""

    arrays: dict[str, np.ndarray]
    items: list[dict]
    meta: dict

    def __len__(self) -> int:
        return len(self.items)

    def column(self, name: str) -> np.ndarray:
        """(M,) str array of one csv column ('' where absent)."""
        return np.array([str(item.get(name, "")) for item in self.items])


def list_portraits(root: str | Path, csv_path: str | Path | None = None) -> list[dict]:
    """Rows to align: the csv's rows (needs a "file" column, relative to ``root``;
    ``root/faces.csv`` is used when present) or, without one, every image under
    ``root`` with "source" = its first folder. Sorted by file."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"portrait folder {str(root)!r} does not exist; give the folder that holds the photos.")
    csv_path = Path(csv_path) if csv_path is not None else root / "faces.csv"
    if csv_path.is_file():
        with open(csv_path, newline="") as f:
            rows = [dict(r) for r in csv.DictReader(f)]
        if rows and "file" not in rows[0]:
            raise InputError(f"{str(csv_path)!r} has no 'file' column; it must list photos relative to {str(root)!r}.")
    else:
        files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        rows = [{"file": str(p.relative_to(root)), "source": p.relative_to(root).parts[0]
                 if len(p.relative_to(root).parts) > 1 else ""} for p in files]
    if not rows:
        raise InputError(f"no photos found in {str(root)!r}.")
    for row in rows:
        row.setdefault("source", "")
    return sorted(rows, key=lambda r: r["file"])


def spread(rows: list[dict], limit: int | None) -> list[dict]:
    """``limit`` rows evenly spaced over ``rows`` (all when None or larger)."""
    if limit is None or limit >= len(rows):
        return rows
    idx = np.linspace(0, len(rows) - 1, num=max(limit, 1)).round().astype(int)
    return [rows[i] for i in np.unique(idx)]


def _stack(lists: dict[str, list], size: int) -> dict[str, np.ndarray]:
    out = {}
    for name, (shape, dtype) in ARRAY_SPECS.items():
        items = lists[name]
        out[name] = np.asarray(items, dtype=dtype).reshape((len(items),) + shape(size))
    return out


def _align_rows(root: Path, rows: list[dict], first: int, detector, cfg: PrepareConfig,
                on_item: Callable[[bool], None] | None) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Align rows[first:first + n]: arrays of the aligned ones + one record per row."""
    lists, records = {name: [] for name in ARRAY_SPECS}, []
    for offset, row in enumerate(rows):
        index = first + offset
        try:
            found = align_portrait(read_portrait(root / row["file"]), detector, cfg.size, cfg.pad_fraction)
            reason = None if found is not None else "no face"
        except InputError:
            found, reason = None, "unreadable"
        records.append({"row": index, "status": "aligned" if found else "skipped", "reason": reason})
        if found is not None:
            for name, value in (("crops", found.crop), ("landmarks", found.landmarks),
                                ("image_landmarks", found.image_landmarks), ("quads", found.quad),
                                ("scores", found.score), ("faces", found.faces), ("rows", index)):
                lists[name].append(value)
        if on_item is not None:
            on_item(found is not None)
    return _stack(lists, cfg.size), records


def _shard_path(out: Path, first: int) -> Path:
    return out / SHARDS_DIR / f"{first:06d}.safetensors"


def _write_shard(path: Path, arrays: dict[str, np.ndarray], records: list[dict]) -> None:
    with atomic_path(path) as tmp:
        save_numpy(arrays, str(tmp), metadata={"records": json.dumps(records)})


def _read_shard(path: Path) -> tuple[dict[str, np.ndarray], list[dict]]:
    with safe_open(str(path), framework="numpy") as f:
        records = json.loads(f.metadata()["records"])
    return load_numpy(str(path)), records


def _params(root: Path, csv_path, rows: list[dict], cfg: PrepareConfig) -> dict:
    return {"format": DATASET_FORMAT, "version": DATASET_VERSION, "root": str(root.resolve()),
            "csv": str(csv_path) if csv_path else None, "rows": len(rows), "size": cfg.size,
            "pad_fraction": cfg.pad_fraction, "detector": cfg.detector, "limit": cfg.limit}


def _claim_folder(out: Path, params: dict, overwrite: bool) -> None:
    """Make ``out`` ours for these params: refuse a foreign non-empty folder or one
    made with other params (unless ``overwrite``, which clears only our own files)."""
    ours = out / PARAMS_FILE
    if out.exists() and not out.is_dir():
        raise OutputError(f"{str(out)!r} is a file; give a folder for the aligned portraits.")
    if out.is_dir() and any(out.iterdir()) and not ours.is_file():
        raise OutputError(f"folder {str(out)!r} is not empty and holds no aligned portraits; choose a new folder.")
    if ours.is_file():
        same = json.loads(ours.read_text()) == params
        if same:
            return
        if not overwrite:
            raise OutputError(f"{str(out)!r} was prepared from other photos or settings; pass --overwrite "
                              "to start again or choose another folder.")
        for name in (SHARDS_DIR, JOB_DIR):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in (ARRAYS_FILE, META_FILE, PARAMS_FILE):
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(ours, params)


@dataclass
class PrepareResult:
    out: Path
    counts: dict[str, dict[str, int]]  # source -> {"aligned": n, "skipped": m}
    aligned: int
    skipped: int
    resumed: int  # rows taken from earlier runs' shards


def prepare_portraits(root: str | Path, out: str | Path, cfg: PrepareConfig = PrepareConfig(),
                      csv_path: str | Path | None = None, overwrite: bool = False,
                      on_item: Callable[[bool], None] | None = None,
                      on_start: Callable[[int, int], None] | None = None) -> PrepareResult:
    """Align every portrait under ``root`` into the dataset folder ``out`` (layout
    above); resumable: a rerun continues from the last finished shard.

    ``on_start(total_rows, done_rows)`` is called once, ``on_item(aligned)`` per row."""
    root, out = Path(root), Path(out)
    rows = spread(list_portraits(root, csv_path), cfg.limit)
    params = _params(root, csv_path, rows, cfg)
    _claim_folder(out, params, overwrite)
    if (out / META_FILE).is_file() and (out / ARRAYS_FILE).is_file():  # finished before
        if on_start is not None:
            on_start(len(rows), len(rows))
        return _result(out, json.loads((out / META_FILE).read_text()), resumed=len(rows))
    firsts = list(range(0, len(rows), CHUNK))
    todo = [f for f in firsts if not _shard_path(out, f).is_file()]
    done_rows = sum(min(CHUNK, len(rows) - f) for f in firsts if f not in todo)
    if on_start is not None:
        on_start(len(rows), done_rows)
    if todo:
        detector = make_detector(cfg.detector)
        for first in todo:
            arrays, records = _align_rows(root, rows[first:first + CHUNK], first, detector, cfg, on_item)
            _write_shard(_shard_path(out, first), arrays, records)
    meta = _merge(out, rows, firsts, params)
    return _result(out, meta, resumed=done_rows)


def _merge(out: Path, rows: list[dict], firsts: list[int], params: dict) -> dict:
    """Shards -> portraits.safetensors + dataset.json + job/, then drop the shards."""
    lists: dict[str, list] = {name: [] for name in ARRAY_SPECS}
    records: list[dict] = []
    for first in firsts:
        arrays, recs = _read_shard(_shard_path(out, first))
        for name in ARRAY_SPECS:
            lists[name].append(arrays[name])
        records += recs
    arrays = {name: np.concatenate(parts) for name, parts in lists.items()}
    items = [{**rows[r], "row": int(r)} for r in arrays["rows"]]
    skipped = [{**rows[rec["row"]], "row": rec["row"], "reason": rec["reason"]}
               for rec in records if rec["status"] != "aligned"]
    counts: dict[str, dict[str, int]] = {}
    for key, group in (("aligned", items), ("skipped", skipped)):
        for source, n in Counter(r["source"] for r in group).items():
            counts.setdefault(source, {"aligned": 0, "skipped": 0})[key] = n
    meta = {"format": DATASET_FORMAT, "version": DATASET_VERSION, "params": params,
            "counts": dict(sorted(counts.items())), "items": items, "skipped": skipped}
    write_stills_job(out / JOB_DIR, arrays, params)
    with atomic_path(out / ARRAYS_FILE) as tmp:
        save_numpy(arrays, str(tmp), metadata={"format": DATASET_FORMAT})
    write_json_atomic(out / META_FILE, meta)
    shutil.rmtree(out / SHARDS_DIR, ignore_errors=True)
    return meta


def _result(out: Path, meta: dict, resumed: int) -> PrepareResult:
    counts = meta["counts"]
    return PrepareResult(out, counts, sum(c["aligned"] for c in counts.values()),
                         sum(c["skipped"] for c in counts.values()), resumed)


def load_portraits(folder: str | Path) -> Portraits:
    """An aligned dataset folder made by ``prepare_portraits``."""
    folder = Path(folder)
    meta_path, arrays_path = folder / META_FILE, folder / ARRAYS_FILE
    if not meta_path.is_file() or not arrays_path.is_file():
        raise InputError(f"{str(folder)!r} holds no finished aligned portraits; run "
                         "`python scripts/prepare_faces.py` first (it resumes if interrupted).")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != DATASET_FORMAT or meta.get("version") != DATASET_VERSION:
        raise InputError(f"{str(meta_path)!r} is not an aligned-portrait dataset of version "
                         f"{DATASET_VERSION}; prepare it again into a new folder.")
    return Portraits(load_numpy(str(arrays_path)), meta["items"], meta)


def write_stills_job(job_dir: Path, arrays: dict[str, np.ndarray], params: dict) -> Path:
    """The aligned portraits as an s3edit job (layout in ``s3edit.job``): one "frame"
    per portrait, every frame valid, crops as PNG. Replaces an earlier one."""
    if job_dir.exists():
        shutil.rmtree(job_dir)
    n, size = len(arrays["crops"]), int(params["size"])
    source = SourceInfo(path=params["root"], size_bytes=0, mtime=0.0, n_frames=n, width=size,
                        height=size, fps=0.0, time_base="1/1", rotation=0, codec="stills",
                        has_audio=False, variable_frame_rate=False)
    job = Job.create(job_dir, source)
    align_params = {"size": size, "detector": params["detector"], "stills": True,
                    "pad_fraction": params["pad_fraction"]}
    job.start_stage("align", align_params)
    for i, crop in enumerate(arrays["crops"]):
        job.write_crop(i, crop)
    transforms = np.stack([quad_to_transform(q, size) for q in arrays["quads"]]).astype(np.float32) \
        if n else np.zeros((0, 3, 3), np.float32)
    track = {
        "pts": np.arange(n, dtype=np.int64),
        "detected": np.ones(n, np.uint8),
        "valid": np.ones(n, np.uint8),
        "landmarks_raw": arrays["image_landmarks"],
        "landmarks": arrays["image_landmarks"],
        "quads_raw": arrays["quads"],
        "quads": arrays["quads"],
        "transforms": transforms,
        "crop_landmarks": arrays["landmarks"],
    }
    job.write_track(track)
    job.finish_stage("align", frames=n, valid=n, stills=True)
    return job_dir


def write_glasses_job(portraits: Portraits, job_dir: Path, seed: int = 0, style: str = "random",
                      rows: np.ndarray | None = None) -> tuple[Path, int]:
    """The synthetic-glasses twins of the faces the Eyeglasses head trains on, as an
    s3edit job beside ``job/`` -> (job_dir, twins). Same crops, landmarks and quads,
    glasses drawn in ``style_for(seed, row)`` (``style="random"``; with ``seed`` equal
    to ``fit_heads.py``'s, the very images the head's positives come from) or in one
    named style for all (``"classic"``, ``"sunglasses"``: ``s3edit.portraits.glasses.STYLES``).
    Beside the job, ``<job_dir>-pairs.json`` (``s3edit.train.pairs``) pairs each twin with
    its face in ``job/`` for ``s3edit tune --pairs``, as an edit of the style's attribute
    (``STYLE_ATTRIBUTES``: Eyeglasses, or Sunglasses). ``rows``: the faces to draw on
    (default: those the Eyeglasses head is fitted on, ``glasses_rows``). Replaces
    earlier ones."""
    from s3edit.portraits.glasses import STYLE_ATTRIBUTES, STYLES, glasses_twins
    from s3edit.portraits.heads import glasses_rows
    from s3edit.train.pairs import write_pairs

    if style not in STYLES:
        raise InputError(f"unknown glasses style {style!r}; one of {', '.join(STYLES)}.")
    job_dir = Path(job_dir)
    idx = glasses_rows(portraits.items) if rows is None else np.asarray(rows, np.int64)
    if not len(idx):
        raise InputError("no faces to draw glasses on; check the sources asked for.")
    arrays = {k: v[idx] for k, v in portraits.arrays.items()}
    arrays["crops"] = glasses_twins(arrays["crops"], arrays["landmarks"], arrays["rows"], seed, STYLES[style])
    params = {**portraits.meta["params"], "glasses_seed": seed, "glasses_style": style}
    write_stills_job(job_dir, arrays, params)
    write_pairs(pairs_path(job_dir), STYLE_ATTRIBUTES[style], job_dir.parent / JOB_DIR, job_dir,
                np.stack([idx, np.arange(len(idx))], axis=1),
                note=f"frame k of {job_dir.name} is frame idx[k] of {JOB_DIR} with glasses drawn "
                     f"from its landmarks (style {style}, seed {seed}; s3edit.portraits.glasses)")
    return job_dir, len(idx)


def write_smiling_job(portraits: Portraits, job_dir: Path, style: str = "own",
                      rows: np.ndarray | None = None) -> tuple[Path, int]:
    """The Smiling pairs as an s3edit job beside ``job/`` -> (job_dir, pairs), in one
    of ``SMILE_STYLES``: ``"own"``, frame k is the k-th person photographed neutral and
    smiling, the neutral face with their own smile registered and pasted into the
    mouth and cheeks; ``"classic"``, frame k is face ``rows[k]`` (default:
    ``classic_smile_rows``) with the classic smile moved onto its mouth
    (``s3edit.portraits.smiling``). ``<job_dir>-pairs.json`` pairs each with its face in
    ``job/``. Replaces earlier ones."""
    from s3edit.portraits.smiling import (
        SMILE_STYLES,
        classic_smile_rows,
        classic_smiles,
        smile_composites,
        smiling_pairs,
    )
    from s3edit.train.pairs import write_pairs

    if style not in SMILE_STYLES:
        raise InputError(f"unknown smile style {style!r}; one of {', '.join(SMILE_STYLES)}.")
    job_dir = Path(job_dir)
    if style == "own":
        pairs = smiling_pairs(portraits.items)
        idx = pairs[:, 0]
        made = smile_composites(portraits.arrays["crops"], portraits.arrays["landmarks"], pairs)
        how = "with the same person's smiling photo registered and pasted into the Smiling region"
    else:
        idx = classic_smile_rows(portraits.items) if rows is None else np.asarray(rows, np.int64)
        if not len(idx):
            raise InputError("no faces to draw the classic smile on; check the sources asked for.")
        made = classic_smiles(portraits.arrays["crops"][idx], portraits.arrays["landmarks"][idx], SMILE_STYLES[style])
        how = "with the classic smile moved onto its mouth from its landmarks"
    arrays = {k: v[idx] for k, v in portraits.arrays.items()}
    arrays["crops"], arrays["landmarks"] = made
    size = int(portraits.meta["params"]["size"])
    to_image = np.linalg.inv(quad_to_transform(arrays["quads"], size))  # crop px -> photo px
    arrays["image_landmarks"] = apply_transform(to_image, arrays["landmarks"]).astype(np.float32)
    write_stills_job(job_dir, arrays, {**portraits.meta["params"], "smile_style": style, "smiling_pairs": len(idx)})
    write_pairs(pairs_path(job_dir), "Smiling", job_dir.parent / JOB_DIR, job_dir,
                np.stack([idx, np.arange(len(idx))], axis=1),
                note=f"frame k of {job_dir.name} is frame idx[k] of {JOB_DIR} {how} (s3edit.portraits.smiling)")
    return job_dir, len(idx)


def pairs_path(job_dir: Path) -> Path:
    """Where ``write_glasses_job`` puts the pairs file of a twin job: ``<job_dir>-pairs.json``."""
    job_dir = Path(job_dir)
    return job_dir.with_name(job_dir.name + "-pairs.json")
