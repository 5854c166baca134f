"""FFHQ-style face alignment: landmarks -> crop quad -> temporally smoothed quad ->
affine transform -> aligned square crop.

The quad (Karras et al., FFHQ ``recreate_aligned_images``; STIT and DVA align the same
way), from the 68 iBUG landmarks of one frame::

    eye_avg      = (mean(right eye) + mean(left eye)) / 2
    eye_to_eye   = mean(left eye) - mean(right eye)         (image left -> right)
    eye_to_mouth = mean(mouth corners 48, 54) - eye_avg
    x = eye_to_eye - rot90(eye_to_mouth)  normalised, times
        max(2 * |eye_to_eye|, 1.8 * |eye_to_mouth|)          (half-size)
    y = rot90(x)                                             (x turned 90 deg, image down)
    c = eye_avg + 0.1 * eye_to_mouth                         (centre)
    quad = [c - x - y, c - x + y, c + x + y, c + x - y]      (TL, BL, BR, TR)

Temporal smoothing follows STIT: a Gaussian low-pass over time of the centre ``c``
(sigma 1 frame) and of the axes ``x``, ``y`` (sigma 3 frames), run separately on each
run of consecutive valid frames so it never blends across a long gap.

Pixel convention (``s3edit.job``): the origin is the centre of the top-left pixel, so the
quad's outer corners map to the crop's outer pixel *edges*: TL -> (-0.5, -0.5),
BR -> (size - 0.5, size - 0.5).
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy.ndimage import gaussian_filter1d

from s3edit.face.landmarks import LEFT_EYE, MOUTH_LEFT_CORNER, MOUTH_RIGHT_CORNER, RIGHT_EYE

# FFHQ recipe constants.
CENTRE_MOUTH_SHIFT = 0.1  # centre = eye midpoint + 0.1 * eye-to-mouth
EYE_SPAN_FACTOR = 2.0  # half-size >= 2 * |eye-to-eye|
MOUTH_SPAN_FACTOR = 1.8  # half-size >= 1.8 * |eye-to-mouth|
# STIT's smoothing defaults (frames).
SIGMA_CENTRE = 1.0
SIGMA_AXES = 3.0
# Padding outside the frame: mirror without repeating the edge pixel (cv2
# BORDER_REFLECT_101). FFHQ also reflects; mirrored texture looks more like a photo to the
# generator than smeared edge pixels, and paste only writes back the face region.
BORDER = cv2.BORDER_REFLECT_101


def _rot90(v: np.ndarray) -> np.ndarray:
    """(..., 2) vectors turned by +90 degrees in image coordinates: (x, y) -> (-y, x)."""
    return np.stack([-v[..., 1], v[..., 0]], axis=-1)


def quad_params(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre and half-axes of the FFHQ quad.

    landmarks: (..., 68, 2) frame pixels -> (c, x, y), each (..., 2): the quad is
    c +- x +- y. NaN landmarks give NaN outputs."""
    lm = np.asarray(landmarks, dtype=np.float64)
    eye_right = lm[..., RIGHT_EYE, :].mean(axis=-2)  # image left
    eye_left = lm[..., LEFT_EYE, :].mean(axis=-2)
    eye_avg = (eye_left + eye_right) / 2
    eye_to_eye = eye_left - eye_right
    mouth_avg = (lm[..., MOUTH_RIGHT_CORNER, :] + lm[..., MOUTH_LEFT_CORNER, :]) / 2
    eye_to_mouth = mouth_avg - eye_avg

    # FFHQ writes this as eye_to_eye - flipud(eye_to_mouth) * [-1, 1].
    x = eye_to_eye - _rot90(eye_to_mouth)
    with np.errstate(invalid="ignore", divide="ignore"):  # NaN frames stay NaN
        x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    half = np.maximum(EYE_SPAN_FACTOR * np.linalg.norm(eye_to_eye, axis=-1),
                      MOUTH_SPAN_FACTOR * np.linalg.norm(eye_to_mouth, axis=-1))
    x = x * half[..., None]
    y = _rot90(x)  # FFHQ: flipud(x) * [-1, 1]; points down the face
    c = eye_avg + CENTRE_MOUTH_SHIFT * eye_to_mouth
    return c, x, y


def quad_from_params(c: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(..., 2) centre and half-axes -> (..., 4, 2) corners TL, BL, BR, TR."""
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y], axis=-2)


def quad_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(..., 68, 2) landmarks -> (..., 4, 2) FFHQ quad (TL, BL, BR, TR), float32."""
    return quad_from_params(*quad_params(landmarks)).astype(np.float32)


def valid_runs(valid: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive True in a (N,) mask as half-open (start, stop) pairs."""
    v = np.concatenate([[0], np.asarray(valid, dtype=np.int8), [0]])
    edges = np.flatnonzero(np.diff(v))
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist()))


def smooth_segments(values: np.ndarray, valid: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian low-pass over time (axis 0) within each run of valid frames.

    values: (N, ...) float; valid: (N,) bool. Frames outside runs are returned
    unchanged. Run ends are padded by repeating the end value (mode "nearest"),
    so a run's first and last quads are not pulled toward zero."""
    out = np.array(values, dtype=np.float64, copy=True)
    if sigma <= 0:
        return out
    for start, stop in valid_runs(valid):
        out[start:stop] = gaussian_filter1d(out[start:stop], sigma, axis=0, mode="nearest")
    return out


def smooth_quads(landmarks: np.ndarray, valid: np.ndarray, sigma_centre: float = SIGMA_CENTRE,
                 sigma_axes: float = SIGMA_AXES) -> np.ndarray:
    """Smoothed FFHQ quads for a clip.

    landmarks: (N, 68, 2) gap-filled landmarks (anything where not valid);
    valid: (N,) bool -> (N, 4, 2) float32 quads (NaN where not valid)."""
    valid = np.asarray(valid, dtype=bool)
    c, x, y = quad_params(np.where(valid[:, None, None], landmarks, 0.0))
    c = smooth_segments(c, valid, sigma_centre)
    x = smooth_segments(x, valid, sigma_axes)
    y = smooth_segments(y, valid, sigma_axes)
    quads = quad_from_params(c, x, y)
    quads[~valid] = np.nan
    return quads.astype(np.float32)


def quad_to_transform(quads: np.ndarray, size: int) -> np.ndarray:
    """Affine maps from frame pixels to crop pixels, as homographies.

    quads: (..., 4, 2) TL, BL, BR, TR -> (..., 3, 3) float64 with last row (0, 0, 1).
    TL, BL and BR fix the map (an FFHQ quad is a square, so TR follows)."""
    quads = np.asarray(quads, dtype=np.float64)
    lead = quads.shape[:-2]
    flat = quads.reshape(-1, 4, 2)
    dst = np.array([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]], np.float32)
    out = np.tile(np.eye(3), (flat.shape[0], 1, 1))
    for i, q in enumerate(flat):
        if np.isfinite(q).all():
            out[i, :2] = cv2.getAffineTransform(q[:3].astype(np.float32), dst)
        else:
            out[i] = np.nan
    return out.reshape(*lead, 3, 3)


def apply_transform(transforms: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 3, 3) homographies applied to (..., P, 2) points -> (..., P, 2)."""
    pts = np.asarray(points, dtype=np.float64)
    t = np.asarray(transforms, dtype=np.float64)
    h = pts @ np.swapaxes(t[..., :2, :2], -1, -2) + t[..., None, :2, 2]
    w = pts @ t[..., 2, :2][..., :, None] + t[..., 2:, 2][..., None, :]
    return h / w


def warp_crop(image: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """Aligned ``size`` x ``size`` crop of ``image`` ((H, W, 3) uint8) under ``transform``
    ((3, 3) affine, frame px -> crop px). Returns (size, size, 3) uint8.

    cv2.warpAffine only samples bilinearly/bicubically, which aliases when the face is
    much larger than the crop (a 1080p close-up). So when shrinking, the part of the
    frame the quad covers is first reduced with INTER_AREA (a box filter) to about the
    crop's scale, then warped; the transform is composed so the result is the same map.
    The region is clipped to the frame so reflect padding mirrors at the frame's edges."""
    t = np.asarray(transform, dtype=np.float64)
    inv = np.linalg.inv(t)
    corners = np.array([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5],
                        [size - 0.5, -0.5]])
    quad = apply_transform(inv, corners)
    scale = np.linalg.norm(quad[1] - quad[0]) / size  # frame px per crop px
    H, W = image.shape[:2]
    margin = 2.0 * max(scale, 1.0) + 2
    x0 = int(np.clip(np.floor(quad[:, 0].min() - margin), 0, W - 1))
    y0 = int(np.clip(np.floor(quad[:, 1].min() - margin), 0, H - 1))
    x1 = int(np.clip(np.ceil(quad[:, 0].max() + margin) + 1, x0 + 1, W))
    y1 = int(np.clip(np.ceil(quad[:, 1].max() + margin) + 1, y0 + 1, H))
    region = image[y0:y1, x0:x1]
    shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)  # region -> frame
    to_region = shift
    if scale > 1.25:  # shrink by more than 25 %: box-filter first
        w = max(1, int(round(region.shape[1] / scale)))
        h = max(1, int(round(region.shape[0] / scale)))
        sx, sy = region.shape[1] / w, region.shape[0] / h
        region = cv2.resize(region, (w, h), interpolation=cv2.INTER_AREA)
        # cv2.resize maps a small pixel centre u to (u + 0.5) * s - 0.5 in the region.
        small_to_region = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]])
        to_region = shift @ small_to_region
    m = (t @ to_region)[:2]
    return cv2.warpAffine(region, m, (size, size), flags=cv2.INTER_CUBIC, borderMode=BORDER)
