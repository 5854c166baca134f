"""DDIM encode/decode over the real (small) UNet: schedule facts, per-step inversion,
round trips, batch invariance, precision options."""

from __future__ import annotations

import pytest
import torch

from s3edit.model import ddim
from s3edit.model.config import UNetConfig
from s3edit.model.unet import UNet

# A UNet of DVA's architecture small enough for hundreds of passes in a test.
MICRO = UNetConfig(
    image_size=16, model_channels=16, channel_mult=(1, 2), num_res_blocks=1,
    attention_resolutions=(8,), embed_channels=32, cond_channels=16, norm_groups=8, dropout=0.0,
)
DATA_VAR = 0.25  # variance of the Gaussian "data" the oracle denoiser is exact for


def random_unet(seed: int = 0, dtype=torch.float32) -> UNet:
    """The UNet with every zero-initialised layer given random weights, so its output
    depends on x_t, t and cond (a fresh DVA UNet predicts eps = 0 everywhere)."""
    torch.manual_seed(seed)
    model = UNet(MICRO).eval()
    for p in model.parameters():
        if not p.detach().any():
            torch.nn.init.normal_(p, std=0.05)
    return model.to(dtype)


def oracle_plus(unet: UNet, weight: float = 0.05):
    """eps = the exact denoiser of N(0, DATA_VAR) data + weight * UNet: a model whose
    DDIM trajectories are smooth like a trained model's, with the UNet's dependence on
    (x_t, t, cond) on top. Adapter over the one contract eps_model(x_t, t, cond)."""
    alphas = ddim.decode_scheduler(1).alphas_cumprod.double()

    def eps_model(x, t, cond):
        a = alphas[t].to(x.dtype)[:, None, None, None]
        exact = (1 - a).sqrt() * x / (a * DATA_VAR + 1 - a)
        return exact + weight * unet(x, t, cond)

    return eps_model


def frames(n: int, dtype=torch.float32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x0 = (torch.randn(n, 3, 16, 16, generator=g) * DATA_VAR**0.5).clamp(-1, 1)
    cond = torch.randn(n, MICRO.cond_channels, generator=g)
    return x0.to(dtype), cond.to(dtype)


def test_schedule_is_dvas():
    sched = ddim.decode_scheduler(100)
    assert sched.timesteps.tolist() == list(range(990, -1, -10))  # DiffAE's "ddim100"
    betas = sched.betas.double()
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    assert len(betas) == 1000
    assert ddim.encode_scheduler(4).timesteps.tolist() == [0, 250, 500, 750]


@pytest.mark.parametrize("steps", [1, 7, 100])
def test_inverse_and_forward_steps_invert_each_other(steps):
    fwd, inv = ddim.decode_scheduler(steps), ddim.encode_scheduler(steps)
    g = torch.Generator().manual_seed(0)
    for t in fwd.timesteps.tolist():
        x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
        eps = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
        back = inv.step(eps, t, fwd.step(eps, t, x).prev_sample).prev_sample
        torch.testing.assert_close(back, x, rtol=0, atol=1e-9)


def test_decode_is_the_exact_inverse_of_encode_for_a_constant_eps():
    """With eps independent of x and t the DDIM inversion has no approximation: the
    round trip is exact, and x_T = sqrt(a_T) x0 + sqrt(1 - a_T) eps."""
    eps0 = torch.randn(1, 3, 8, 8, dtype=torch.float64)

    def constant(x, t, cond):
        return eps0.expand_as(x)

    x0 = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 2 - 1
    cond = torch.zeros(2, 1, dtype=torch.float64)
    x_T = ddim.ddim_encode(constant, x0, cond, steps=50)
    a_T = ddim.decode_scheduler(50).alphas_cumprod[980].double()
    # (diffusers keeps alphas_cumprod in float32, hence 1e-6 and not 1e-12)
    torch.testing.assert_close(x_T, a_T.sqrt() * x0 + (1 - a_T).sqrt() * eps0, rtol=0, atol=1e-6)
    torch.testing.assert_close(ddim.ddim_decode(constant, x_T, cond, 50), x0, rtol=0, atol=1e-6)


def test_round_trip_converges_with_steps_fp64():
    model = oracle_plus(random_unet(dtype=torch.float64))
    x0, cond = frames(1, torch.float64)
    errors = {}
    for steps in (10, 40, 160):
        x_T = ddim.ddim_encode(model, x0, cond, steps)
        errors[steps] = (ddim.ddim_decode(model, x_T, cond, steps) - x0).abs().max().item()
        assert x_T.std().item() > 0.5  # x_T is noise-like, not a scaled image
    assert errors[10] > 2 * errors[40] > 4 * errors[160]  # first order in the step size
    assert errors[160] < 0.025, errors  # measured 0.020


def test_round_trip_fp32_matches_fp64():
    unet = random_unet()
    x0, cond = frames(2)
    model32 = oracle_plus(unet)
    model64 = oracle_plus(random_unet(dtype=torch.float64))
    x_T32 = ddim.ddim_encode(model32, x0, cond, 50)
    x_T64 = ddim.ddim_encode(model64, x0.double(), cond.double(), 50)
    torch.testing.assert_close(x_T32.double(), x_T64, rtol=0, atol=1e-3)
    rec32 = ddim.ddim_decode(model32, x_T32, cond, 50)
    rec64 = ddim.ddim_decode(model64, x_T64, cond.double(), 50)
    torch.testing.assert_close(rec32.double(), rec64, rtol=0, atol=1e-3)


def test_batch_size_does_not_change_results():
    unet = random_unet()
    x0, cond = frames(4)
    t = torch.tensor([0, 10, 500, 990])
    with torch.no_grad():
        singles = torch.cat([unet(x0[i:i + 1], t[i:i + 1], cond[i:i + 1]) for i in range(4)])
        torch.testing.assert_close(singles, unet(x0, t, cond), rtol=0, atol=1e-5)
    model = oracle_plus(unet)
    x_T = ddim.ddim_encode(model, x0, cond, 20)
    singles = torch.cat([ddim.ddim_encode(model, x0[i:i + 1], cond[i:i + 1], 20) for i in range(4)])
    torch.testing.assert_close(singles, x_T, rtol=0, atol=1e-5)
    out = ddim.ddim_decode(model, x_T, cond, 20)
    singles = torch.cat([ddim.ddim_decode(model, x_T[i:i + 1], cond[i:i + 1], 20) for i in range(4)])
    torch.testing.assert_close(singles, out, rtol=0, atol=1e-5)


def test_condition_matters_and_callback_counts_steps():
    model = oracle_plus(random_unet(), weight=1.0)
    x0, cond = frames(1)
    calls = []
    x_T = ddim.ddim_encode(model, x0, cond, 8, callback=calls.append)
    a = ddim.ddim_decode(model, x_T, cond, 8, callback=calls.append)
    b = ddim.ddim_decode(model, x_T, cond + 1, 8)
    assert sum(calls) == 16
    assert (a - b).abs().max() > 1e-3


def test_bf16_autocast_runs_and_stays_close():
    model = oracle_plus(random_unet())
    x0, cond = frames(2)
    ref = ddim.ddim_encode(model, x0, cond, 10)
    low = ddim.ddim_encode(model, x0, cond, 10, precision="bf16")
    assert low.dtype == torch.float32
    assert (low - ref).abs().max() < 0.05


def test_fixed_point_corrections_converge_to_the_exact_inverse_fp64():
    """Each correction re-evaluates eps where the decoder will (the implicit DDIM step):
    the round-trip error shrinks with every correction and vanishes in the limit."""
    model = oracle_plus(random_unet(dtype=torch.float64))
    x0, cond = frames(2, torch.float64)
    errors = {}
    for k in (0, 1, 2, 3, 20):
        calls = []
        x_T = ddim.ddim_encode(model, x0, cond, 10, callback=calls.append, fixed_point=k)
        assert sum(calls) == ddim.encode_passes(10, "s3edit", k) == 10 * (1 + k)
        errors[k] = (ddim.ddim_decode(model, x_T, cond, 10) - x0).abs().max().item()
    assert errors[0] > 2 * errors[1] > 4 * errors[2] > 8 * errors[3], errors  # measured 0.32, 0.13, 0.049, 0.020
    assert errors[20] < 1e-5, errors  # measured 4.7e-7
    # zero corrections is the plain encoder
    torch.testing.assert_close(ddim.ddim_encode(model, x0, cond, 10, fixed_point=0),
                               ddim.ddim_encode(model, x0, cond, 10), rtol=0, atol=0)


def test_fixed_point_is_refused_for_dvas_sampler_and_below_zero():
    model = oracle_plus(random_unet())
    x0, cond = frames(1)
    with pytest.raises(ValueError, match="DVA's sampler encodes as DVA does"):
        ddim.ddim_encode(model, x0, cond, 10, sampler="dva", fixed_point=1)
    with pytest.raises(ValueError, match="0 or more"):
        ddim.ddim_encode(model, x0, cond, 10, fixed_point=-1)
    assert ddim.encode_passes(10, "dva", 0) == 9


def test_steps_out_of_range_is_refused():
    with pytest.raises(ValueError, match="1..1000"):
        ddim.decode_scheduler(0)


# --- an edit confined to a region --------------------------------------------------------


def test_straight_path_runs_from_x0_to_x_T():
    x0, x_T = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    a_T = torch.tensor(0.01)
    torch.testing.assert_close(ddim.straight_path(x0, x_T, a_T, a_T), x_T)
    torch.testing.assert_close(ddim.straight_path(x0, x_T, a_T, 1.0), x0)
    mid = ddim.straight_path(x0, x_T, a_T, 0.5)  # sqrt(a) x0 + sqrt(1 - a) eps_T, written out
    eps_T = (x_T - 0.1 * x0) / 0.99 ** 0.5
    torch.testing.assert_close(mid, 0.5 ** 0.5 * x0 + 0.5 ** 0.5 * eps_T)


def test_decode_in_region_keeps_x0_outside_and_edits_inside():
    eps_model = oracle_plus(random_unet())
    x0, plain = frames(2)
    edited = plain + 2.0
    x_T = ddim.ddim_encode(eps_model, x0, plain, 8)
    whole = ddim.ddim_decode(eps_model, x_T, edited, 8)
    region = torch.zeros(2, 1, 16, 16)
    region[..., 4:10, 3:13] = 1.0
    calls = []
    out = ddim.ddim_decode_in_region(eps_model, x_T, x0, edited, region, 8, callback=calls.append)
    assert calls == [1] * 8 and ddim.region_passes(8) == 8
    outside = region.expand_as(out) == 0
    assert torch.equal(out[outside], x0[outside])  # the original, exactly
    inside = (out - x0).abs()[~outside].mean()
    assert inside > 0.02
    assert (out - whole).abs()[~outside].mean() < (x0 - whole).abs()[~outside].mean()
    # the two ends: a full region is the edited decode, an empty one the frame itself
    ones = ddim.ddim_decode_in_region(eps_model, x_T, x0, edited, torch.ones_like(region), 8)
    zeros = ddim.ddim_decode_in_region(eps_model, x_T, x0, edited, torch.zeros_like(region), 8)
    torch.testing.assert_close(ones, whole, rtol=0, atol=1e-5)
    assert torch.equal(zeros, x0)


def test_decode_in_region_starts_on_the_path_below_edit_start():
    eps_model = oracle_plus(random_unet())
    x0, plain = frames(2)
    edited = plain + 2.0
    x_T = ddim.ddim_encode(eps_model, x0, plain, 8)
    ones = torch.ones(2, 1, 16, 16)
    scheduler = ddim.decode_scheduler(8)  # 875, 750, 625, 500, 375, ...: the edit decodes from 375
    a = scheduler.alphas_cumprod
    expected = ddim.straight_path(x0, x_T, a[875], a[375])
    for t in [t for t in scheduler.timesteps.tolist() if t < 500]:
        eps = eps_model(expected, torch.full((2,), t), edited)
        expected = scheduler.step(eps, t, expected, eta=0.0).prev_sample
    calls = []
    out = ddim.ddim_decode_in_region(eps_model, x_T, x0, edited, ones, 8, edit_start=500, callback=calls.append)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert len(calls) == ddim.region_passes(8, 500) == 4  # no pass above edit_start
    never = ddim.ddim_decode_in_region(eps_model, x_T, x0, edited, ones, 8, edit_start=0)
    assert torch.equal(never, x0)


# --- DVA's sampler -----------------------------------------------------------------------
# The reference below is DDIM (Song et al. 2021, Eq. 12 with sigma = 0) written out here
# in float64 on a schedule built here, in the form DVA's GaussianDiffusionBeatGans uses:
# x0 = sqrt(1/a) x - sqrt(1/a - 1) eps, clipped; eps re-derived from the clipped x0.

REF_ALPHAS = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)


def ref_step(x, eps, a, a_to, clip):
    """DDIM from noise level a to a_to (either direction), eps evaluated at x."""
    a, a_to = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(a_to, dtype=torch.float64)
    x0 = (1 / a).sqrt() * x - (1 / a - 1).sqrt() * eps
    if clip:
        x0 = x0.clamp(-1, 1)
    eps = ((1 / a).sqrt() * x - x0) / (1 / a - 1).sqrt()
    return x0 * a_to.sqrt() + (1 - a_to).sqrt() * eps


def ref_dva_encode(model, x0, cond, steps, clip=True):
    """DVA's encoder: from alpha_bar[0], S - 1 steps at t = 0, Δ, ..., T - 2Δ."""
    delta, x, seen = 1000 // steps, x0, []
    for t in range(0, 1000 - delta, delta):
        seen.append(t)
        x = ref_step(x, model(x, torch.full((len(x),), t), cond), REF_ALPHAS[t], REF_ALPHAS[t + delta], clip)
    return x, seen


def ref_dva_decode(model, x_T, cond, steps, clip=True):
    """DVA's decoder: t = T - Δ, ..., 0, each from alpha_bar[t] to alpha_bar[t - Δ] (1 below 0)."""
    delta, x, seen = 1000 // steps, x_T, []
    for t in range(1000 - delta, -1, -delta):
        seen.append(t)
        a_to = REF_ALPHAS[t - delta] if t >= delta else torch.tensor(1.0, dtype=torch.float64)
        x = ref_step(x, model(x, torch.full((len(x),), t), cond), REF_ALPHAS[t], a_to, clip)
    return x, seen


def recording(model):
    """``model`` that also records the timestep of each call."""
    seen = []

    def eps_model(x, t, cond):
        seen.append(int(t[0]))
        return model(x, t, cond)

    return eps_model, seen


@pytest.mark.parametrize("clip", [True, False])
def test_dva_step_is_ddim_reversed(clip):
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64) * 1.5
    eps = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    for t, t_next in ((0, 10), (490, 500), (980, 990)):
        a, a_next = REF_ALPHAS[t], REF_ALPHAS[t_next]
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
        assert clip is False or (x0.abs() > 1).any()  # the clipping is exercised
        got = ddim.dva_step(x, eps, a, a_next, clip=clip)
        torch.testing.assert_close(got, ref_step(x, eps, a, a_next, clip), rtol=0, atol=1e-9)
    # unclipped, the step is the plain DDIM inversion (the inverse scheduler's map)
    plain = ddim.dva_step(x, eps, REF_ALPHAS[0], REF_ALPHAS[10], clip=False)
    x0 = (x - (1 - REF_ALPHAS[0]).sqrt() * eps) / REF_ALPHAS[0].sqrt()
    torch.testing.assert_close(plain, REF_ALPHAS[10].sqrt() * x0 + (1 - REF_ALPHAS[10]).sqrt() * eps,
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("clip", [True, False])
def test_dva_decode_step_is_ddim_with_the_clipped_x0(clip):
    sched = ddim.decode_scheduler(100, clip=clip)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64) * 1.5
    eps = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    for t in (990, 500, 0):
        a_to = REF_ALPHAS[t - 10] if t else torch.tensor(1.0, dtype=torch.float64)
        got = ddim._decode_step(sched, eps, t, x)
        # DVA's clipping step takes float64 coefficients; diffusers' keeps alpha_bar in float32
        tol = 1e-12 if clip else 1e-5
        torch.testing.assert_close(got, ref_step(x, eps, REF_ALPHAS[t], a_to, clip), rtol=0, atol=tol)


def test_dva_sampler_runs_dvas_loops_step_for_step():
    """Encode from alpha_bar[0] at t = 0 .. T - 2Δ (S - 1 calls), decode at T - Δ .. 0
    (S calls), x0 clipped both ways: equal to the loops written out above."""
    model = oracle_plus(random_unet(dtype=torch.float64), weight=1.0)
    x0, cond = frames(2, torch.float64)
    x0 = (x0 * 4).clamp(-1, 1)  # faces reach the ends of [-1, 1]: the clipping acts
    steps = 10
    eps_model, seen = recording(model)
    x_T = ddim.ddim_encode(eps_model, x0, cond, steps, sampler="dva")
    ref_T, ref_seen = ref_dva_encode(model, x0, cond, steps)
    assert seen == ref_seen == list(range(0, 900, 100))
    torch.testing.assert_close(x_T, ref_T, rtol=0, atol=1e-5)
    seen.clear()
    out = ddim.ddim_decode(eps_model, x_T, cond, steps, sampler="dva")
    ref_out, ref_seen = ref_dva_decode(model, ref_T, cond, steps)
    assert seen == ref_seen == list(range(900, -1, -100))
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-5)
    assert out.abs().max() <= 1  # the last x0 is clipped, and the last step lands on it
    # the clipping changed something (else this test would not tell the samplers apart)
    unclipped, _ = ref_dva_encode(model, x0, cond, steps, clip=False)
    assert (unclipped - ref_T).abs().max() > 1e-3
    torch.testing.assert_close(ddim.dva_encode(model, x0, cond, steps, clip=False), unclipped, rtol=0, atol=1e-5)


def test_dva_round_trip_of_a_constant_eps_is_off_by_its_start():
    """With eps independent of x and t (and nothing clipped) s3edit's round trip is exact;
    DVA's returns the x0 its first step predicts from x0 taken at alpha_bar[0]:
    (x0 - sqrt(1 - a0) eps) / sqrt(a0), about 0.01 eps away."""
    eps0 = torch.randn(1, 3, 8, 8, dtype=torch.float64) * 0.5

    def constant(x, t, cond):
        return eps0.expand_as(x)

    x0 = torch.rand(2, 3, 8, 8, dtype=torch.float64) - 0.5
    cond = torch.zeros(2, 1, dtype=torch.float64)
    x_T = ddim.ddim_encode(constant, x0, cond, 50, sampler="dva")
    a0 = REF_ALPHAS[0]
    expected = (x0 - (1 - a0).sqrt() * eps0) / a0.sqrt()
    torch.testing.assert_close(ddim.ddim_decode(constant, x_T, cond, 50, sampler="dva"), expected,
                               rtol=0, atol=1e-5)
    assert (expected - x0).abs().max() > 1e-3


def test_dva_round_trip_converges_and_errs_about_twice_s3edits():
    model = oracle_plus(random_unet(dtype=torch.float64))
    x0, cond = frames(1, torch.float64)
    errors = {}
    for steps in (10, 40):
        for sampler in ("s3edit", "dva"):
            x_T = ddim.ddim_encode(model, x0, cond, steps, sampler=sampler)
            out = ddim.ddim_decode(model, x_T, cond, steps, sampler=sampler)
            errors[sampler, steps] = (out - x0).pow(2).mean().sqrt().item()
    assert errors["dva", 10] > 2 * errors["dva", 40]  # first order in the step size, as s3edit's
    for steps in (10, 40):  # measured 1.6 and 1.9 times
        assert 1.3 * errors["s3edit", steps] < errors["dva", steps] < 3 * errors["s3edit", steps], errors


def test_dva_sampler_counts_and_refuses_steps_it_cannot_space():
    calls = []
    model = oracle_plus(random_unet())
    x0, cond = frames(1)
    x_T = ddim.ddim_encode(model, x0, cond, 5, callback=calls.append, sampler="dva")
    assert sum(calls) == ddim.encode_passes(5, "dva") == 4 and ddim.encode_passes(5) == 5
    ddim.ddim_decode(model, x_T, cond, 5, callback=calls.append, sampler="dva")
    assert sum(calls) == 9
    with pytest.raises(ValueError, match="divide 1000"):
        ddim.ddim_encode(model, x0, cond, 30, sampler="dva")
    with pytest.raises(ValueError, match="divide 1000"):
        ddim.ddim_decode(model, x_T, cond, 30, sampler="dva")
    assert ddim.check_steps(30) == 30  # s3edit's leading spacing takes any S


def test_decode_in_region_with_dvas_sampler_ends_on_its_decode():
    eps_model = oracle_plus(random_unet(), weight=1.0)
    x0, plain = frames(2)
    edited = plain + 2.0
    x_T = ddim.ddim_encode(eps_model, x0, plain, 5, sampler="dva")
    ones = torch.ones(2, 1, 16, 16)
    out = ddim.ddim_decode_in_region(eps_model, x_T, x0, edited, ones, 5, sampler="dva")
    torch.testing.assert_close(out, ddim.ddim_decode(eps_model, x_T, edited, 5, sampler="dva"), rtol=0, atol=1e-5)
    assert (out - ddim.ddim_decode(eps_model, x_T, edited, 5)).abs().max() > 1e-4  # not s3edit's decode


def test_dva_encoder_step_in_float32_is_the_float64_step_rounded():
    """Near t = 0, 1 - alpha_bar keeps few digits in float32; the step's coefficients come
    from the float64 schedule, so a float32 step stays within float32 rounding of the
    float64 one, clipped pixels included (float32 tables were off by about 1e-2 there)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 1.2
    eps = torch.randn_like(x)
    a = ddim.alphas_cumprod64()
    torch.testing.assert_close(a, REF_ALPHAS, rtol=1e-14, atol=0)
    ref = ddim.dva_step(x, eps, a[0], a[10])
    got = ddim.dva_step(x.float(), eps.float(), a[0], a[10])
    assert got.dtype == torch.float32
    assert (got.double() - ref).abs().max() < 1e-4
