"""Deterministic DDIM: encode a clean frame to its noise map (x0 -> x_T) and decode it
back (x_T -> x0), over one model contract::

    eps_model(x_t, t, cond) -> eps
        x_t  (N, C, H, W) float   noisy frames
        t    (N,) int64           training timesteps in [0, T)
        cond (N, D) float         condition (z_face for DVA)
        eps  (N, C, H, W)         predicted noise (epsilon parameterisation)

Two samplers share the schedule DVA trains on (T = 1000, linear betas 1e-4 -> 0.02,
epsilon prediction; DVA inherits it from DiffAE's template), eta = 0 and the timesteps
0, T//S, 2T//S, ... of S steps ("leading" spacing, DVA's ``ddim{S}``); docs/sampler.md
sets them side by side.

``s3edit`` (the default of the bundled and tuned sets): diffusers' ``DDIMScheduler``
(decode) and ``DDIMInverseScheduler`` (encode), no clipping of x0. Decoding at
timestep t moves x from alpha_bar[t] to alpha_bar[t - T//S] (1.0 below 0) with
eps(x, t); the inverse scheduler, called with the same t, moves it back. Encoding
therefore runs t = 0, T//S, ..., T - T//S, from the clean frame (alpha_bar = 1) up to
alpha_bar[T - T//S], exactly where decoding starts, and evaluates the model at that same
t (the timestep the decoder will use to undo the step; the only approximation is that
the model sees x before the step rather than after). encode -> decode is exact up to
this inversion error, which shrinks in proportion to 1/S (tests/model/test_ddim.py).

``dva`` (the default of sets imported from DVA): DVA's own encode and decode, step for
step (its ``encode_stochastic`` / ``ddim_reverse_sample_loop`` and ``render`` /
``ddim_sample_loop``). The encoder takes the clean frame to sit at alpha_bar[0], not 1,
and evaluates the model where the sample is: t = 0, T//S, ..., T - 2·T//S (S - 1 steps;
DiffAE's encoder, which DVA's derives from, takes one more, to alpha_bar = 0), each
going from alpha_bar[t] to alpha_bar[t + T//S], so it stops at alpha_bar[T - T//S] where
decoding starts. Both directions clip the predicted x0 to [-1, 1] and re-derive eps from
the clipped x0 before the step. Both directions take ``dva_step``, DVA's arithmetic
with float64 coefficients written out (diffusers' schedulers hold float32 tables, and
its inverse scheduler pairs a step with the decoder's timestep and keeps the raw eps
after clipping); diffusers' ``DDIMScheduler`` still gives the timesteps. DVA spaces S steps that do
not divide T differently from diffusers, so the ``dva`` sampler takes only S dividing T.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    from diffusers import DDIMInverseScheduler, DDIMScheduler

EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Precision = Literal["fp32", "bf16", "fp16"]
Sampler = Literal["s3edit", "dva"]  # module docstring; docs/sampler.md
StepCallback = Callable[[int], None]  # called with the number of steps just done (1)

# DVA's diffusion (Kim et al., 2023; the template it inherits from DiffAE): docs/sampler.md.
NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02
# Default steps S and fixed-point corrections K per sampler (docs/sampler.md, "Fixed-point
# inversion"): s3edit's S = 20 with K = 2 (60 encode + 20 decode passes) reconstructs
# better than S = 100 without (100 + 100); DVA's encoder takes no corrections, and DVA's
# paper measured reconstruction SSIM 0.922 at S = 100, 0.540 at S = 20.
DEFAULT_STEPS = 20
DEFAULT_FIXED_POINT = 2
DVA_STEPS = 100


def default_steps(sampler: Sampler = "s3edit") -> tuple[int, int]:
    """(steps, fixed-point corrections) a run takes when not told: (20, 2) for
    ``s3edit``, (100, 0) for ``dva``."""
    return (DVA_STEPS, 0) if sampler == "dva" else (DEFAULT_STEPS, DEFAULT_FIXED_POINT)


_SCHEDULE = dict(
    num_train_timesteps=NUM_TRAIN_TIMESTEPS,
    beta_start=BETA_START,
    beta_end=BETA_END,
    beta_schedule="linear",
    prediction_type="epsilon",
    clip_sample=False,  # True for DVA's decoder (decode_scheduler(clip=True))
    set_alpha_to_one=True,  # decode ends on alpha_bar = 1 (both samplers); s3edit's encode starts there
    steps_offset=0,
    timestep_spacing="leading",  # 0, T//S, 2T//S, ...: DVA's space_timesteps("ddimS") for S dividing T
)

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_steps(steps: int, sampler: Sampler = "s3edit") -> int:
    """``steps`` in 1..T; for the ``dva`` sampler also a divisor of T (module docstring)."""
    if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"DDIM steps must be in 1..{NUM_TRAIN_TIMESTEPS}, got {steps}")
    if sampler == "dva" and NUM_TRAIN_TIMESTEPS % steps:
        raise ValueError(f"DVA's sampler takes DDIM steps that divide {NUM_TRAIN_TIMESTEPS}, got {steps}")
    return steps


def check_fixed_point(fixed_point: int, sampler: Sampler = "s3edit") -> int:
    """``fixed_point`` corrections per encode step: 0 or more, and 0 for ``dva`` (DVA's
    encoder is kept step for step)."""
    if fixed_point < 0:
        raise ValueError(f"fixed-point corrections must be 0 or more, got {fixed_point}")
    if sampler == "dva" and fixed_point:
        raise ValueError("DVA's sampler encodes as DVA does, without fixed-point corrections")
    return fixed_point


def encode_passes(steps: int, sampler: Sampler = "s3edit", fixed_point: int = 0) -> int:
    """Network passes per frame of an encode: S · (1 + K) for ``s3edit`` with K
    fixed-point corrections per step, S - 1 for ``dva``."""
    return steps - 1 if sampler == "dva" else steps * (1 + fixed_point)


# diffusers is imported where it is used: it costs seconds, and `s3edit --help` or
# `align` should not pay for it.


def decode_scheduler(steps: int, clip: bool = False) -> "DDIMScheduler":
    """diffusers' DDIM (x_T -> x0) with DVA's schedule, timesteps set for ``steps``;
    ``clip``: x0 predictions clipped to [-1, 1] (DVA's decoder)."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(**{**_SCHEDULE, "clip_sample": clip})
    scheduler.set_timesteps(check_steps(steps))
    return scheduler


def encode_scheduler(steps: int) -> "DDIMInverseScheduler":
    """diffusers' inverse DDIM (x0 -> x_T) with DVA's schedule, timesteps set."""
    from diffusers import DDIMInverseScheduler

    scheduler = DDIMInverseScheduler(**_SCHEDULE)
    scheduler.set_timesteps(check_steps(steps))
    return scheduler


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: Precision) -> Iterator[None]:
    """Mixed precision for the model call only (the DDIM update stays in the sample's
    dtype): bf16/fp16 autocast on ``device``'s type, nothing for fp32."""
    if precision == "fp32":
        yield
        return
    device_type = torch.device(device).type
    with torch.autocast(device_type=device_type, dtype=_AUTOCAST_DTYPES[precision]):
        yield


def _eps(eps_model: EpsModel, x: torch.Tensor, t: int, cond: torch.Tensor,
         precision: Precision) -> torch.Tensor:
    timesteps = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    if precision != "fp32":  # bf16/fp16 convolutions are fastest channels_last (docs/sampler.md)
        x = x.contiguous(memory_format=torch.channels_last)
    with autocast(x.device, precision):
        eps = eps_model(x, timesteps, cond)
    return eps.to(x.dtype)


def _decode_step(scheduler: "DDIMScheduler", eps: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
    """One decode step alpha_bar[t] -> alpha_bar[t - T//S] (1 below 0): diffusers' DDIM
    step, or for a clipping scheduler (DVA's sampler) ``dva_step``, DVA's own arithmetic
    with float64 coefficients, which re-derives eps from the clipped x0."""
    if not scheduler.config.clip_sample:
        return scheduler.step(eps, t, x, eta=0.0).prev_sample
    prev = t - NUM_TRAIN_TIMESTEPS // scheduler.num_inference_steps
    alphas = alphas_cumprod64()
    return dva_step(x, eps, alphas[t], alphas[prev] if prev >= 0 else 1.0)


@functools.cache
def alphas_cumprod64() -> torch.Tensor:
    """alpha_bar[t] of the schedule (T,) in float64, as DVA builds it (numpy float64
    linspace of the betas, then the cumulative product); diffusers' tables are float32,
    and 1 - alpha_bar near t = 0 loses a quarter of its digits there."""
    betas = np.linspace(BETA_START, BETA_END, NUM_TRAIN_TIMESTEPS, dtype=np.float64)
    return torch.from_numpy(np.cumprod(1.0 - betas, axis=0))


def dva_step(x: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor | float,
                     alpha_bar_next: torch.Tensor | float, clip: bool = True) -> torch.Tensor:
    """One step of DVA's sampler from noise level ``alpha_bar`` to ``alpha_bar_next``,
    with eps evaluated at x itself (DDIM's Eq. 12, Song et al. 2021, eta = 0): up in
    noise, its encoder's ``ddim_reverse_sample``; down, its decoder's ``ddim_sample``::

        x0     = sqrt(1/a) · x - sqrt(1/a - 1) · eps      clipped to [-1, 1] when ``clip``
        eps'   = (sqrt(1/a) · x - x0) / sqrt(1/a - 1)      (= eps when nothing was clipped)
        x_next = sqrt(a_next) · x0 + sqrt(1 - a_next) · eps'

    The coefficients are computed in float64 and rounded to x's dtype once, in DVA's
    form, so a float32 step gives DVA's float32 result bit for bit (diffusers' schedulers
    hold float32 tables, in which 1 - alpha_bar near t = 0 loses digits; its inverse
    scheduler also keeps the raw eps after clipping x0, where DVA re-derives it)."""
    a, a_next = float(alpha_bar), float(alpha_bar_next)
    coef = lambda v: torch.tensor(v, dtype=torch.float64).to(dtype=x.dtype, device=x.device)  # noqa: E731
    r, rm1, an = coef((1 / a) ** 0.5), coef((1 / a - 1) ** 0.5), coef(a_next)
    x0 = r * x - rm1 * eps
    if clip:
        x0 = x0.clamp(-1, 1)
        eps = (r * x - x0) / rm1
    return x0 * an.sqrt() + (1 - an).sqrt() * eps


@torch.no_grad()
def dva_encode(
    eps_model: EpsModel,
    x0: torch.Tensor,
    cond: torch.Tensor,
    steps: int = DVA_STEPS,
    precision: Precision = "fp32",
    callback: StepCallback | None = None,
    clip: bool = True,
) -> torch.Tensor:
    """DVA's encoder: clean frames x0 (N, C, H, W), taken to sit at alpha_bar[0], ->
    x_T at alpha_bar[T - T//S] by S - 1 ``dva_step``s at t = 0, T//S, ...,
    T - 2·T//S under ``cond`` (N, D). ``clip=False`` leaves x0 unclipped (for tests)."""
    check_steps(steps, "dva")
    alphas = alphas_cumprod64()
    timesteps = encode_scheduler(steps).timesteps.tolist()  # 0, Δ, ..., T - Δ
    x = x0
    for t, t_next in itertools.pairwise(timesteps):
        eps = _eps(eps_model, x, t, cond, precision)
        x = dva_step(x, eps, alphas[t], alphas[t_next], clip)
        if callback is not None:
            callback(1)
    return x


@torch.no_grad()
def ddim_encode(
    eps_model: EpsModel,
    x0: torch.Tensor,
    cond: torch.Tensor,
    steps: int = DEFAULT_STEPS,
    precision: Precision = "fp32",
    callback: StepCallback | None = None,
    sampler: Sampler = "s3edit",
    fixed_point: int = 0,
) -> torch.Tensor:
    """Clean frames x0 (N, C, H, W) in [-1, 1] -> noise maps x_T (N, C, H, W) under
    ``cond`` (N, D): ``steps`` inverse DDIM steps (``s3edit``), or DVA's S - 1
    (``dva``, ``dva_encode``).

    ``fixed_point`` = K > 0 (``s3edit`` only) refines each step K times. The decoder
    will undo the step from x_t with eps(x_t, t), so the exact inverse is the x_t that
    solves the implicit DDIM equation (Song et al. 2021, Eq. 12, eta = 0)::

        x_t = sqrt(a_t) · (x_prev - sqrt(1 - a_prev) · e) / sqrt(a_prev) + sqrt(1 - a_t) · e,
        e   = eps(x_t, t)

    The plain step takes e = eps(x_prev, t); each correction re-evaluates e at the last
    x_t and redoes the step from x_prev (fixed-point iteration, as in AIDI, Pan et al.
    2023). One pass per correction; ``callback`` is called once per pass."""
    check_fixed_point(fixed_point, sampler)
    if sampler == "dva":
        return dva_encode(eps_model, x0, cond, steps, precision, callback)
    scheduler = encode_scheduler(steps)
    x = x0
    for t in scheduler.timesteps.tolist():
        x_t = x
        for _ in range(1 + fixed_point):
            eps = _eps(eps_model, x_t, t, cond, precision)
            x_t = scheduler.step(eps, t, x).prev_sample  # alpha_bar[t-Δ] -> alpha_bar[t]
            if callback is not None:
                callback(1)
        x = x_t
    return x


@torch.no_grad()
def ddim_decode(
    eps_model: EpsModel,
    x_T: torch.Tensor,
    cond: torch.Tensor,
    steps: int = DEFAULT_STEPS,
    precision: Precision = "fp32",
    callback: StepCallback | None = None,
    sampler: Sampler = "s3edit",
) -> torch.Tensor:
    """Noise maps x_T (N, C, H, W) -> frames x0 (N, C, H, W), by ``steps``
    deterministic DDIM steps (eta = 0) under ``cond`` (N, D). ``s3edit``: about [-1, 1],
    not clipped; ``dva``: x0 clipped to [-1, 1] at every step, so the frame is too."""
    scheduler = decode_scheduler(check_steps(steps, sampler), clip=sampler == "dva")
    x = x_T
    for t in scheduler.timesteps.tolist():
        eps = _eps(eps_model, x, t, cond, precision)
        x = _decode_step(scheduler, eps, t, x)  # alpha_bar[t] -> alpha_bar[t-Δ]
        if callback is not None:
            callback(1)
    return x


def straight_path(x0: torch.Tensor, x_T: torch.Tensor, alpha_bar_T: torch.Tensor | float,
                  alpha_bar: torch.Tensor | float) -> torch.Tensor:
    """The sample at noise level ``alpha_bar`` on the DDIM line through the clean frame
    x0 (alpha_bar = 1) and its noise map x_T (at ``alpha_bar_T``)::

        eps_T = (x_T - sqrt(a_T) · x0) / sqrt(1 - a_T)
        x_a   = sqrt(a) · x0 + sqrt(1 - a) · eps_T

    x0 noised with the noise its own inversion found (x_a is x_T at a_T and x0 at 1)."""
    a_T = torch.as_tensor(alpha_bar_T, dtype=x0.dtype, device=x0.device)
    a = torch.as_tensor(alpha_bar, dtype=x0.dtype, device=x0.device)
    eps_T = (x_T - a_T.sqrt() * x0) / (1 - a_T).sqrt()
    return a.sqrt() * x0 + (1 - a).sqrt() * eps_T


def region_passes(steps: int, edit_start: int = NUM_TRAIN_TIMESTEPS) -> int:
    """Network passes per frame of ``ddim_decode_in_region``: the steps with t < ``edit_start``."""
    return sum(t < edit_start for t in decode_scheduler(steps).timesteps.tolist())


@torch.no_grad()
def ddim_decode_in_region(
    eps_model: EpsModel,
    x_T: torch.Tensor,
    x0: torch.Tensor,
    cond: torch.Tensor,
    region: torch.Tensor,
    steps: int = DEFAULT_STEPS,
    precision: Precision = "fp32",
    callback: StepCallback | None = None,
    edit_start: int = NUM_TRAIN_TIMESTEPS,
    sampler: Sampler = "s3edit",
) -> torch.Tensor:
    """DDIM decode of x_T (N, C, H, W) under ``cond`` (N, D) inside ``region`` (N, 1, H, W)
    in [0, 1] (1 = edit), with the clean frame x0 (N, C, H, W) (the frame x_T was encoded
    from) outside it: an edit confined to a region, as Blended Latent Diffusion
    (Avrahami et al., 2023) confines a text edit to a mask.

    Outside the region the sample follows ``straight_path`` (x0 noised with its own
    inversion noise). The decode starts on that path at the first step with t <
    ``edit_start`` (the noisier steps cost nothing: DiffEdit's encoding ratio, Couairon
    et al. 2023, is ``edit_start`` / T) and after every step takes the path's values
    outside the region, x = b + m · (x − b), b the path at the step's new noise level, so
    the network draws the edit in the context of the real face around it. The last step
    lands on x0 itself, so the result equals x0 wherever the region is 0. One network
    pass per step with t < ``edit_start`` (``region_passes``); with ``region`` all ones and
    ``edit_start`` = T this is ``ddim_decode`` under ``cond``, with all zeros it is x0."""
    scheduler = decode_scheduler(check_steps(steps, sampler), clip=sampler == "dva")
    timesteps = scheduler.timesteps.tolist()
    alphas = scheduler.alphas_cumprod
    a_T = alphas[timesteps[0]]
    x = None
    for t in timesteps:
        if t >= edit_start:
            continue
        if x is None:  # the first edited step starts on the path (x_T itself at the top)
            x = x_T if t == timesteps[0] else straight_path(x0, x_T, a_T, alphas[t])
        x = _decode_step(scheduler, _eps(eps_model, x, t, cond, precision), t, x)
        after = t - NUM_TRAIN_TIMESTEPS // steps
        b = x0 if after < 0 else straight_path(x0, x_T, a_T, alphas[after])
        x = b + region * (x - b)
        if callback is not None:
            callback(1)
    return x0.clone() if x is None else x
