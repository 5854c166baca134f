"""Shared test fixtures: the project's own example clip, the shared real clips
(skipped cleanly where ../shared is absent), and a CLI runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EXAMPLE_CLIP = ROOT / "examples" / "astronaut.mp4"


@pytest.fixture(scope="session")
def example_clip() -> Path:
    """examples/astronaut.mp4: 50 frames, 384x384, 25 fps, h264 + aac (made by
    examples/make_example_clip.py)."""
    assert EXAMPLE_CLIP.is_file(), "examples/astronaut.mp4 is missing"
    return EXAMPLE_CLIP


@pytest.fixture(scope="session")
def shared_clips() -> Path:
    path = SHARED / "clips"
    if not path.is_dir():
        pytest.skip("../shared/clips is absent")
    return path


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    path = SHARED / "faces"
    if not path.is_dir():
        pytest.skip("../shared/faces is absent")
    return path


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    path = SHARED / "reference"
    if not path.is_dir():
        pytest.skip("../shared/reference is absent")
    return path


@pytest.fixture
def cli():
    """``cli("align", str(clip), "-o", str(job))`` -> click Result (exit_code,
    stdout, stderr)."""
    from s3edit.cli.app import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session")
def dva_reference_table(shared_reference) -> dict[str, tuple[int, ...]]:
    """../shared/reference/dva_state_dict.tsv (name TAB shape per line) -> {name: shape}."""
    table = {}
    for line in (shared_reference / "dva_state_dict.tsv").read_text().splitlines():
        name, shape = line.split("\t")
        table[name] = tuple(int(s) for s in shape.strip("()").split(",") if s.strip())
    return table


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a test module (``pytestmark =
    pytest.mark.usefixtures("one_torch_thread")``), restored afterwards. Small tensors run
    fastest on one thread, and on a shared 2-core machine torch's default pool spends
    most of its time waiting (measured: 98 s vs 19 s for tests/s3 at load ~13)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
