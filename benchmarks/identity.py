"""Faces per second of dlib's face-recognition ResNet: our torch port (batched) against
dlib's own C++ (one face per call, and dlib's batched list API), on the frames of one
clip. Embedding time only: frames are decoded and landmarks found (dlib HOG + 68-point
predictor) before any clock starts.

    python benchmarks/identity.py                      # a shared 500-frame clip, or the example
    python benchmarks/identity.py --clip my.mp4 --frames 200 --batch 1 16 64 --threads 1 2

Prints one line per method: faces, seconds, faces/s, and the worst cosine against dlib's
one-face-per-call descriptors (the two must agree to >= 0.999)."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_CLIP = ROOT.parent / "shared" / "clips" / "talk_man_earbuds_portrait_08.mp4"  # 500 fr
EXAMPLE_CLIP = ROOT / "examples" / "astronaut.mp4"


def decode(path: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` frames (looping the clip if it is shorter), RGB uint8."""
    frames: list[np.ndarray] = []
    while len(frames) < count:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames.append(np.ascontiguousarray(frame.to_ndarray(format="rgb24")))
                if len(frames) == count:
                    break
    return frames


def landmarks(frames: list[np.ndarray]):
    """(frames with a face, their dlib shapes, (N, 68, 2) points)."""
    import dlib
    import face_recognition_models as frm

    detect = dlib.get_frontal_face_detector()
    predict = dlib.shape_predictor(frm.pose_predictor_model_location())
    kept, shapes = [], []
    for img in frames:
        boxes = detect(img, 0) or detect(img, 1)
        if boxes:
            kept.append(img)
            shapes.append(predict(img, max(boxes, key=lambda r: r.area())))
    pts = np.array([[[p.x, p.y] for p in s.parts()] for s in shapes], dtype=np.float64)
    return kept, shapes, pts


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", type=Path, default=None)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 64])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                        help="torch CPU thread counts to try")
    args = parser.parse_args()

    import dlib
    import face_recognition_models as frm

    from s3edit.face.dlib_resnet import TorchDlibIdentity

    clip = args.clip or (SHARED_CLIP if SHARED_CLIP.is_file() else EXAMPLE_CLIP)
    frames, shapes, pts = landmarks(decode(clip, args.frames))
    n = len(frames)
    print(f"clip {clip.name}: {n} faces of {frames[0].shape[1]}x{frames[0].shape[0]} px; "
          f"torch {torch.__version__}, dlib {dlib.__version__}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")

    rec = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    ref, t = timed(lambda: np.array([rec.compute_face_descriptor(f, s, 0, 0.25)
                                     for f, s in zip(frames, shapes)]))
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    rows = [("dlib C++, one face per call", n, t, 1.0)]

    batched, t = timed(lambda: rec.compute_face_descriptor(
        frames, [dlib.full_object_detections([s]) for s in shapes], 0, 0.25))
    batched = np.array([np.array(b[0]) for b in batched])
    batched /= np.linalg.norm(batched, axis=1, keepdims=True)
    rows.append(("dlib C++, batched list API", n, t, float((batched * ref).sum(1).min())))

    ours = TorchDlibIdentity(device="cpu")
    for threads in args.threads:
        torch.set_num_threads(threads)
        ours.embed(frames[:2], pts[:2])  # warm-up (allocator, oneDNN kernels)
        for batch in args.batch:
            ours.batch_size = batch
            emb, t = timed(lambda: ours.embed(frames, pts))
            name = f"torch port, {threads} thr, batch {batch}"
            rows.append((name, n, t, float((emb * ref).sum(1).min())))

    print(f"{'method':32s} {'faces':>6s} {'seconds':>8s} {'faces/s':>8s} {'min cos':>9s}")
    for name, count, sec, cos in rows:
        print(f"{name:32s} {count:6d} {sec:8.2f} {count / sec:8.1f} {cos:9.6f}")


if __name__ == "__main__":
    main()
