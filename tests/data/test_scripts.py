"""scripts/prepare_faces.py, fit_heads.py and glasses_job.py as a user runs them: output,
exit codes and one-line error messages."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tests.data.test_portraits import make_folder

ROOT = Path(__file__).resolve().parents[2]


def script_app(name: str) -> typer.Typer:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    app = typer.Typer()
    app.command()(module.main)
    return app


@pytest.fixture(scope="module")
def run():
    runner = CliRunner()

    def invoke(name: str, *args: str):
        return runner.invoke(script_app(name), list(args), catch_exceptions=False)

    return invoke


def test_prepare_faces_prints_counts_per_source(run, tmp_path):
    root = make_folder(tmp_path / "photos")
    out = tmp_path / "aligned"
    result = run("prepare_faces", str(root), "-o", str(out), "--size", "32", "-q", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["aligned"] == 2 and report["skipped"] == 1
    assert report["counts"]["web"] == {"aligned": 1, "skipped": 1}
    again = run("prepare_faces", str(root), "-o", str(out), "--size", "32", "-q")
    assert again.exit_code == 0
    assert "2 aligned, 1 skipped (3 rows from an earlier run)" in again.stdout


def test_prepare_faces_refuses_an_output_inside_the_repository(run, tmp_path):
    root = make_folder(tmp_path / "photos")
    result = run("prepare_faces", str(root), "-o", str(ROOT / "aligned-here"), "-q")
    assert result.exit_code == 1
    assert "is inside the repository; the aligned photos must stay out of it" in result.stderr
    assert "Traceback" not in result.output
    assert not (ROOT / "aligned-here").exists()


def test_prepare_faces_missing_folder(run, tmp_path):
    result = run("prepare_faces", str(tmp_path / "none"), "-o", str(tmp_path / "out"), "-q")
    assert result.exit_code == 1
    assert "does not exist; give the folder that holds the photos" in result.stderr


def test_fit_heads_without_a_dataset(run, tmp_path):
    result = run("fit_heads", str(tmp_path), "-o", str(tmp_path / "heads"), "-q")
    assert result.exit_code == 1
    assert "holds no finished aligned portraits; run `python scripts/prepare_faces.py` first" in result.stderr
    assert "Traceback" not in result.output


def test_fit_heads_on_too_few_labels(run, tmp_path):
    """Two faces of one source: no head has both classes -> one clear message (this
    runs the identity net on the two crops and their glasses twins)."""
    root = make_folder(tmp_path / "photos")
    out = tmp_path / "aligned"
    assert run("prepare_faces", str(root), "-o", str(out), "--size", "64", "-q").exit_code == 0
    result = run("fit_heads", str(out), "-o", str(tmp_path / "heads"), "-q")
    assert result.exit_code == 1
    assert "has no labels of both classes for Eyeglasses, Smiling, Male, Young" in result.stderr


def test_glasses_job_without_a_dataset(run, tmp_path):
    result = run("glasses_job", str(tmp_path))
    assert result.exit_code == 1 and "holds no finished aligned portraits" in result.stderr
    assert "Traceback" not in result.output

