"""``s3edit tune`` on two processes (torchrun, CPU/gloo, through Hugging Face Accelerate)
gives the same weight set as one process with the same global batch.

Both runs go through the real command line in subprocesses (``python launch.py tune
...`` and ``torchrun --nproc_per_node 2 launch.py tune ...``); the launcher sets one
intra-op thread per process (two processes share the test machine's cores) and runs
``s3edit.cli.app``, or makes the tiny weight set (tiny-32, dlib identity net)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

LAUNCHER = '''
import sys
import torch

torch.set_num_threads(1)

if sys.argv[1] == "make-weights":
    from s3edit.weights.weightset import random_weight_set

    random_weight_set(sys.argv[2], "tiny-32-dlib", name="tiny")
else:
    from s3edit.cli.app import main

    sys.argv = ["s3edit", *sys.argv[1:]]
    main()
'''

STEPS, GLOBAL_BATCH, LR = 4, 4, 2e-3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], cwd: Path) -> dict | None:
    """Run; the JSON summary ``tune --json`` printed (None for other commands)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "S3EDIT_DEBUG": "1"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    start = done.stdout.find("{")
    return json.loads(done.stdout[start:]) if start >= 0 else None


@pytest.fixture(scope="module")
def setup(tmp_path_factory, example_clip):
    from s3edit.pipeline.align import align_video

    root = tmp_path_factory.mktemp("dist")
    launcher = root / "launch.py"
    launcher.write_text(LAUNCHER)
    run([sys.executable, str(launcher), "make-weights", str(root / "tiny")], root)
    job = align_video(example_clip, root / "astronaut.s3job", size=64, max_frames=8).root
    return root, launcher, job


def tune_args(job: Path, weights: Path, out: Path) -> list[str]:
    """fp32 on every CPU: bf16 rounds a batch's sums differently when it is split, and the
    comparison is of the split, not of the precision (tests/train/test_loop.py)."""
    return ["tune", str(job), "--from", str(weights), "-o", str(out), "--steps", str(STEPS),
            "--batch-size", str(GLOBAL_BATCH), "--lr", str(LR), "--clusters", "2", "--sparsity", "0.3",
            "--precision", "fp32", "--json"]


def trained(folder: Path, name: str) -> dict[str, torch.Tensor]:
    """The tensors training can change (the frozen identity net left out)."""
    return {k: v for k, v in load_file(str(folder / name)).items() if not k.startswith("encoder.idnet.")}


def cat(tensors: dict[str, torch.Tensor], keys) -> torch.Tensor:
    return torch.cat([tensors[k].flatten() for k in keys])


def test_two_processes_match_one(setup):
    """The gradients agree up to float round-off (the all-reduced mean of two half-batch
    gradients vs one full-batch gradient: ~1e-5 relative, measured). Adam turns the
    round-off of near-zero gradient entries into whole steps of ±lr (its update is about
    g/|g|); T_k's zero-initialised last layers have only such entries at the first step,
    so the transforms differ more than the UNet. The test bounds the differences next to
    how far training moved the weights, and checks the logged losses and the evaluated
    objective agree."""
    root, launcher, job = setup
    one, two = root / "one", root / "two"
    single = run([sys.executable, str(launcher), *tune_args(job, root / "tiny", one)], root)
    double = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                  str(free_port()), str(launcher), *tune_args(job, root / "tiny", two)], root)
    for part in ("first", "last", "after"):
        for term, value in single[part].items():
            assert double[part][term] == pytest.approx(value, rel=1e-3, abs=1e-5), (part, term)
    start = trained(root / "tiny", "model.safetensors")
    a, b = trained(one, "model.safetensors"), trained(two, "model.safetensors")
    assert a.keys() == b.keys() == start.keys()
    moved = (cat(a, a) - cat(start, a)).abs().mean()
    assert float(moved) > 1e-3  # training did move the UNet and the fusion
    assert float((cat(a, a) - cat(b, a)).abs().mean()) < 1e-2 * float(moved)  # measured: 0.2 %
    a, b = trained(one, "s3.safetensors"), trained(two, "s3.safetensors")
    last = [k for k in a if ".2." in k]  # T_k's last layers start at 0
    moved = cat(a, last).abs().mean()
    assert float(moved) > 1e-3
    assert float((cat(a, a) - cat(b, a)).abs().mean()) < 1e-2 * float(moved)
    assert float((cat(a, a) - cat(b, a)).abs().max()) < 2 * LR * STEPS
    rec1 = json.loads((one / "config.json").read_text())["s3"]
    rec2 = json.loads((two / "config.json").read_text())["s3"]
    assert rec1["groups_zeroed"] == rec2["groups_zeroed"] and len(rec1["groups_zeroed"]) == 4  # ⌊0.3 · 14⌋
