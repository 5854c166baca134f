"""A checkpoint laid out as DVA's released one (every name and shape of
../shared/reference/dva_state_dict.tsv, random weights), imported and run with both
DDIM samplers: the set records DVA's sampler and identity rule, a run on it takes them,
and encode -> decode works with each sampler (docs/sampler.md)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from s3edit.model import ddim
from s3edit.model.config import dva_256
from s3edit.model.dva import build_dva
from s3edit.pipeline.options import IdentityRule, Sampler, run_options
from s3edit.weights.importer import ALIAS_PREFIX, ALIAS_TARGET, import_dva
from s3edit.weights.weightset import CONFIG_FILE, DVA_RULES

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]


@pytest.fixture(scope="module")
def imported(dva_reference_table, tmp_path_factory):
    """DVA-256 with random weights (the zero-initialised layers too, so eps depends on
    x_t, t and z_face) saved under the table's names as a Lightning checkpoint (the
    ``model.`` copy all zeros, the ``ema_model.`` copy the network), then imported."""
    torch.manual_seed(0)
    model = build_dva(dva_256()).eval()
    for p in model.parameters():
        if not p.detach().any():
            torch.nn.init.normal_(p, std=0.02)
    state = model.state_dict()
    ema = {}
    for name, shape in dva_reference_table.items():
        ours = ALIAS_TARGET + name[len(ALIAS_PREFIX):] if name.startswith(ALIAS_PREFIX) else name
        assert tuple(state[ours].shape) == shape, name
        ema[name] = state[ours]
    ckpt_state = {f"ema_model.{k}": v for k, v in ema.items()}
    ckpt_state.update({f"model.{k}": torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in ema.items()})
    folder = tmp_path_factory.mktemp("dva-layout")
    torch.save({"epoch": 51, "global_step": 1_000_000, "state_dict": ckpt_state}, folder / "dva.ckpt")
    del model, state, ema, ckpt_state
    report = import_dva(folder / "dva.ckpt", folder / "dva", dtype=torch.float16)
    assert report.ok and report.copy == "ema_model"
    (folder / "dva.ckpt").unlink()
    return folder / "dva"


def test_an_imported_set_records_and_runs_dvas_rules(imported):
    config = json.loads((imported / CONFIG_FILE).read_text())
    assert {k: config[k] for k in DVA_RULES} == DVA_RULES
    run = run_options(imported, steps=20, device="cpu")
    assert run.sampler is Sampler.dva and run.identity is IdentityRule.mean
    assert run_options(run.weights, steps=20, device="cpu", sampler="s3edit").sampler is Sampler.s3edit


def test_the_imported_network_encodes_and_decodes_with_both_samplers(imported):
    """z_face from the set's own identity and landmark nets on a 256 px crop; the UNet,
    fully convolutional, runs on the crop at 64 px (1/16 of the cost on a CPU).

    Round trip at S = 1, for any network: s3edit's encode step and decode step (both at
    t = 0, between alpha_bar = 1 and alpha_bar[0]) undo each other up to eps's change
    over that step; DVA's encoder takes no step (x_T = x0) and its decoder returns the
    clipped x0 predicted from x0 taken at alpha_bar[0]: (x0 - sqrt(1 - a0) eps) / sqrt(a0),
    about 0.01 eps from x0."""
    run = run_options(imported, steps=2, device="cpu")
    model = run.weights.model
    g = torch.Generator().manual_seed(1)
    crop = (F.interpolate(torch.rand(2, 3, 8, 8, generator=g), size=256, mode="bicubic", align_corners=False)
            * 2 - 1).clamp(-1, 1)
    with torch.no_grad():
        z_face = model.fuse(model.z_id(crop), model.z_lnd(crop))
    x0 = F.interpolate(crop, size=64, mode="area")
    assert z_face.shape == (2, 512) and torch.isfinite(z_face).all()
    x_T, out = {}, {}
    for sampler in ("s3edit", "dva"):
        x_T[sampler] = ddim.ddim_encode(model, x0, z_face, 2, sampler=sampler)
        out[sampler] = ddim.ddim_decode(model, x_T[sampler], z_face, 2, sampler=sampler)
        assert x_T[sampler].shape == out[sampler].shape == (2, 3, 64, 64)
        assert torch.isfinite(x_T[sampler]).all() and torch.isfinite(out[sampler]).all()
    assert (x_T["s3edit"] - x_T["dva"]).abs().max() > 1e-3
    assert out["dva"].abs().max() <= 1  # DVA's decode ends on a clipped x0
    # the round trip at S = 1 (docstring)
    a0 = ddim.decode_scheduler(1).alphas_cumprod[0].double()
    with torch.no_grad():
        eps0 = model(x0, torch.zeros(2, dtype=torch.long), z_face).double()
    s3 = ddim.ddim_decode(model, ddim.ddim_encode(model, x0, z_face, 1), z_face, 1)
    assert (s3 - x0).abs().max() < 1e-3
    assert torch.equal(ddim.ddim_encode(model, x0, z_face, 1, sampler="dva"), x0)
    dva = ddim.ddim_decode(model, x0, z_face, 1, sampler="dva")
    expected = ((x0.double() - (1 - a0).sqrt() * eps0) / a0.sqrt()).clamp(-1, 1)
    torch.testing.assert_close(dva.double(), expected, rtol=0, atol=1e-5)
    assert (dva - x0).abs().max() > 10 * (s3 - x0).abs().max()
