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


def test_os_errors_name_the_file(cli, failing_app, monkeypatch):
    monkeypatch.delenv(app_module.DEBUG_ENV, raising=False)
    failing_app["exc"] = PermissionError(13, "Permission denied", "/root/out.mp4")
    result = cli("boom-test")
    assert result.exit_code == 1 and result.stderr == "error: Permission denied: /root/out.mp4\n"


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
