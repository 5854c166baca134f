"""CPU threads: the CPUs this process may use, less the machine's load, shared among
torchrun's local processes, at least 1; OMP_NUM_THREADS or --threads wins."""

import pytest
import torch

from s3edit.errors import InputError
from s3edit.pipeline import options
from s3edit.pipeline.options import apply_threads, auto_threads, set_threads


def test_free_cpus_less_the_load():
    assert auto_threads(cpus=16, load=0.2, world_size=1, env={})[0] == 16
    assert auto_threads(cpus=16, load=5.6, world_size=1, env={})[0] == 10  # load rounded
    assert auto_threads(cpus=2, load=1.96, world_size=1, env={})[0] == 1
    assert auto_threads(cpus=2, load=7.0, world_size=1, env={})[0] == 1  # at least one
    assert "load 5.6" in auto_threads(cpus=16, load=5.6, world_size=1, env={})[1]


def test_torchrun_processes_share_the_cpus():
    assert auto_threads(cpus=16, load=0.0, world_size=4, env={})[0] == 4
    assert auto_threads(cpus=16, load=0.0, world_size=None, env={"LOCAL_WORLD_SIZE": "8"})[0] == 2
    assert auto_threads(cpus=4, load=2.0, world_size=8, env={})[0] == 1


def test_omp_num_threads_wins():
    assert auto_threads(cpus=16, load=12.0, world_size=4, env={"OMP_NUM_THREADS": "6"}) == (6, "OMP_NUM_THREADS=6")
    assert auto_threads(cpus=16, load=0.0, world_size=1, env={"OMP_NUM_THREADS": "junk"})[0] == 16


def test_this_machine_is_read_when_not_given(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(options.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    monkeypatch.setattr(options, "machine_load", lambda: 2.4)
    assert auto_threads() == (4, "6 CPUs, load 2.4")


def test_the_load_of_this_process_itself_does_not_count(monkeypatch, tmp_path):
    """A busy minute of this process's own earlier work is in the load average, but not
    among the tasks runnable now beside it."""
    real = options.Path

    def fake_loadavg(text):
        monkeypatch.setattr(options, "Path", lambda p: tmp_path / "loadavg" if p == "/proc/loadavg" else real(p))
        (tmp_path / "loadavg").write_text(text)

    fake_loadavg("1.93 1.20 0.80 1/230 4242\n")  # only this process runs
    assert options.machine_load() == 0
    fake_loadavg("1.93 1.20 0.80 3/230 4242\n")  # two others run beside it
    assert options.machine_load() == 1.93


def test_a_momentary_blip_in_the_runnable_count_does_not_count(monkeypatch):
    """A task runnable in one read only (a short-lived command) is not load; one runnable
    in every read is."""
    reads = iter(["0.10 0.1 0.1 3/230 1\n", "0.10 0.1 0.1 1/230 1\n", "0.10 0.1 0.1 2/230 1\n"])

    class FakePath:
        def __init__(self, path):
            assert path == "/proc/loadavg"

        def read_text(self):
            return next(reads)

    monkeypatch.setattr(options, "Path", FakePath)
    assert options.machine_load(samples=3, interval_s=0) == 0
    steady = iter(["1.50 1 1 2/230 1\n"] * 3)
    monkeypatch.setattr(FakePath, "read_text", lambda self: next(steady))
    assert options.machine_load(samples=3, interval_s=0) == 1


@pytest.fixture
def fresh_threads(monkeypatch):
    """apply_threads as at a process's start; torch's thread count restored after."""
    before = torch.get_num_threads()
    monkeypatch.setitem(options._threads, "asked", None)
    monkeypatch.setitem(options._threads, "applied", None)
    monkeypatch.setitem(options._threads, "why", "")
    yield
    torch.set_num_threads(before)


def test_threads_option_wins_and_is_applied_once(fresh_threads, monkeypatch, capsys):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    set_threads(1)
    assert apply_threads() == 1 and torch.get_num_threads() == 1
    assert options.describe_threads() == "threads: 1 (--threads)"
    set_threads(2)
    assert apply_threads() == 1  # once per process
    with pytest.raises(InputError, match="at least 1"):
        set_threads(0)


def test_automatic_threads_are_applied_and_noted_after_the_weights_load(fresh_threads, monkeypatch, capsys,
                                                                        small_weights):
    monkeypatch.setattr(options, "auto_threads", lambda: (1, "2 CPUs, load 1.0"))
    monkeypatch.setitem(options.console._state, "quiet", False)  # an earlier test's -q must not hide notes
    options.run_options(small_weights, steps=2, device="cpu")
    assert torch.get_num_threads() == 1
    err = capsys.readouterr().err
    assert "threads: 1 (2 CPUs, load 1.0)" in err and err.index("precision:") < err.index("threads:")
    with pytest.raises(Exception, match="weight"):  # a user's mistake is the only line printed
        options.run_options(small_weights.parent / "no-such-set", steps=2, device="cpu")
    assert "threads:" not in capsys.readouterr().err


def test_the_root_option_is_kept_for_a_model_stage_not_applied_for_help(fresh_threads):
    from typer.testing import CliRunner

    from s3edit.cli.app import app

    result = CliRunner().invoke(app, ["--threads", "1", "encode", "--help"])
    assert result.exit_code == 0 and "--compile" in result.output
    assert options._threads == {"asked": 1, "applied": None, "why": ""}
