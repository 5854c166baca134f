"""Shared test fixtures: the project's own example clip, the shared real clips
(skipped cleanly where ../shared is absent), and a CLI runner.

Tests on ../shared carry the ``shared`` marker (``pytest -m "not shared"`` leaves them
out). A test that takes one of SHARED_FIXTURES gets the marker here at collection, so it
cannot be forgotten; a test that reads ../shared some other way is marked by hand. Where
../shared (or the part of it a test needs) is absent such tests skip, unless
S3EDIT_REQUIRE_SHARED=1 is set (CI sets it): then they error at setup and the run fails.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EXAMPLE_CLIP = ROOT / "examples" / "astronaut.mp4"

pytest_plugins = ("pytester",)  # tests/test_shared_marker.py runs pytest on a made-up tree
# Fixtures that read ../shared; dva_reference_table reads it through shared_reference.
SHARED_FIXTURES = frozenset({"shared_clips", "shared_faces", "shared_reference", "dva_reference_table"})
REQUIRE_SHARED_ENV = "S3EDIT_REQUIRE_SHARED"


def shared_required() -> bool:
    """True where S3EDIT_REQUIRE_SHARED=1: a missing ../shared fails instead of skipping."""
    return os.environ.get(REQUIRE_SHARED_ENV, "").strip() == "1"


def missing_shared(path: Path) -> None:
    """Skip the running test because ``path`` (../shared or a folder in it) is absent, or
    fail it where S3EDIT_REQUIRE_SHARED=1."""
    where = f"../shared/{path.relative_to(SHARED)}" if path != SHARED else "../shared"
    if shared_required():
        pytest.fail(f"{where} is absent ({path}) and {REQUIRE_SHARED_ENV}=1 requires it: "
                    f"put the shared folder beside the clone, or unset {REQUIRE_SHARED_ENV} "
                    f"to skip the tests that need it", pytrace=False)
    pytest.skip(f"{where} is absent")


def shared_folder(name: str) -> Path:
    """../shared/NAME, or skip/fail (missing_shared) where it is not a folder."""
    path = SHARED / name
    if not path.is_dir():
        missing_shared(path)
    return path


@pytest.hookimpl(tryfirst=True)  # before -m selects on markers
def pytest_collection_modifyitems(config, items):
    """Mark every test that uses a fixture of SHARED_FIXTURES (directly or through other
    fixtures) ``shared``."""
    for item in items:
        if SHARED_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)


def pytest_runtest_setup(item):
    """A ``shared`` test without ../shared skips, or fails under S3EDIT_REQUIRE_SHARED=1."""
    if item.get_closest_marker("shared") is not None and not SHARED.is_dir():
        missing_shared(SHARED)


@pytest.fixture(scope="session")
def example_clip() -> Path:
    """examples/astronaut.mp4: 50 frames, 384x384, 25 fps, h264 + aac (made by
    examples/make_example_clip.py)."""
    assert EXAMPLE_CLIP.is_file(), "examples/astronaut.mp4 is missing"
    return EXAMPLE_CLIP


@pytest.fixture(scope="session")
def shared_clips() -> Path:
    return shared_folder("clips")


@pytest.fixture(scope="session")
def shared_faces() -> Path:
    return shared_folder("faces")


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    return shared_folder("reference")


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
