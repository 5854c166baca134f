"""Follow one face through a clip, from every face the detector found per frame.

1. ``pick_face``: over the first ``PICK_WINDOW`` frames that hold faces, detections are
   grouped into candidates by box overlap. By default the most prominent candidate wins:
   prominence = sum over its frames of box area x centrality x min(score, 1), so a face
   that is large, central, clearly detected and present in many of those frames beats a
   small, off-centre or fleeting one. ``face=N`` picks the N-th candidate counted from
   1, left to right by the mean horizontal position of its box centre. Weak candidates
   (mean score < ``PICK_MIN_SCORE``) are left out when a surer one exists.
2. ``follow``: from there on, each frame keeps the detection that best overlaps the
   last accepted box (IoU, else centre distance and size checks); other faces are
   ignored. The face is never re-picked per frame.
3. ``reject_outliers``: a detection whose quad (centre, size, angle) is far from the
   median of its neighbours in time (e.g. landmarks dragged by a hand over the face) is
   dropped and becomes a gap.
4. ``fill_gaps``: gaps of at most ``max_gap`` frames between two detections get
   linearly interpolated landmarks; longer gaps and frames before the first / after the
   last detection are marked invalid (paste leaves them untouched).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from s3edit.errors import NoFaceError
from s3edit.face.align import quad_params, valid_runs

PICK_WINDOW = 10  # frames with faces looked at when picking the face to track
# Candidates whose mean detector score is below this are not offered (nor counted for
# --face) when a surer one exists: dlib's HOG margin on false positives (a patch of a
# space suit in the example clip) stays under ~0.3, clear faces score 0.5-3; S3FD's
# probabilities (fan) are ~0.99 for faces.
PICK_MIN_SCORE = 0.3
MATCH_IOU = 0.3  # a detection continues the track if it overlaps the last box this much
MATCH_DISTANCE = 0.5  # ... or its centre is within this many box sides of the last one,
MATCH_DISTANCE_PER_FRAME = 0.05  # widened by this per frame since the last detection,
MATCH_DISTANCE_MAX = 2.0  # up to this many box sides,
MATCH_SIZE_RATIO = 1.5  # and its side is within this factor of the last one.
# Outliers: compared with the median over detections within +-OUTLIER_HALF_WINDOW frames
# (a median follows steady motion exactly, so only short bursts are flagged). Limits are
# in units of the quad half-size; real head motion on the shared clips moves the raw
# quad centre by at most ~0.05 half-sizes per frame.
OUTLIER_HALF_WINDOW = 3
OUTLIER_MIN_NEIGHBOURS = 4
OUTLIER_CENTRE = 0.25  # half-sizes
OUTLIER_SCALE = 1.25  # ratio
OUTLIER_ANGLE = 20.0  # degrees
DEFAULT_MAX_GAP_SECONDS = 0.4


@dataclass
class Detections:
    """Every face found in a clip, flattened. M = total faces, N = frames scanned.

    frame (M,) int32 frame index; boxes (M, 4) f32 x0, y0, x1, y1; landmarks
    (M, 68, 2) f32; scores (M,) f32; n_frames: frames scanned."""

    frame: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray
    n_frames: int

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros(0, np.int32), np.zeros((0, 4), np.float32),
                   np.zeros((0, 68, 2), np.float32), np.zeros(0, np.float32), 0)

    @classmethod
    def from_faces(cls, per_frame: list[list], first_frame: int = 0) -> "Detections":
        """From a list (one entry per frame, from ``first_frame`` on) of lists of
        ``detect.Face``; ``n_frames`` counts from frame 0."""
        faces = [f for frame in per_frame for f in frame]
        k = len(faces)
        frame = [first_frame + i for i, fr in enumerate(per_frame) for _ in fr]
        return cls(
            np.array(frame, np.int32).reshape(k),
            np.array([f.box for f in faces], np.float32).reshape(k, 4),
            np.array([f.landmarks for f in faces], np.float32).reshape(k, 68, 2),
            np.array([f.score for f in faces], np.float32).reshape(k),
            first_frame + len(per_frame),
        )

    def concat(self, later: "Detections") -> "Detections":
        """These detections followed by ``later`` (whose frames come after)."""
        return Detections(
            np.concatenate([self.frame, later.frame]), np.concatenate([self.boxes, later.boxes]),
            np.concatenate([self.landmarks, later.landmarks]),
            np.concatenate([self.scores, later.scores]), max(self.n_frames, later.n_frames),
        )

    def head(self, n: int) -> "Detections":
        """The detections of the first ``n`` frames."""
        keep = self.frame < n
        return Detections(self.frame[keep], self.boxes[keep], self.landmarks[keep],
                          self.scores[keep], min(n, self.n_frames))

    def from_frame(self, first: int) -> "Detections":
        """The detections of frames ``first`` on (earlier frames count as faceless)."""
        keep = self.frame >= first
        return Detections(self.frame[keep], self.boxes[keep], self.landmarks[keep],
                          self.scores[keep], self.n_frames)

    def arrays(self) -> dict[str, np.ndarray]:
        return {"frame": self.frame, "boxes": self.boxes, "landmarks": self.landmarks,
                "scores": self.scores, "n_frames": np.array(self.n_frames)}

    @classmethod
    def from_arrays(cls, a) -> "Detections":
        return cls(a["frame"].astype(np.int32), a["boxes"].astype(np.float32),
                   a["landmarks"].astype(np.float32), a["scores"].astype(np.float32),
                   int(a["n_frames"]))


@dataclass
class Track:
    """One face followed through N frames.

    detected (N,) bool: the tracked face was found (and kept); landmarks_raw
    (N, 68, 2) f32 detector output (NaN elsewhere); landmarks (N, 68, 2) f32 with
    short gaps filled (NaN where not valid); valid (N,) bool; plus counts."""

    detected: np.ndarray
    landmarks_raw: np.ndarray
    landmarks: np.ndarray
    valid: np.ndarray
    gaps_filled: int
    frames_filled: int
    long_gaps: int
    outliers: int


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Intersection over union of box ``a`` (4,) with boxes ``b`` (K, 4) -> (K,)."""
    b = np.asarray(b, np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def _side(box: np.ndarray) -> np.ndarray:
    return np.sqrt(np.abs((box[..., 2] - box[..., 0]) * (box[..., 3] - box[..., 1])))


def _centre(box: np.ndarray) -> np.ndarray:
    return np.stack([(box[..., 0] + box[..., 2]) / 2, (box[..., 1] + box[..., 3]) / 2], -1)


def best_match(last: np.ndarray, boxes: np.ndarray, frames_since: int = 1) -> int | None:
    """Index of the box in ``boxes`` (K, 4) that continues a track last seen at box
    ``last`` (4,) ``frames_since`` frames ago, or None."""
    if len(boxes) == 0:
        return None
    overlap = iou(last, boxes)
    if overlap.max() >= MATCH_IOU:
        return int(overlap.argmax())
    side = _side(last)
    dist = np.linalg.norm(_centre(boxes) - _centre(last), axis=-1) / side
    reach = min(MATCH_DISTANCE + MATCH_DISTANCE_PER_FRAME * (frames_since - 1), MATCH_DISTANCE_MAX)
    ratio = _side(boxes) / side
    ok = (dist <= reach) & (ratio <= MATCH_SIZE_RATIO) & (ratio >= 1 / MATCH_SIZE_RATIO)
    if not ok.any():
        return None
    return int(np.where(ok, dist, np.inf).argmin())


def _candidates(dets: Detections, frames: np.ndarray) -> list[list[int]]:
    """Group the detections of ``frames`` into candidate faces (lists of detection
    indices, one per frame at most) by greedy matching to each candidate's last box."""
    groups: list[list[int]] = []
    for f in frames:
        idx = np.flatnonzero(dets.frame == f)
        taken: set[int] = set()
        for g in groups:
            free = [i for i in idx if i not in taken]
            last = g[-1]
            m = best_match(dets.boxes[last], dets.boxes[free], int(f - dets.frame[last]))
            if m is not None:
                g.append(free[m])
                taken.add(free[m])
        groups.extend([i] for i in idx if i not in taken)
    return groups


def pick_face(dets: Detections, frame_size: tuple[int, int], face: int | None = None) -> int:
    """Index (into ``dets``) of the detection that starts the track.

    frame_size: (width, height). face: None = most prominent, else 1-based left to right."""
    with_faces = np.unique(dets.frame)
    if len(with_faces) == 0:
        raise NoFaceError("no face was found in any frame of the video; check that it "
                          "shows a face large and frontal enough (or try --detector fan).")
    groups = _candidates(dets, with_faces[:PICK_WINDOW])
    sure = [g for g in groups if float(np.mean(dets.scores[g])) >= PICK_MIN_SCORE]
    groups = sure or groups  # weak detections only count when there is nothing else
    if face is not None:
        order = sorted(groups, key=lambda g: float(np.mean(_centre(dets.boxes[g])[:, 0])))
        if not 1 <= face <= len(order):
            raise NoFaceError(
                f"--face {face} asks for face number {face}, but {len(order)} face(s) were "
                f"found at the start of the clip (numbered 1 to {len(order)} from left to "
                "right); use --preview to check which face is tracked.")
        return order[face - 1][0]
    w, h = frame_size
    half_diag = np.hypot(w, h) / 2

    def prominence(g: list[int]) -> float:
        boxes = dets.boxes[g]
        area = _side(boxes) ** 2
        off = np.linalg.norm(_centre(boxes) - (w / 2, h / 2), axis=-1) / half_diag
        return float(np.sum(area * (1 - 0.5 * off) * np.clip(dets.scores[g], 0, 1)))

    return max(groups, key=prominence)[0]


def follow(dets: Detections, start: int) -> np.ndarray:
    """Detection index of the tracked face per frame, (n_frames,) int64, -1 where the
    face was not found. ``start`` is the detection that starts the track; earlier frames
    stay -1."""
    chosen = np.full(dets.n_frames, -1, np.int64)
    first = int(dets.frame[start])
    chosen[first] = start
    last = start
    order = np.argsort(dets.frame, kind="stable")
    frames, starts = np.unique(dets.frame[order], return_index=True)
    bounds = dict(zip(frames.tolist(), zip(starts.tolist(), list(starts[1:]) + [len(order)])))
    for f in frames[frames > first]:
        a, b = bounds[int(f)]
        idx = order[a:b]
        m = best_match(dets.boxes[last], dets.boxes[idx], int(f - dets.frame[last]))
        if m is not None:
            last = int(idx[m])
            chosen[f] = last
    return chosen


def reject_outliers(landmarks: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Mask (N,) bool of detected frames whose quad departs from its neighbours' median.

    landmarks: (N, 68, 2); detected: (N,) bool."""
    idx = np.flatnonzero(detected)
    out = np.zeros(len(detected), bool)
    if len(idx) < OUTLIER_MIN_NEIGHBOURS:
        return out
    c, x, _ = quad_params(landmarks[idx])
    half = np.linalg.norm(x, axis=-1)
    angle = np.arctan2(x[:, 1], x[:, 0])
    for k, f in enumerate(idx):
        near = np.flatnonzero(np.abs(idx - f) <= OUTLIER_HALF_WINDOW)
        if len(near) < OUTLIER_MIN_NEIGHBOURS:
            continue
        med_c = np.median(c[near], axis=0)
        med_half = np.median(half[near])
        med_angle = np.median(angle[near])
        turn = np.degrees(np.abs(np.angle(np.exp(1j * (angle[k] - med_angle)))))
        out[f] = (np.linalg.norm(c[k] - med_c) > OUTLIER_CENTRE * med_half
                  or abs(np.log(half[k] / med_half)) > np.log(OUTLIER_SCALE)
                  or turn > OUTLIER_ANGLE)
    return out


def fill_gaps(landmarks: np.ndarray, detected: np.ndarray, max_gap: int
              ) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Interpolate landmarks over short gaps.

    landmarks: (N, 68, 2) (values where detected); detected: (N,) bool ->
    (filled landmarks (N, 68, 2) f32, NaN where not valid; valid (N,) bool;
    gaps filled; frames filled; long gaps, counting runs before the first and after
    the last detection)."""
    n = len(detected)
    valid = detected.copy()
    out = np.full((n, 68, 2), np.nan, np.float32)
    out[detected] = landmarks[detected]
    gaps = valid_runs(~detected)
    filled = frames = long_gaps = 0
    for a, b in gaps:
        interior = a > 0 and b < n
        if interior and b - a <= max_gap:
            t = (np.arange(a, b) - (a - 1)) / (b - (a - 1))
            out[a:b] = (1 - t)[:, None, None] * out[a - 1] + t[:, None, None] * out[b]
            valid[a:b] = True
            filled += 1
            frames += b - a
        else:
            long_gaps += 1
    return out, valid, filled, frames, long_gaps


def track_face(dets: Detections, frame_size: tuple[int, int], face: int | None = None,
               max_gap: int = 10) -> Track:
    """Pick, follow, clean and gap-fill one face over ``dets.n_frames`` frames."""
    chosen = follow(dets, pick_face(dets, frame_size, face))
    detected = chosen >= 0
    raw = np.full((dets.n_frames, 68, 2), np.nan, np.float32)
    raw[detected] = dets.landmarks[chosen[detected]]
    outliers = reject_outliers(raw, detected)
    kept = detected & ~outliers
    landmarks, valid, gaps, frames, long_gaps = fill_gaps(raw, kept, max_gap)
    return Track(kept, raw, landmarks, valid, gaps, frames, long_gaps, int(outliers.sum()))


def max_gap_frames(fps: float, seconds: float = DEFAULT_MAX_GAP_SECONDS) -> int:
    """The default longest gap filled: ``seconds`` worth of frames (10 at 25 fps)."""
    return max(1, int(round(seconds * fps)))
