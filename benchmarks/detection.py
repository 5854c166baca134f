"""Face detection rate and time per frame on real clips: dlib's HOG alone vs the default
chain (HOG, then dlib's CNN on the frames HOG misses).

    python benchmarks/detection.py                        # every video and still in ../shared/clips
    python benchmarks/detection.py a.mp4 b.jpg            # these files
    python benchmarks/detection.py --max-frames 100       # quicker: the first 100 frames of each
    python benchmarks/detection.py --json detection.json  # the table's rows as JSON too

Every frame is decoded once (as align decodes it: PyAV, RGB, upright; a still is a video of
one frame) and given to both detectors, ``make_detector("hog")`` and
``make_detector("dlib")``; only the ``detect`` calls are timed. Columns: frames; frames
in which HOG found a face; frames in which the chain found one, and how many of those
its CNN pass found (frames HOG missed); ms per frame for each detector over all frames;
ms per frame of the chain on the frames HOG missed (what a faceless or HOG-hard frame
costs). Both detectors run single-threaded; timings depend on the machine and on what
else runs on it, so the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_CLIPS = ROOT.parent / "shared" / "clips"
MEDIA_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".png", ".jpg", ".jpeg"}


def default_inputs() -> list[Path]:
    """Every video in ../shared/clips, then every still in its stills/ folder."""
    found = sorted(p for p in SHARED_CLIPS.glob("*") if p.suffix.lower() in MEDIA_SUFFIXES)
    return found + sorted(p for p in (SHARED_CLIPS / "stills").glob("*")
                          if p.suffix.lower() in MEDIA_SUFFIXES)


def timed(detector, image) -> tuple[list, float]:
    """``detector.detect(image)`` and the seconds it took."""
    t0 = time.perf_counter()
    faces = detector.detect(image)
    return faces, time.perf_counter() - t0


def measure(path: Path, hog, chain, max_frames: int | None) -> dict:
    """Both detectors on every frame of ``path`` (up to ``max_frames``)."""
    from s3edit.video.io import iter_frames

    chain.frames_found_by.clear()
    frames = hog_found = chain_found = 0
    hog_s = chain_s = missed_s = 0.0
    size = None
    for frame in iter_frames(path, stop=max_frames):
        image = frame.image
        size = f"{image.shape[1]}x{image.shape[0]}"
        # Which detector goes first alternates, so neither gains from the frame being
        # in the cache already.
        if frames % 2 == 0:
            hog_faces, hog_t = timed(hog, image)
            chain_faces, chain_t = timed(chain, image)
        else:
            chain_faces, chain_t = timed(chain, image)
            hog_faces, hog_t = timed(hog, image)
        frames += 1
        hog_found += bool(hog_faces)
        chain_found += bool(chain_faces)
        hog_s += hog_t
        chain_s += chain_t
        if not hog_faces:
            missed_s += chain_t
    missed = frames - hog_found
    return {
        "file": path.name, "size": size, "frames": frames, "hog": hog_found, "chain": chain_found,
        "chain_cnn": int(chain.frames_found_by["cnn"]),
        "hog_ms": 1e3 * hog_s / max(frames, 1), "chain_ms": 1e3 * chain_s / max(frames, 1),
        "chain_ms_on_hog_misses": 1e3 * missed_s / missed if missed else None,
    }


def print_table(rows: list[dict]) -> None:
    head = ("file", "size", "frames", "HOG", "chain", "of which CNN", "HOG ms/fr", "chain ms/fr",
            "chain ms/fr where HOG missed")
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in rows:
        missed = "-" if r["chain_ms_on_hog_misses"] is None else f"{r['chain_ms_on_hog_misses']:.0f}"
        print(f"| {r['file']} | {r['size']} | {r['frames']} | {r['hog']} | {r['chain']} | "
              f"{r['chain_cnn']} | {r['hog_ms']:.1f} | {r['chain_ms']:.1f} | {missed} |")


def load_average() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", type=Path, help="videos or stills (default: ../shared/clips)")
    parser.add_argument("--max-frames", type=int, default=None, help="the first N frames of each video")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args()

    from s3edit.face.detect import make_detector

    inputs = args.inputs or default_inputs()
    if not inputs:
        raise SystemExit(f"no inputs: {SHARED_CLIPS} is absent or empty; name the files to measure")
    hog, chain = make_detector("hog"), make_detector("dlib")
    print(f"machine: {platform.node()} ({os.cpu_count()} CPUs); load average before: {load_average()}")
    rows = []
    for path in inputs:
        rows.append(measure(path, hog, chain, args.max_frames))
        print(f"  {path.name}: done", flush=True)
    print(f"load average after: {load_average()}")
    limit = "all frames" if args.max_frames is None else f"the first {args.max_frames} frames"
    print(f"\nDetection over {limit} of each input:\n")
    print_table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
