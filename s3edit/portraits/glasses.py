"""Synthetic eyeglasses drawn from the 68 landmarks, for labelled training pairs.

The default model's portraits (``../shared/faces``) carry no eyeglasses label, so the
Eyeglasses head is fitted on pairs (face, same face with drawn glasses). Variety
matters: one fixed drawing would teach a head to find that drawing, not glasses. Each
pair gets a random ``GlassesStyle``: frame shape (round, rectangular, aviator), lens
size, bridge width, frame thickness and colour, clear or tinted lenses (alpha), with or
without temples and an aviator's top bar.

Geometry, in units of the eye distance d (distance between the two eye centres) in the
face's own frame (u along the eye line, image left -> right; v down the face): lenses
are centred at u = +-(bridge/2 + half-width), v = ``drop``; typical adult frames are
about 50 mm lenses and an 18 mm bridge for a 63 mm interpupillary distance, hence the
default ranges below. Drawing uses OpenCV's anti-aliased polygons at 1/16 px precision
(``shift=4``) on masks, then one alpha blend: no per-pixel Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from s3edit.face.landmarks import JAW, LEFT_EYE, RIGHT_EYE

SHAPES = ("round", "rectangular", "aviator")
SHIFT = 4  # cv2 fixed-point bits: coordinates in 1/16 px
SUB = float(1 << SHIFT)
OUTLINE_POINTS = 48  # points on each lens outline

# Frame colours (RGB): black, dark brown, tortoise brown, gold, silver, navy, burgundy.
FRAME_COLOURS = ((15, 15, 15), (55, 35, 25), (110, 70, 35), (190, 160, 90),
                 (175, 175, 180), (30, 40, 80), (100, 25, 35))
# Lens tints (RGB): neutral grey, brown, green-grey (sunglasses); clear lenses use a pale
# blue-grey reflection at low alpha.
TINTS = ((25, 25, 28), (70, 45, 25), (40, 55, 40))
CLEAR_TINT = (200, 210, 225)
# Per-shape ranges: lens half-height / half-width, superellipse exponent (2 = ellipse,
# larger = squarer).
ASPECT = {"round": (0.75, 1.0), "rectangular": (0.5, 0.72), "aviator": (0.8, 0.95)}
EXPONENT = {"round": (2.0, 2.6), "rectangular": (3.5, 7.0), "aviator": (2.2, 3.0)}


@dataclass(frozen=True)
class GlassesStyle:
    """One pair of glasses. Lengths are fractions of the eye distance d.

    half_width: lens half-width; aspect: half-height / half-width; exponent: the
    superellipse exponent of the lens outline; bridge: gap between the lenses; drop:
    lens centres below the eye centres; thickness: frame line width; frame_colour:
    RGB; tint: lens RGB; lens_alpha: lens opacity (clear ~0.05-0.15, sunglasses
    0.5-0.85); temples: draw the arms toward the ears; top_bar: an aviator's double
    bridge."""

    shape: str = "round"
    half_width: float = 0.42
    aspect: float | None = None  # None: the middle of the shape's range (ASPECT)
    exponent: float | None = None  # None: the middle of the shape's range (EXPONENT)
    bridge: float = 0.22
    drop: float = 0.04
    thickness: float = 0.05
    frame_colour: tuple[int, int, int] = FRAME_COLOURS[0]
    tint: tuple[int, int, int] = CLEAR_TINT
    lens_alpha: float = 0.08
    temples: bool = True
    top_bar: bool = False

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError(f"unknown glasses shape {self.shape!r}; one of {', '.join(SHAPES)}")
        for name, ranges in (("aspect", ASPECT), ("exponent", EXPONENT)):
            if getattr(self, name) is None:  # frozen: set through object
                object.__setattr__(self, name, float(np.mean(ranges[self.shape])))


def random_style(rng: np.random.Generator, tinted_share: float = 0.25) -> GlassesStyle:
    """A random style; ``tinted_share`` of them are sunglasses."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    tinted = bool(rng.random() < tinted_share)
    metal = bool(rng.random() < 0.4)  # thin metal frames vs thicker acetate
    return GlassesStyle(
        shape=shape,
        half_width=float(rng.uniform(0.36, 0.47)),
        aspect=float(rng.uniform(*ASPECT[shape])),
        exponent=float(rng.uniform(*EXPONENT[shape])),
        bridge=float(rng.uniform(0.14, 0.3)),
        drop=float(rng.uniform(-0.02, 0.1)),
        thickness=float(rng.uniform(0.02, 0.04) if metal else rng.uniform(0.045, 0.08)),
        frame_colour=FRAME_COLOURS[int(rng.integers(len(FRAME_COLOURS)))],
        tint=TINTS[int(rng.integers(len(TINTS)))] if tinted else CLEAR_TINT,
        lens_alpha=float(rng.uniform(0.5, 0.85) if tinted else rng.uniform(0.04, 0.15)),
        temples=bool(rng.random() < 0.85),
        top_bar=shape == "aviator" and bool(rng.random() < 0.7),
    )


@dataclass
class FaceFrame:
    """The face's own axes from landmarks: origin the eye midpoint, u (2,) unit along
    the eye line (image left -> right), v (2,) unit down the face, d the eye distance."""

    origin: np.ndarray
    u: np.ndarray
    v: np.ndarray
    d: float

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """(..., 2) face units (multiples of d) -> (..., 2) image px."""
        uv = np.asarray(uv, np.float64)
        return self.origin + self.d * (uv[..., :1] * self.u + uv[..., 1:] * self.v)

    def to_face(self, xy: np.ndarray) -> np.ndarray:
        """(..., 2) image px -> (..., 2) face units."""
        rel = (np.asarray(xy, np.float64) - self.origin) / self.d
        return np.stack([rel @ self.u, rel @ self.v], axis=-1)


def face_frame(landmarks: np.ndarray) -> FaceFrame:
    """FaceFrame of (68, 2) landmarks."""
    lm = np.asarray(landmarks, np.float64)
    right, left = lm[RIGHT_EYE].mean(0), lm[LEFT_EYE].mean(0)  # image left, image right
    axis = left - right
    d = float(np.linalg.norm(axis))
    if not np.isfinite(d) or d < 1e-3:
        raise ValueError("landmarks give no eye distance; cannot place glasses")
    u = axis / d
    v = np.array([-u[1], u[0]])  # u turned +90 degrees in image coordinates: down the face
    return FaceFrame((left + right) / 2, u, v, d)


def lens_outline(style: GlassesStyle, side: int, n: int = OUTLINE_POINTS) -> np.ndarray:
    """One lens outline (n, 2) in face units; side -1 = image-left lens, +1 = right.

    A superellipse |x/a|^p + |y/b|^p = 1; aviators are taller below the centre and
    their lower half leans outward (the teardrop)."""
    a = style.half_width
    b = a * style.aspect
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = np.sign(c) * np.abs(c) ** (2 / style.exponent) * a
    y = np.sign(s) * np.abs(s) ** (2 / style.exponent) * b
    if style.shape == "aviator":
        lower = np.clip(y / b, 0, None)  # 0 on the upper half, up to 1 at the bottom
        y = y * (1 + 0.35 * lower)
        x = x + 0.25 * a * lower * (1 + x / a) / 2  # the outer-bottom corner drops
    centre_u = side * (style.bridge / 2 + a)
    return np.stack([centre_u + side * x, style.drop + y], axis=-1)


def _fixed(points_px: np.ndarray) -> np.ndarray:
    """(n, 2) px -> int32 fixed-point points for cv2 drawing with ``shift=SHIFT``."""
    return np.round(points_px * SUB).astype(np.int32)


def _frame_lines(frame: FaceFrame, style: GlassesStyle, lenses: list[np.ndarray],
                 landmarks: np.ndarray) -> list[np.ndarray]:
    """Open polylines (face units) of the bridge, top bar and temples."""
    inner = [lens[np.argmax(-side * lens[:, 0] - 0.3 * np.abs(lens[:, 1] - style.drop))]
             for side, lens in zip((-1, 1), lenses)]
    tops = [lens[np.argmin(lens[:, 1])] for lens in lenses]
    mid = np.array([0.0, min(inner[0][1], inner[1][1]) - 0.06])
    lines = [np.stack([inner[0], (inner[0] + mid) / 2 + [0, -0.02], mid,
                       (inner[1] + mid) / 2 + [0, -0.02], inner[1]])]
    if style.top_bar:
        y = min(t[1] for t in tops) + 0.02
        lines.append(np.array([[tops[0][0], y], [0.0, y - 0.03], [tops[1][0], y]]))
    if style.temples:
        jaw = frame.to_face(np.asarray(landmarks, np.float64)[[JAW[0], JAW[-1]]])
        for side, lens, ear in zip((-1, 1), lenses, jaw):
            upper = lens[lens[:, 1] < style.drop]
            hinge = upper[np.argmax(side * upper[:, 0])]
            end_u = ear[0] if side * ear[0] > side * hinge[0] else hinge[0] + side * 0.1
            lines.append(np.array([hinge, [end_u, hinge[1] + 0.05]]))
    return lines


def glasses_layers(shape: tuple[int, int], landmarks: np.ndarray, style: GlassesStyle
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Coverage masks of the glasses: (lens (H, W), frame (H, W)) float32 in [0, 1]
    for an image of ``shape`` (H, W) and its (68, 2) landmarks in pixels."""
    h, w = shape
    frame = face_frame(landmarks)
    lenses = [lens_outline(style, side) for side in (-1, 1)]
    width = max(1, int(round(style.thickness * frame.d)))
    lens_mask = np.zeros((h, w), np.uint8)
    frame_mask = np.zeros((h, w), np.uint8)
    polys = [_fixed(frame.to_image(lens)) for lens in lenses]
    cv2.fillPoly(lens_mask, polys, 255, cv2.LINE_AA, SHIFT)
    cv2.polylines(frame_mask, polys, True, 255, width, cv2.LINE_AA, SHIFT)
    lines = [_fixed(frame.to_image(line)) for line in _frame_lines(frame, style, lenses, landmarks)]
    cv2.polylines(frame_mask, lines, False, 255, max(1, int(round(0.8 * width))), cv2.LINE_AA, SHIFT)
    return lens_mask.astype(np.float32) / 255, frame_mask.astype(np.float32) / 255


def draw_glasses(image: np.ndarray, landmarks: np.ndarray, style: GlassesStyle) -> np.ndarray:
    """The image ((H, W, 3) uint8 RGB) with glasses drawn on the face whose (68, 2)
    landmarks (pixels) are given -> (H, W, 3) uint8. The input is not modified."""
    lens, frame_cov = glasses_layers(image.shape[:2], landmarks, style)
    out = image.astype(np.float32)
    a_lens = (lens * style.lens_alpha)[..., None]
    out = out * (1 - a_lens) + np.float32(style.tint) * a_lens
    a_frame = frame_cov[..., None]
    out = out * (1 - a_frame) + np.float32(style.frame_colour) * a_frame
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# One fixed style for the paired-edit supervision of the decoder (``scripts/glasses_job.py
# --style classic``): bold black rectangular acetate frames with clear lenses. The
# Eyeglasses *head* is fitted on varied styles (``random_style``) so that it finds
# glasses, not one drawing; the *decoder* learns from pairs what an Eyeglasses edit
# draws, and an L1 loss over many styles would learn their per-pixel median, which is
# mostly no frame at all. One style gives it one clear target.
CLASSIC = GlassesStyle(shape="rectangular", half_width=0.43, aspect=0.62, exponent=3.5, bridge=0.2,
                       drop=0.04, thickness=0.075, frame_colour=FRAME_COLOURS[0], tint=CLEAR_TINT,
                       lens_alpha=0.1, temples=True, top_bar=False)
# The decoder's second style, taught as an attribute of its own (``Sunglasses``, the
# edit pairs of ``scripts/glasses_job.py --style sunglasses``): round sunglasses, thin
# gold metal frames and dark grey lenses that leave the eyes faintly visible. Round
# rather than rectangular and tinted rather than clear, so that the two styles differ
# in every way the decoder can see; small enough to stay inside the eyes' edit region
# (``s3edit.face.mask.ATTRIBUTE_REGIONS``, tests/face/test_mask.py).
SUNGLASSES = GlassesStyle(shape="round", half_width=0.4, aspect=0.85, exponent=2.2, bridge=0.2,
                          drop=0.05, thickness=0.035, frame_colour=FRAME_COLOURS[3], tint=TINTS[0],
                          lens_alpha=0.78, temples=True, top_bar=False)
STYLES = {"random": None, "classic": CLASSIC, "sunglasses": SUNGLASSES}  # --style names: None = random_style per face
# The attribute whose edit each style's pairs teach (``write_glasses_job``).
STYLE_ATTRIBUTES = {"random": "Eyeglasses", "classic": "Eyeglasses", "sunglasses": "Sunglasses"}


def is_tinted(style: GlassesStyle) -> bool:
    """Whether ``style`` is sunglasses (tinted lenses; ``random_style``'s ``tinted_share``)."""
    return style.tint != CLEAR_TINT


def style_for(seed: int, key: int) -> GlassesStyle:
    """The random style of item ``key`` under ``seed``: the same pair always gets the
    same glasses, whatever else is drawn (resumable, order-free)."""
    return random_style(np.random.default_rng([seed, key]))


def glasses_twins(crops: np.ndarray, landmarks: np.ndarray, keys: np.ndarray, seed: int = 0,
                  style: GlassesStyle | None = None) -> np.ndarray:
    """Copies of crops (N, S, S, 3) uint8 with glasses drawn from their (N, 68, 2)
    landmarks, each in ``style_for(seed, keys[i])`` (or in ``style`` for all) ->
    (N, S, S, 3) uint8."""
    if not len(crops):
        return np.zeros_like(crops)
    return np.stack([draw_glasses(c, lm, style or style_for(seed, int(k))) for c, lm, k in zip(crops, landmarks, keys)])
