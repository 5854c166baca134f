"""How steady can drawn glasses be? The warp-error yardstick for an Eyeglasses edit.

    python benchmarks/drawn_glasses.py                      # the two shared validation clips
    python benchmarks/drawn_glasses.py --clips CLIP.mp4 --frames 50 --out drawn
    python benchmarks/drawn_glasses.py --sigma-centre 3 --sigma-axes 6 --out drawn-smoother
    python benchmarks/drawn_glasses.py --soften 2 --out drawn-soft

An edit's "warp x" (``benchmarks/default_model.py``; docs/metrics.md) is the face's warp
error in the edit over the source's. Glasses add dark, sharp edges to the face, and any
error of the source's optical flow or any jitter of where they sit costs more on such
edges than on skin, so even glasses that never change shape score above 1. This script
measures that floor: for each clip's first ``--frames`` frames (aligned with ``s3edit
align``, one job per clip in ``--out``; ``--sigma-centre`` and ``--sigma-axes`` as
align's), it draws the classic glasses
(``s3edit.portraits.glasses.CLASSIC``, the drawing the decoder learns from its pairs) on
every frame at full resolution (or, with ``--soften``, its change blurred as an edit drawn
in a small crop and scaled up is), once from the align stage's smoothed landmarks (those
the paste-back follows) and once from each frame's own detected landmarks, writes both
videos and scores them with ``s3edit.pipeline.score``. Printed per clip and variant: the
source's and the drawing's face warp errors and their ratio. An Eyeglasses edit whose
ratio is near the smoothed drawing's is as steady as a drawing that follows the face.
For an edit made in S-px crops, half a crop pixel (the face crop's side in frame pixels
over 2 S; the table gives the side) is about how soft its lines are once scaled up: the
``--soften`` to compare it with.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_CLIPS = ROOT.parent / "shared" / "clips"
DEFAULT_CLIPS = ("talk_man_short_2s.mp4", "woman_headturn_expressions_05.mp4")


def draw_video(clip: Path, landmarks, valid, out: Path, soften: float = 0.0) -> Path:
    """The clip's first ``len(valid)`` frames with the classic glasses drawn on every
    valid frame from ``landmarks`` (N, 68, 2) frame px, written to ``out``. ``soften``:
    the drawing's change to the frame blurred by a Gaussian of that sigma (frame px), as
    a drawing made at a lower resolution and scaled up would be."""
    import cv2
    import numpy as np

    from s3edit.portraits.glasses import CLASSIC, draw_glasses
    from s3edit.video.io import VideoWriter, iter_frames, probe

    info = probe(clip)
    with VideoWriter(out, info, trim_audio=True) as writer:
        for frame in iter_frames(info.path, stop=len(valid)):
            image = frame.image
            if valid[frame.index]:
                drawn = draw_glasses(image, landmarks[frame.index], CLASSIC)
                if soften > 0:
                    change = cv2.GaussianBlur(drawn.astype(np.float32) - image, (0, 0), soften)
                    drawn = np.clip(np.rint(image + change), 0, 255).astype(np.uint8)
                image = drawn
            writer.write(image, frame.pts)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=Path, nargs="+", default=None,
                        help="videos (default: the two shared validation clips)")
    parser.add_argument("--frames", type=int, default=50, help="only the first N frames of each clip")
    parser.add_argument("--out", type=Path, default=Path("drawn-glasses"), help="jobs and videos go here")
    parser.add_argument("--sigma-centre", type=float, default=None,
                        help="the align stage's smoothing of the landmarks and crop centre, frames (align's default)")
    parser.add_argument("--sigma-axes", type=float, default=None,
                        help="the align stage's smoothing of the crop size and angle, frames (align's default)")
    parser.add_argument("--soften", type=float, default=0.0,
                        help="blur the drawing's change by this sigma, frame px (a 64-px edit scaled up is soft)")
    args = parser.parse_args()

    import numpy as np

    from s3edit.pipeline.align import align_video
    from s3edit.pipeline.score import score

    clips = args.clips or [SHARED_CLIPS / name for name in DEFAULT_CLIPS]
    missing = [str(c) for c in clips if not c.is_file()]
    if missing:
        raise SystemExit(f"missing clips: {', '.join(missing)} (the defaults need ../shared/clips)")
    args.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    rows = []
    smoothing = {k: v for k, v in (("sigma_centre", args.sigma_centre), ("sigma_axes", args.sigma_axes))
                 if v is not None}  # the rest as align's defaults
    for clip in clips:
        # only the landmarks are used: 64-px crops keep the alignment quick
        job = align_video(clip, args.out / f"{clip.stem}.s3job", size=64, max_frames=args.frames, **smoothing)
        track, found = job.read_track("landmarks", "valid", "quads"), job.read_detections()
        quads = track["quads"][track["valid"]]  # (TL, BL, BR, TR) of each face crop, frame px
        side = float(np.median(np.linalg.norm(quads[:, 0] - quads[:, 3], axis=-1)))
        detected = np.zeros_like(track["landmarks"])
        detected[found["frame"]] = found["landmarks"]  # frames with no detection stay invalid below
        has_own = np.zeros_like(track["valid"])
        has_own[found["frame"]] = True
        variants = {"smoothed": (track["landmarks"], track["valid"]),  # what the paste-back follows
                    "detected": (detected, track["valid"] & has_own)}  # each frame's own
        for name, (landmarks, valid) in variants.items():
            video = draw_video(clip, landmarks, valid, args.out / f"{clip.stem}__drawn_{name}.mp4", args.soften)
            report = score(job.root, video)
            rows.append((clip.name, name, side, report.warp_source_face, report.warp_edited_face,
                         report.warp_edited_face / report.warp_source_face))
    load = " ".join(f"{x:.2f}" for x in load_before) + ", after " + " ".join(f"{x:.2f}" for x in os.getloadavg())
    drawn_as = f"softened by sigma {args.soften:g} px" if args.soften > 0 else "at full resolution"
    print(f"\nclassic glasses drawn {drawn_as}, first {args.frames} frames; face warp errors (0-255); "
          f"load average (1, 5, 15 min) before {load}")
    print("crop side = the face crop's median side in frame px (half a pixel of an S-px crop: side / 2S)")
    print(f"{'clip':<36} {'landmarks':<10} {'crop side':>9} {'source':>8} {'drawn':>8} {'warp x':>8}")
    for clip, name, side, source, drawn, ratio in rows:
        print(f"{clip:<36} {name:<10} {side:>9.0f} {source:>8.3f} {drawn:>8.3f} {ratio:>8.2f}")


if __name__ == "__main__":
    main()
