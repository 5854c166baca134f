"""The application shell: every command's help shows an example, and the one error
boundary turns known errors into one line with a nonzero exit."""

from __future__ import annotations

import pytest
import typer

from s3edit.cli import app as app_module
from s3edit.errors import InputError

COMMANDS = [["align"], ["encode"], ["tune"], ["edit"], ["paste"], ["score"],
            ["weights", "list"], ["weights", "import"], ["weights", "verify"], ["weights", "download"]]


def test_top_level_help_and_version(cli):
    result = cli("--help")
    assert result.exit_code == 0 and "Example: s3edit edit" in result.stdout
    for name in ("align", "encode", "tune", "edit", "paste", "score", "weights"):
        assert name in result.stdout
    version = cli("--version")
    assert version.exit_code == 0 and version.stdout.startswith("s3edit ")


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_shows_an_example(cli, command):
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.stderr
    assert "Example" in result.stdout and "s3edit " in result.stdout


@pytest.fixture
def failing_app(monkeypatch):
    """The real app with one extra command that raises what the test hands it."""
    box = {}

    def boom() -> None:
        raise box["exc"]

    app_module.app.command("boom-test", hidden=True)(boom)
    yield box
    app_module.app.registered_commands.pop()


def test_user_errors_are_one_line_with_exit_1(cli, failing_app, monkeypatch):
    monkeypatch.delenv(app_module.DEBUG_ENV, raising=False)
    failing_app["exc"] = InputError("input 'x.mp4' does not exist.")
    result = cli("boom-test")
    assert result.exit_code == 1
    assert result.stderr == "error: input 'x.mp4' does not exist.\n"


@pytest.mark.parametrize("exc, message", [
    (PermissionError(13, "Permission denied", "/nonexistent/out.mp4"),
     "cannot write '/nonexistent/out.mp4': permission denied; choose a path you can write, or change its "
     "permissions."),
    (OSError(30, "Read-only file system", "ro/job"),
     "cannot write 'ro/job': the file system is read-only; choose a folder on a writable disk."),
    (OSError(28, "No space left on device", "out.mp4"),
     "cannot write 'out.mp4': no space left on the device; free some space or choose a folder on another "
     "disk, then rerun."),
    (OSError(28, "No space left on device"),
     "no space left on the device; free some space or choose a folder on another disk, then rerun."),
    (OSError(28, "No space left on device", "out/.tmp-clip_x-k3v9a_2q.mp4"),  # FFmpeg names the temporary file
     "cannot write 'out/clip_x.mp4': no space left on the device; free some space or choose a folder on "
     "another disk, then rerun."),
    (FileNotFoundError(2, "No such file or directory", "a/b.mp4"), "'a/b.mp4' does not exist; check the path."),
    (OSError(5, "Input/output error", "clip.mp4"),
     "cannot use 'clip.mp4': input/output error; the disk or network share may be failing; check it and rerun."),
    (OSError("could not write x.png"),
     "could not write x.png; check that the folder can be written and its disk has space, then rerun."),
], ids=["permission", "read-only", "full", "full-unnamed", "full-temporary", "missing", "io", "no-errno"])
def test_os_errors_say_which_path_and_what_to_do(cli, failing_app, monkeypatch, exc, message):
    monkeypatch.delenv(app_module.DEBUG_ENV, raising=False)
    failing_app["exc"] = exc
    result = cli("boom-test")
    assert result.exit_code == 1 and result.stderr == f"error: {message}\n"


def test_bugs_say_how_to_get_the_traceback(cli, failing_app, monkeypatch):
    monkeypatch.delenv(app_module.DEBUG_ENV, raising=False)
    failing_app["exc"] = KeyError("oops")
    result = cli("boom-test")
    assert result.exit_code == app_module.INTERNAL_ERROR_EXIT
    assert "internal error (KeyError" in result.stderr and "S3EDIT_DEBUG=1" in result.stderr
    assert "Traceback" not in result.stderr


def test_debug_variable_lets_the_exception_through(cli, failing_app, monkeypatch):
    monkeypatch.setenv(app_module.DEBUG_ENV, "1")
    failing_app["exc"] = InputError("shown with its traceback")
    with pytest.raises(InputError):
        cli("boom-test")


def test_exit_and_usage_errors_pass_through(cli, failing_app):
    failing_app["exc"] = typer.Exit(0)
    assert cli("boom-test").exit_code == 0
    assert cli("align").exit_code == 2  # click's usage error: missing argument


def test_ctrl_c_says_how_to_continue(cli, failing_app, monkeypatch):
    monkeypatch.delenv(app_module.DEBUG_ENV, raising=False)
    failing_app["exc"] = KeyboardInterrupt()
    result = cli("boom-test")
    assert result.exit_code == 130
    assert result.stderr == f"\n{app_module.INTERRUPTED}\n" and "Traceback" not in result.stderr
