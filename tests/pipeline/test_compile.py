"""--compile: the UNet's eps call through torch.compile decodes what eager decodes, a
compiler that fails falls back to eager with one note, and auto is off on the CPU. The
CPU twins of the GPU path: dynamo with the "eager" backend (no code generation)."""

import pytest
import torch

from s3edit.model import ddim
from s3edit.pipeline.compiled import EagerFallback, compile_eps, uncompile_eps
from s3edit.pipeline.options import pick_compile, run_options

CPU = torch.device("cpu")
STEPS = 3


def _decode(model, size, face_dim, batch=2):
    torch.manual_seed(0)
    x_T = torch.randn(batch, 3, size, size)
    cond = torch.randn(batch, face_dim)
    with torch.no_grad():
        return ddim.ddim_decode(model, x_T, cond, STEPS, "fp32")


def test_auto_is_off_on_the_cpu_and_on_cuda():
    assert pick_compile("auto", CPU) is False
    assert pick_compile("auto", torch.device("cuda")) is False
    assert pick_compile("on", CPU) is True
    assert pick_compile("off", torch.device("cuda")) is False


def test_run_options_leaves_the_cpu_eager_by_default(small_weights):
    run = run_options(small_weights, steps=STEPS, device="cpu")
    assert run.compiled is False
    assert "forward" not in run.weights.model.__dict__


def test_a_compiled_decode_matches_eager(small_weights, capsys):
    torch._dynamo.reset()
    run = run_options(small_weights, steps=STEPS, device="cpu", precision="fp32", compile="on",
                      compile_backend="eager")
    assert run.compiled and "compile: torch.compile (eager)" in capsys.readouterr().err
    model = run.weights.model
    wrapper = model.__dict__["forward"]
    assert isinstance(wrapper, EagerFallback)
    args = (model, run.weights.size, model.config.face_dim)
    compiled = torch.cat([_decode(*args, batch=2), _decode(*args, batch=1)])  # a second shape recompiles
    assert wrapper.failed is None
    uncompile_eps(model)
    assert "forward" not in model.__dict__
    eager = torch.cat([_decode(*args, batch=2), _decode(*args, batch=1)])
    torch.testing.assert_close(compiled, eager, atol=1e-6, rtol=0)
    # z_id, fuse and the other encoder methods are untouched: only the eps call is compiled
    assert model.fuse.__func__ is type(model).fuse


def test_a_compiler_that_fails_falls_back_to_eager_once_with_a_note(small_weights, capsys):
    torch._dynamo.reset()
    calls = []

    def broken_backend(gm, example_inputs):
        calls.append(1)
        raise RuntimeError("no C compiler here")

    run = run_options(small_weights, steps=STEPS, device="cpu", precision="fp32")
    model = run.weights.model
    args = (model, run.weights.size, model.config.face_dim)
    eager = _decode(*args)
    wrapper = compile_eps(model, CPU, backend=broken_backend)
    capsys.readouterr()
    fallen = _decode(*args)
    err = capsys.readouterr().err
    assert wrapper.failed is not None and calls == [1]  # tried once, then eager for good
    assert err.count("running eager instead") == 1 and "no C compiler here" in err
    torch.testing.assert_close(fallen, eager, atol=0, rtol=0)
    assert compile_eps(model, CPU) is wrapper  # compiling twice keeps the first


def test_an_error_of_the_call_itself_is_raised_not_hidden(small_weights):
    torch._dynamo.reset()
    run = run_options(small_weights, steps=STEPS, device="cpu", precision="fp32", compile="on",
                      compile_backend="eager")
    model = run.weights.model
    wrong = torch.randn(2, 3, run.weights.size + 1, run.weights.size)  # not the model's crop size
    with pytest.raises(Exception) as info:
        model(wrong, torch.zeros(2, dtype=torch.long), torch.randn(2, model.config.face_dim))
    assert "torch._dynamo" not in type(info.value).__module__
    assert model.__dict__["forward"].failed is None
    uncompile_eps(model)
