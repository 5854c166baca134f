"""Make examples/astronaut.mp4: a short talking-head-like clip from scikit-image's
astronaut photo (Eileen Collins, NASA, public domain) with gentle synthetic head
motion and a quiet audio tone, so the project has real-looking footage of its own.

    python examples/make_example_clip.py [-o examples/astronaut.mp4]

The motion is a smooth rotation / translation / zoom about the face centre, so the
face detector sees a moving face and the smoothing and paste stages have work to do.
"""

from __future__ import annotations

import argparse
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from skimage import data

FPS = 25
SECONDS = 2.0
SIZE = 384  # output frame side; the photo is 512 px
FACE_CENTRE = (255.0, 135.0)  # (x, y) of the face in the 512 px photo
SAMPLE_RATE = 44100


def frames(n: int) -> list[np.ndarray]:
    photo = data.astronaut()  # (512, 512, 3) uint8 RGB
    out = []
    for i in range(n):
        t = i / FPS
        angle = 3.0 * np.sin(2 * np.pi * 0.45 * t)  # degrees
        zoom = 1.0 + 0.03 * np.sin(2 * np.pi * 0.3 * t)
        dx = 10.0 * np.sin(2 * np.pi * 0.35 * t + 0.5)
        dy = 5.0 * np.sin(2 * np.pi * 0.5 * t)
        m = cv2.getRotationMatrix2D(FACE_CENTRE, angle, zoom)
        m[:, 2] += (dx, dy)
        moved = cv2.warpAffine(photo, m, (512, 512), flags=cv2.INTER_CUBIC,
                               borderMode=cv2.BORDER_REFLECT)
        out.append(cv2.resize(moved, (SIZE, SIZE), interpolation=cv2.INTER_AREA))
    return out


def write(path: Path) -> None:
    n = int(round(FPS * SECONDS))
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as box:
        video = box.add_stream("libx264", rate=FPS, options={"crf": "18", "preset": "medium"})
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        audio = box.add_stream("aac", rate=SAMPLE_RATE, layout="mono")
        for i, rgb in enumerate(frames(n)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, FPS)
            box.mux(video.encode(frame))
        box.mux(video.encode())
        t = np.arange(int(SAMPLE_RATE * SECONDS)) / SAMPLE_RATE
        tone = (0.1 * np.sin(2 * np.pi * 220 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t)))
        tone = tone.astype(np.float32)[None]
        step = 1024
        for start in range(0, tone.shape[1], step):
            chunk = np.ascontiguousarray(tone[:, start:start + step])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            frame.time_base = Fraction(1, SAMPLE_RATE)
            box.mux(audio.encode(frame))
        box.mux(audio.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path,
                        default=Path(__file__).with_name("astronaut.mp4"))
    args = parser.parse_args()
    write(args.output)
    print(args.output)


if __name__ == "__main__":
    main()
