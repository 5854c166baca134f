"""Decode, align and paste speed, peak memory, round-trip PSNR and crop jitter on real clips.

    python benchmarks/align_paste.py                      # every clip in ../shared/clips
    python benchmarks/align_paste.py a.mp4 b.mov          # these clips
    python benchmarks/align_paste.py --max-frames 60      # quicker: the first 60 frames
    python benchmarks/align_paste.py --only-1080p         # just the memory check

Per clip, each stage runs in its own child process so its peak RSS is its own
(``getrusage`` peak of that process; "base" is the RSS after imports, so peak - base is
what the stage itself needed):

- decode: every frame decoded and converted to RGB (what align does);
- align:  ``s3edit.pipeline.align.align_video`` into a fresh job;
- paste:  ``s3edit.pipeline.paste.paste_video`` with the defaults (timed), and the round
  trip PSNR (unedited crops pasted back) over the whole frame against the decoded
  source, mean and worst frame, for each blend mode (``detail``, ``replace``);
- jitter: mean frame-to-frame move of the crop quad's centre, raw quads (from the
  per-frame landmarks) vs the smoothed ones the crops use, in pixels and in % of the
  quad's side.

Then the 1080p memory check: the example clip upscaled to 1920x1080 and looped to 600
frames, aligned over its first 150 and over all 600 frames; the peak RSS should be flat.
Timings depend on the machine (and on what else runs on it): quote them with its name.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_CLIPS = ROOT.parent / "shared" / "clips"
EXAMPLE = ROOT / "examples" / "astronaut.mp4"
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
LONG_1080P_FRAMES = 600
SHORT_1080P_FRAMES = 150


def rss_mb() -> float:
    """Current resident set size of this process, MiB (Linux /proc)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 99.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


# --- child stages (one process each) --------------------------------------------------


def stage_decode(clip: Path, job: Path, max_frames: int | None) -> dict:
    from s3edit.video.io import iter_frames

    base = rss_mb()
    t0 = time.perf_counter()
    n = 0
    for frame in iter_frames(clip, stop=max_frames):
        frame.image  # noqa: B018 - the RGB conversion is part of decoding for align
        n += 1
    return {"frames": n, "seconds": time.perf_counter() - t0, "base_mb": base}


def stage_align(clip: Path, job: Path, max_frames: int | None) -> dict:
    from safetensors.numpy import load_file

    from s3edit.pipeline.align import align_video

    base = rss_mb()
    t0 = time.perf_counter()
    result = align_video(clip, job, max_frames=max_frames)
    seconds = time.perf_counter() - t0
    track = load_file(result.track_path)
    entry = result.stage("align")
    return {"frames": int(entry["frames"]), "seconds": seconds, "base_mb": base,
            "valid": int(track["valid"].sum()), **jitter(track)}


def jitter(track: dict) -> dict:
    """Mean |centre(t+1) - centre(t)| over consecutive valid frames, raw vs smoothed."""
    valid = track["valid"].astype(bool)
    both = valid[1:] & valid[:-1]
    out = {}
    for key in ("quads_raw", "quads"):
        quads = track[key].astype(np.float64)
        centre = quads.mean(axis=1)
        step = np.linalg.norm(np.diff(centre, axis=0), axis=-1)
        ok = both & np.isfinite(step)
        side = np.linalg.norm(quads[:, 1] - quads[:, 0], axis=-1)
        out[f"jitter_{key}_px"] = float(step[ok].mean()) if ok.any() else float("nan")
        out[f"jitter_{key}_pct"] = float((step[ok] / side[1:][ok]).mean() * 100) if ok.any() else float("nan")
    return out


def stage_paste(clip: Path, job: Path, max_frames: int | None) -> dict:
    """Paste with the defaults (timed), then with each blend mode, judging the round trip."""
    from s3edit.pipeline.paste import BLEND_MODES, DEFAULT_BLEND, PasteConfig, paste_video
    from s3edit.video.io import DEFAULT_CRF, iter_frames

    base = rss_mb()
    out = job / "bench_paste.mp4"
    t0 = time.perf_counter()
    result = paste_video(job, out, PasteConfig(overwrite=True, max_frames=max_frames))
    seconds = time.perf_counter() - t0
    peak_paste = peak_rss_mb()
    figures = {}
    for blend in sorted(BLEND_MODES, key=lambda b: b != DEFAULT_BLEND):  # the default first
        if blend != DEFAULT_BLEND:
            paste_video(job, out, PasteConfig(overwrite=True, max_frames=max_frames, blend=blend))
        values = [psnr(a.image, b.image) for a, b in zip(iter_frames(clip), iter_frames(out))]
        figures[f"{blend}_psnr_mean"] = float(np.mean(values))
        figures[f"{blend}_psnr_min"] = float(np.min(values))
    return {"frames": result.n_frames, "pasted": result.n_pasted, "seconds": seconds,
            "base_mb": base, "peak_paste_mb": peak_paste, "blend": DEFAULT_BLEND,
            "crf": DEFAULT_CRF, **figures}


STAGES = {"decode": stage_decode, "align": stage_align, "paste": stage_paste}


def run_child(stage: str, clip: Path, job: Path, max_frames: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", stage, str(clip), str(job)]
    if max_frames:
        cmd += ["--max-frames", str(max_frames)]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} on {clip.name} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the 1080p clip ------------------------------------------------------------------


def make_1080p_clip(path: Path, n_frames: int) -> Path:
    """The example clip upscaled to 1080 px high, centred on a 1920x1080 canvas, looped
    (forwards then backwards, so the motion has no jump) to ``n_frames`` frames."""
    import dataclasses
    from fractions import Fraction

    import cv2

    from s3edit.video.io import VideoWriter, iter_frames, probe

    info = probe(EXAMPLE)
    small = [f.image for f in iter_frames(EXAMPLE)]
    loop = small + small[::-1]
    like = dataclasses.replace(info, width=1920, height=1080, has_audio=False,
                               time_base=Fraction(1, 25 * 512))
    step = 512
    with VideoWriter(path, like, crf=20, preset="ultrafast") as writer:
        for i in range(n_frames):
            canvas = np.full((1080, 1920, 3), 40, np.uint8)
            canvas[:, 420:1500] = cv2.resize(loop[i % len(loop)], (1080, 1080),
                                             interpolation=cv2.INTER_CUBIC)
            writer.write(canvas, i * step)
    return path


# --- report ----------------------------------------------------------------------------


def fmt_fps(r: dict) -> str:
    return f"{r['frames'] / r['seconds']:.1f}" if r["seconds"] > 0 else "-"


def bench_clip(clip: Path, tmp: Path, max_frames: int | None) -> dict:
    job = tmp / f"{clip.name}.job"
    dec = run_child("decode", clip, job, max_frames)
    ali = run_child("align", clip, job, max_frames)
    pas = run_child("paste", clip, job, max_frames)
    return {"clip": clip.name, "decode": dec, "align": ali, "paste": pas}


def print_clip_table(rows: list[dict]) -> None:
    head = (f"{'clip':38} {'frames':>6} {'decode':>7} {'align':>6} {'paste':>6} "
            f"{'peak MiB d/a/p':>16} {'PSNR detail':>13} {'PSNR replace':>13} {'jitter raw->smooth':>22}")
    print(head)
    print("-" * len(head))
    for r in rows:
        d, a, p = r["decode"], r["align"], r["paste"]
        peaks = f"{d['peak_mb']:.0f}/{a['peak_mb']:.0f}/{p['peak_paste_mb']:.0f}"
        jit = (f"{a['jitter_quads_raw_px']:.2f}->{a['jitter_quads_px']:.2f} px "
               f"({a['jitter_quads_raw_pct']:.2f}->{a['jitter_quads_pct']:.2f}%)")
        print(f"{r['clip'][:38]:38} {a['frames']:>6} {fmt_fps(d):>7} {fmt_fps(a):>6} {fmt_fps(p):>6} "
              f"{peaks:>16} {p['detail_psnr_mean']:>6.2f}/{p['detail_psnr_min']:<6.2f} "
              f"{p['replace_psnr_mean']:>6.2f}/{p['replace_psnr_min']:<6.2f} {jit:>22}")
    print("fps = frames per second; PSNR = mean/worst frame, dB, whole frame vs decoded source; "
          f"paste fps: default blend {rows[0]['paste']['blend']}, crf {rows[0]['paste']['crf']}; "
          "peak MiB: peak RSS of the decode/align/paste process" if rows else "")


def bench_1080p(tmp: Path) -> dict:
    clip = make_1080p_clip(tmp / "long_1080p.mp4", LONG_1080P_FRAMES)
    out = {}
    for n in (SHORT_1080P_FRAMES, LONG_1080P_FRAMES):
        r = run_child("align", clip, tmp / f"1080p_{n}.job", n)
        out[n] = r
        print(f"1080p align, {n:4d} frames: {fmt_fps(r)} fps, RSS after imports {r['base_mb']:.0f} MiB, "
              f"peak {r['peak_mb']:.0f} MiB")
    growth = out[LONG_1080P_FRAMES]["peak_mb"] - out[SHORT_1080P_FRAMES]["peak_mb"]
    print(f"peak RSS growth from {SHORT_1080P_FRAMES} to {LONG_1080P_FRAMES} frames: {growth:+.0f} MiB "
          f"(one 1080p RGB frame is {1920 * 1080 * 3 / 2**20:.1f} MiB)")
    return {str(k): v for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--skip-1080p", action="store_true")
    parser.add_argument("--only-1080p", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--child", nargs=3, metavar=("STAGE", "CLIP", "JOB"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        from s3edit import console

        console.set_quiet(True)
        stage, clip, job = args.child
        result = STAGES[stage](Path(clip), Path(job), args.max_frames)
        result["peak_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    clips = args.clips or sorted(p for p in SHARED_CLIPS.glob("*") if p.suffix.lower() in VIDEO_SUFFIXES)
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    report: dict = {"clips": [], "1080p": None}
    with tempfile.TemporaryDirectory(prefix="s3edit-bench-") as tmp:
        tmp = Path(tmp)
        if not args.only_1080p:
            for clip in clips:
                row = bench_clip(clip, tmp, args.max_frames)
                report["clips"].append(row)
                print(f"  done {clip.name}", file=sys.stderr, flush=True)
            print_clip_table(report["clips"])
        if not args.skip_1080p:
            report["1080p"] = bench_1080p(tmp)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
