"""Every stage for a video, in order: ``s3edit edit VIDEO``.

    result = edit_video("clip.mp4", [("Eyeglasses", 0.6)], "out.mp4")

align (skipped when the job folder already holds this video's crops) -> encode (skipped
when done with these weights, steps and sampler) -> edit -> paste. The weights are loaded and
the attributes checked once, before any work, so a misspelt attribute or a clashing
output costs nothing.
"""

from __future__ import annotations

import os
from pathlib import Path

from s3edit import console
from s3edit.job import Job, default_job_dir
from s3edit.paths import check_output_path, require_input_file
from s3edit.pipeline.align import align_video
from s3edit.pipeline.edit import EditResult, edit_job, resolve_edit
from s3edit.pipeline.options import DEFAULT_BATCH, Compile, Device, Precision, Region, Sampler, run_options
from s3edit.pipeline.paste import PasteConfig, paste_video
from s3edit.pipeline.shard import joined
from s3edit.video.io import probe, source_info

def default_output(video: Path, name: str) -> Path:
    return Path.cwd() / f"{video.stem}_{name}.mp4"


def edit_video(
    video: str | os.PathLike,
    attributes: list[tuple[str, float]],
    output: str | os.PathLike | None = None,
    *,
    job_dir: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    steps: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    device: str | Device = Device.auto,
    precision: str | Precision = Precision.auto,
    overwrite: bool = False,
    size: int | None = None,
    region: str | Region = Region.auto,
    sampler: str | Sampler | None = None,
    frames: tuple[int, int | None] | None = None,
    compile: str | Compile = Compile.auto,
    fixed_point: int | None = None,
) -> EditResult:
    """Every missing stage for ``video`` into ``job_dir`` (default ``./<stem>.s3job``),
    crops of ``size`` (default: the model's resolution); writes the edited video to
    ``output`` (default ``./<stem>_<edit name>.mp4``). ``sampler``: None for the job's
    (when encoded with these weights), else the weight set's default. ``frames`` (A, B):
    only frames A .. B - 1 are aligned, encoded and edited; the rest of the video is
    written untouched (default output ``./<stem>_<edit name>__fA-B.mp4``). ``compile``:
    torch.compile of the UNet (``options.pick_compile``); ``fixed_point``: corrections per
    encode step (None: the job's, else 0)."""
    video = require_input_file(video, "video")
    job_dir = Path(job_dir) if job_dir is not None else default_job_dir(video)
    if output is not None:  # before any work: a clash should not cost an encode
        check_output_path(output, [video], overwrite)
    info = probe(video)
    existing = Job.open(job_dir) if Job.is_job(job_dir) else None
    run = run_options(weights, steps=steps, batch_size=batch_size, device=device, precision=precision,
                      job=existing, sampler=sampler, compile=compile, fixed_point=fixed_point)
    edit = resolve_edit(attributes, run, region)  # fail before align
    start, stop = frames or (0, None)
    shard = joined()
    shard.barrier()  # every process has looked at the job folder before rank 0 aligns into it
    if existing is not None and existing.is_done("align") and _same_range(existing, start, stop, info.n_frames):
        job = Job.create(job_dir, source_info(info))  # checks it is this video's job
        console.note(f"align: reusing the aligned crops in {job.root}.")
    else:  # align runs in one process (rank 0); the others wait for its crops
        job = align_video(video, job_dir, size=size or run.weights.size, info=info, start=start,
                          max_frames=stop) if shard.first else None
        shard.barrier()
        job = job or Job.open(job_dir)
    result = edit_job(job, edit, run)
    name = result.name if frames is None else f"{result.name}__f{start}-{min(stop or info.n_frames, info.n_frames)}"
    out = output if output is not None else default_output(video, name)
    if shard.first:  # the video is written once, from every process's frames
        result.video = paste_edit(result, out, overwrite, info=info)
    return result


def paste_edit(result: EditResult, output: str | os.PathLike, overwrite: bool = False, info=None) -> Path:
    """Paste an edit into the job's source video -> ``output``."""
    return paste_video(result.job, output, PasteConfig(edit=result.name, overwrite=overwrite), info=info).output


def _same_range(job: Job, start: int, stop: int | None, n_frames: int) -> bool:
    """The job's crops cover exactly frames ``start`` .. ``stop`` - 1 of the video."""
    params = job.stage("align")["params"]
    return params.get("start", 0) == start and params["frames"] == min(stop or n_frames, n_frames)
