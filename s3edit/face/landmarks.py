"""Index sets of the 68-point iBUG 300-W landmark scheme (dlib's shape predictor and
face-alignment's FAN both use it). Points are numbered from 0; each set is a ``range``
usable as an array index. "Right" and "left" are the subject's: in a frontal face the
right eye is on the image's left.

Layout from the 300-W annotation guide (Sagonas et al., 2013)::

    0-16   jaw line, from the subject's right ear (image left) to the left ear
    17-21  right brow (image left)      22-26  left brow (image right)
    27-30  nose bridge                  31-35  nose base (nostrils)
    36-41  right eye (image left)       42-47  left eye (image right)
    48-59  outer lip contour            60-67  inner lip contour
"""

from __future__ import annotations

JAW = range(0, 17)
NOSE_BASE = range(31, 36)
NOSE = range(27, 36)
RIGHT_EYE = range(36, 42)  # image left in a frontal face
LEFT_EYE = range(42, 48)
MOUTH = range(48, 68)
BROWS = range(17, 27)
EYES = range(36, 48)

# Mouth corners used by the FFHQ alignment recipe.
MOUTH_RIGHT_CORNER = 48  # image left
MOUTH_LEFT_CORNER = 54  # image right
