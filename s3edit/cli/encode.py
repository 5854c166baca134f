"""``s3edit encode JOB``: identity, landmarks and DDIM noise maps of every aligned frame."""

from __future__ import annotations

import json

import typer

from s3edit.cli.options import (
    DEFAULT_BATCH_SIZE,
    BatchSizeOpt,
    CompileOpt,
    DeviceOpt,
    FixedPointOpt,
    JobArg,
    JsonOpt,
    PrecisionOpt,
    SamplerOpt,
    StepsOpt,
    WeightsOpt,
)
from s3edit.job import Job
from s3edit.pipeline.encode import describe_fixed_point, encode_job
from s3edit.pipeline.options import Compile, Device, Precision, run_options
from s3edit.pipeline.shard import joined


def encode_cmd(
    job: JobArg,
    weights: WeightsOpt = None,
    steps: StepsOpt = None,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    device: DeviceOpt = Device.auto,
    precision: PrecisionOpt = Precision.auto,
    sampler: SamplerOpt = None,
    fixed_point: FixedPointOpt = None,
    compile: CompileOpt = Compile.auto,
    as_json: JsonOpt = False,
) -> None:
    """Encode an aligned job: z_id, z_lnd, z_face and the DDIM noise map x_T of every frame.

    Cached in JOB/latents: a rerun with the same weights, steps, sampler and corrections does
    nothing, and every later `s3edit edit` of the job costs decoding steps only.

    Example: s3edit encode clip.job --weights dva --steps 100 --batch-size 8
    """
    shard = joined()  # under torchrun: this process's share of the frames (docs/pipeline.md)
    done = Job.open(job)
    done.require("align", "run `s3edit align VIDEO -o JOB` first.")
    encode_job(done, run_options(weights, steps=steps, batch_size=batch_size, device=device, precision=precision,
                                 job=done, sampler=sampler, compile=compile, fixed_point=fixed_point))
    if not shard.first:  # under torchrun, rank 0 reports for every process
        return
    entry = done.stage("encode")
    if as_json:
        typer.echo(json.dumps({"job": str(done.root), **entry}, indent=2))
        return
    typer.echo(f"{done.root}: {entry['frames']} frames encoded with {entry.get('weights_name') or 'weights'} "
               f"({entry['params']['steps']} DDIM steps, sampler {entry['params']['sampler']}"
               f"{describe_fixed_point(entry['params'])}) in {done.latents_dir}")
