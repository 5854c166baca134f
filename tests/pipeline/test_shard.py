"""Frames sharded over processes (``s3edit.pipeline.shard``): two CPU processes started
by torchrun give a job bit for bit the same latents and edit as one process, and a
sharded rerun redoes only what is missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from s3edit.job import Job
from s3edit.pipeline.shard import Shard, joined

STEPS, BATCH = 4, 2  # 16 frames -> 8 chunks, 4 per process


def test_shard_from_the_launchers_variables():
    assert Shard.from_env({}) == Shard.single() == Shard(0, 1, 0)
    assert Shard.from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Shard(3, 4, 1)
    assert Shard.from_env({"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}) == Shard.single()


def test_shares_cover_every_item_once():
    items = list(range(11))
    shares = [Shard(r, 3).share(items) for r in range(3)]
    assert shares[0] == [0, 3, 6, 9] and sorted(i for share in shares for i in share) == items
    assert Shard.single().share(items) == items


def test_a_single_process_needs_no_process_group():
    shard = joined()
    assert shard == Shard.single() and not torch.distributed.is_initialized()
    shard.barrier()
    assert shard.total(5) == 5


def s3edit(args: list[str], processes: int = 1) -> dict:
    """``python -m s3edit ARGS --json`` (under torchrun for several processes) -> its JSON."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] \
        if processes > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "S3EDIT_DEBUG": "1"}
    done = subprocess.run([sys.executable, *launcher, "-m", "s3edit", "--quiet", *args, "--json"],
                          check=False, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


def latents(root: Path) -> dict[str, torch.Tensor]:
    """Every latent of a job: the merged semantics, and x_T by frame."""
    out = dict(load_file(str(root / "latents" / "semantics.safetensors")))
    chunks = [load_file(str(p)) for p in sorted((root / "latents").glob("xT.*.safetensors"))]
    out["xT_index"] = torch.cat([c["index"] for c in chunks])
    out["x_T"] = torch.cat([c["x_T"] for c in chunks])
    return out


def edit_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("change.*.safetensors"))}


def test_two_processes_write_what_one_writes_and_resume(aligned, small_weights, tmp_path):
    one = Path(shutil.copytree(aligned, tmp_path / "one.s3job"))
    two = aligned
    args = ["--attr", "Eyeglasses=4", "--weights", str(small_weights), "--steps", str(STEPS),
            "--batch-size", str(BATCH), "--device", "cpu", "--precision", "fp32"]
    single = s3edit(["edit", str(one), *args])
    sharded = s3edit(["edit", str(two), *args], processes=2)
    assert sharded["frames"] == sharded["decoded"] == single["decoded"] == 16

    a, b = latents(one), latents(two)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    name = single["edit"]
    assert sharded["edit"] == name
    changes = edit_files(Path(single["folder"]))
    assert len(changes) == 8 and edit_files(Path(sharded["folder"])) == changes  # every change, bit for bit
    for job in (Job.open(one), Job.open(two)):
        assert job.is_done("encode") and job.edit_record(name)["done"]
    assert Job.open(two).stage("encode")["params"] == Job.open(one).stage("encode")["params"]

    # a sharded rerun redoes only what is missing: one x_T chunk and the changes of
    # three chunks (one of rank 0, two of rank 1, one of them from the new x_T)
    xT = sorted((two / "latents").glob("xT.*.safetensors"))
    folder = Path(sharded["folder"])
    change = sorted(folder.glob("change.*.safetensors"))
    lost = [xT[5], change[2], change[3], change[5]]
    kept = {p: p.stat().st_mtime_ns for p in folder.glob("change.*") if p not in lost}
    for path in lost:
        path.unlink()
    record = Job.open(two).stage("encode")
    Job.open(two).start_stage("encode", record["params"])  # as a run interrupted in the x_T pass leaves it
    again = s3edit(["edit", str(two), *args], processes=2)
    assert again["decoded"] == 3 * BATCH
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert edit_files(folder) == changes
    assert torch.equal(latents(two)["x_T"], a["x_T"])
    assert s3edit(["edit", str(two), *args], processes=2)["decoded"] == 0

