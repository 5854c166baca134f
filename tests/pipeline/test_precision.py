"""--precision auto follows the hardware: bf16 (channels_last) on CUDA and on CPUs with
native bf16 matrix instructions, fp32 on other CPUs; the choice is printed."""

import pytest
import torch

from s3edit import console
from s3edit.errors import InputError
from s3edit.model import ddim
from s3edit.pipeline.options import (cpu_bf16_flags, describe_precision, pick_precision, prepare_model,
                                     run_options)

CPU = torch.device("cpu")
AMX = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


@pytest.fixture
def cpuinfo(tmp_path):
    def make(text):
        path = tmp_path / "cpuinfo"
        path.write_text(text)
        return path
    return make


def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(cpuinfo):
    assert cpu_bf16_flags(cpuinfo(AMX)) == ["amx_bf16", "avx512_bf16"]
    assert pick_precision("auto", CPU, cpuinfo(AMX)) == "bf16"
    assert cpu_bf16_flags(cpuinfo(AVX2)) == []
    assert pick_precision("auto", CPU, cpuinfo(AVX2)) == "fp32"
    assert pick_precision("auto", CPU, cpuinfo(AVX2).parent / "absent") == "fp32"
    # CUDA: fp32 (TF32 convolutions) made more passes per second than bf16 autocast
    assert pick_precision("auto", torch.device("cuda"), cpuinfo(AVX2)) == "fp32"
    assert pick_precision("auto", torch.device("cuda"), cpuinfo(AMX)) == "fp32"


def test_an_explicit_precision_wins_and_fp16_needs_cuda(cpuinfo):
    assert pick_precision("fp32", CPU, cpuinfo(AMX)) == "fp32"
    assert pick_precision("bf16", CPU, cpuinfo(AVX2)) == "bf16"
    with pytest.raises(InputError, match="fp16 needs a CUDA GPU"):
        pick_precision("fp16", CPU)


def test_the_choice_is_described_with_its_reason(cpuinfo):
    assert "amx_bf16" in describe_precision("bf16", CPU, cpuinfo(AMX))
    assert "channels_last" in describe_precision("bf16", CPU, cpuinfo(AMX))
    assert "no native bf16" in describe_precision("fp32", CPU, cpuinfo(AVX2))


def test_bf16_runs_channels_last_and_its_decode_matches_fp32(small_weights, capsys, monkeypatch):
    """The bf16 path (channels_last weights and samples, fp32 DDIM updates) decodes
    what the fp32 path decodes, to bf16's rounding."""
    monkeypatch.setitem(console._state, "quiet", False)  # an earlier test's -q must not hide notes
    run = run_options(small_weights, steps=4, device="cpu", precision="bf16")
    assert "bf16 autocast, channels_last" in capsys.readouterr().err
    model = run.weights.model
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs
                         if c.weight.shape[-1] > 1)
    torch.manual_seed(0)
    x_T = torch.randn(2, 3, run.weights.size, run.weights.size)
    cond = torch.randn(2, model.config.face_dim)
    low = ddim.ddim_decode(model, x_T, cond, 4, "bf16")
    assert prepare_model(model, "fp32") is model  # fp32 leaves the format as it is
    ref = ddim.ddim_decode(model.to(memory_format=torch.contiguous_format), x_T, cond, 4, "fp32")
    assert low.dtype == torch.float32
    assert (low - ref).norm() / ref.norm() < 2e-2
