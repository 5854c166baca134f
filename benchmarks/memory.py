"""Peak memory of each stage on a short and a long clip: it should not grow with length.

Makes clips of each length in ``--frames`` by playing examples/astronaut.mp4 forwards
and backwards (so the face moves smoothly throughout), in a temporary folder, then runs
README's main job on each, one stage per fresh ``s3edit`` process:

    s3edit align CLIP -o JOB
    s3edit encode JOB --steps S
    s3edit edit JOB --attr Eyeglasses=0.6 --steps S
    s3edit paste JOB --edit NAME -o OUT.mp4

and reports each process's peak resident memory (``ru_maxrss`` from ``os.wait4``) and
seconds, with the load average (1 minute) before and after each. The stages stream
frames through fixed-size batches, so peak memory should be the same for every length
up to the per-frame latents they keep (x_T: 48 KB a frame at 64², 768 KB at 256²).
Memory does not depend on the DDIM steps, so a few do.

    python benchmarks/memory.py                          # 50 and 500 frames, 4 steps
    python benchmarks/memory.py --frames 20,60 --steps 2   # a quick check
    python benchmarks/memory.py --weights dva --json memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

from s3edit.video.io import iter_frames

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "examples" / "astronaut.mp4"
EDIT = "Eyeglasses=0.6"  # README's main job
FPS = 25


def load_avg() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def make_clip(path: Path, n: int) -> Path:
    """``n`` frames of the example clip played forwards, backwards, forwards, ..."""
    source = [f.image for f in iter_frames(CLIP)]
    cycle = source + source[-2:0:-1]
    height, width = source[0].shape[:2]
    with av.open(str(path), "w") as box:
        stream = box.add_stream("libx264", rate=FPS, options={"crf": "18", "preset": "veryfast"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(cycle[i % len(cycle)], format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            box.mux(stream.encode(frame))
        box.mux(stream.encode())
    return path


def measure(args: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, stdout) of ``s3edit ARGS`` in a fresh process."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-m", "s3edit", "--quiet", *args], stdout=out, stderr=err,
                                text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN keeps a maximum)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        out.seek(0), err.seek(0)
        if proc.returncode:
            raise SystemExit(f"s3edit {' '.join(args)} failed ({proc.returncode}):\n{err.read()}")
        return usage.ru_maxrss / 1024, seconds, out.read().strip()  # ru_maxrss: KB on Linux


def run(lengths: list[int], steps: int, weights: str, tmp: Path) -> list[dict]:
    rows = []
    for n in lengths:
        clip = make_clip(tmp / f"clip{n}.mp4", n)
        job = tmp / f"clip{n}.s3job"
        stages = [
            ("align", ["align", str(clip), "-o", str(job)]),
            ("encode", ["encode", str(job), "--weights", weights, "--steps", str(steps)]),
            ("edit", ["edit", str(job), "--attr", EDIT, "--weights", weights, "--steps", str(steps), "--json"]),
        ]
        for stage, args in stages:
            load = load_avg()
            peak, seconds, out = measure(args)
            rows.append(dict(frames=n, stage=stage, peak_mb=peak, seconds=seconds, load_start=load,
                             load_end=load_avg()))
            if stage == "edit":
                name = json.loads(out)["edit"]
        load = load_avg()
        peak, seconds, _ = measure(["paste", str(job), "--edit", name, "-o", str(tmp / f"out{n}.mp4")])
        rows.append(dict(frames=n, stage="paste", peak_mb=peak, seconds=seconds, load_start=load,
                         load_end=load_avg()))
    return rows


def table(rows: list[dict]) -> str:
    first = {r["stage"]: r for r in rows if r["frames"] == rows[0]["frames"]}
    lines = ["| frames | stage | peak MB | vs shortest | seconds | load at start | load at end |",
             "|" + "---|" * 7]
    for r in rows:
        grow = r["peak_mb"] - first[r["stage"]]["peak_mb"]
        lines.append(f"| {r['frames']} | {r['stage']} | {r['peak_mb']:.0f} | {grow:+.0f} MB | {r['seconds']:.1f} | "
                     f"{r['load_start']:.2f} | {r['load_end']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", default="50,500", type=lambda s: [int(n) for n in s.split(",")],
                        help="clip lengths, shortest first")
    parser.add_argument("--steps", type=int, default=4, help="DDIM steps (memory does not depend on them)")
    parser.add_argument("--weights", default="default")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s3edit-memory-") as tmp:
        rows = run(args.frames, args.steps, args.weights, Path(tmp))
    print(f"s3edit stages in fresh processes; --steps {args.steps}, weights {args.weights}")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
