"""Deterministic DDIM: encode a clean frame to its noise map (x0 -> x_T) and decode it
back (x_T -> x0), over one model contract::

    eps_model(x_t, t, cond) -> eps
        x_t  (N, C, H, W) float   noisy frames
        t    (N,) int64           training timesteps in [0, T)
        cond (N, D) float         condition (z_face for DVA)
        eps  (N, C, H, W)         predicted noise (epsilon parameterisation)

The noise schedule and the DDIM update are diffusers' ``DDIMScheduler`` (decode) and
``DDIMInverseScheduler`` (encode), with the schedule DVA / DiffAE train on (T = 1000,
linear betas 1e-4 -> 0.02, epsilon prediction), no clipping of x0, eta = 0. With S steps both
use the timesteps 0, T//S, 2T//S, ... ("leading" spacing, as DiffAE's ``ddim{S}``).

Pairing (why encode and decode invert each other step by step): decoding at timestep t
moves x from alpha_bar[t] to alpha_bar[t - T//S] (1.0 below 0) with eps(x, t); the
inverse scheduler, called with the same t, moves it back. Encoding therefore runs
t = 0, T//S, ..., T - T//S, from the clean frame (alpha_bar = 1) up to
alpha_bar[T - T//S], exactly where decoding starts, and evaluates the model at that same
t (the timestep the decoder will use to undo the step; the only approximation is that
the model sees x before the step rather than after). Both directions run the model at
0, T//S, ..., T - T//S.

DVA's own encoder differs: it takes the clean frame to sit at alpha_bar[0] rather than
1, evaluates the model where the sample is (t = 0, T//S, ..., T - 2·T//S: one step
fewer, each at the timestep before the decoder's) and clips its x0 predictions to
[-1, 1]. We do none of these, so encode -> decode is exact up to the DDIM inversion
error, which shrinks in proportion to 1/S (tests/model/test_ddim.py); evaluating where
the sample is gave about twice the round-trip error on a small UNet. docs/sampler.md
sets the two samplers side by side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

import torch

if TYPE_CHECKING:
    from diffusers import DDIMInverseScheduler, DDIMScheduler

EpsModel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Precision = Literal["fp32", "bf16", "fp16"]
StepCallback = Callable[[int], None]  # called with the number of steps just done (1)

# DVA's diffusion (Kim et al., 2023; the template it inherits from DiffAE): docs/sampler.md.
NUM_TRAIN_TIMESTEPS = 1000
BETA_START = 1e-4
BETA_END = 0.02
DEFAULT_STEPS = 100  # DVA's paper: reconstruction SSIM 0.922 at T=100, 0.540 at T=20

_SCHEDULE = dict(
    num_train_timesteps=NUM_TRAIN_TIMESTEPS,
    beta_start=BETA_START,
    beta_end=BETA_END,
    beta_schedule="linear",
    prediction_type="epsilon",
    clip_sample=False,
    set_alpha_to_one=True,  # decode ends on alpha_bar = 1; encode starts there
    steps_offset=0,
    timestep_spacing="leading",  # 0, T//S, 2T//S, ... as DiffAE's space_timesteps("ddimS")
)

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_steps(steps: int) -> int:
    if not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"DDIM steps must be in 1..{NUM_TRAIN_TIMESTEPS}, got {steps}")
    return steps


# diffusers is imported where it is used: it costs seconds, and `s3edit --help` or
# `align` should not pay for it.


def decode_scheduler(steps: int) -> "DDIMScheduler":
    """diffusers' DDIM (x_T -> x0) with DVA's schedule, timesteps set for ``steps``."""
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(**_SCHEDULE)
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


def default_precision(device: torch.device | str) -> Precision:
    """bf16 autocast on CUDA, fp32 elsewhere (CPU autocast is slower on most CPUs)."""
    return "bf16" if torch.device(device).type == "cuda" else "fp32"


def _eps(eps_model: EpsModel, x: torch.Tensor, t: int, cond: torch.Tensor,
         precision: Precision) -> torch.Tensor:
    timesteps = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
    with autocast(x.device, precision):
        eps = eps_model(x, timesteps, cond)
    return eps.to(x.dtype)


@torch.no_grad()
def ddim_encode(
    eps_model: EpsModel,
    x0: torch.Tensor,
    cond: torch.Tensor,
    steps: int = DEFAULT_STEPS,
    precision: Precision = "fp32",
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Clean frames x0 (N, C, H, W) in [-1, 1] -> noise maps x_T (N, C, H, W), by
    ``steps`` deterministic inverse DDIM steps under ``cond`` (N, D)."""
    scheduler = encode_scheduler(steps)
    x = x0
    for t in scheduler.timesteps.tolist():
        eps = _eps(eps_model, x, t, cond, precision)
        x = scheduler.step(eps, t, x).prev_sample  # alpha_bar[t-Δ] -> alpha_bar[t]
        if callback is not None:
            callback(1)
    return x


@torch.no_grad()
def ddim_decode(
    eps_model: EpsModel,
    x_T: torch.Tensor,
    cond: torch.Tensor,
    steps: int = DEFAULT_STEPS,
    precision: Precision = "fp32",
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Noise maps x_T (N, C, H, W) -> frames x0 (N, C, H, W) (about [-1, 1], not
    clipped), by ``steps`` deterministic DDIM steps (eta = 0) under ``cond`` (N, D)."""
    scheduler = decode_scheduler(steps)
    x = x_T
    for t in scheduler.timesteps.tolist():
        eps = _eps(eps_model, x, t, cond, precision)
        x = scheduler.step(eps, t, x, eta=0.0).prev_sample  # alpha_bar[t] -> alpha_bar[t-Δ]
        if callback is not None:
            callback(1)
    return x


@torch.no_grad()
def ddim_decode_in_region(
    eps_model: EpsModel,
    x_T: torch.Tensor,
    cond: torch.Tensor,
    plain: torch.Tensor,
    region: torch.Tensor,
    steps: int = DEFAULT_STEPS,
    precision: Precision = "fp32",
    callback: StepCallback | None = None,
    edit_start: int = NUM_TRAIN_TIMESTEPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM decode of x_T (N, C, H, W) under ``cond`` (N, D) inside ``region`` and under
    ``plain`` (N, D) outside it: an edit confined to a region, as Blended Latent
    Diffusion (Avrahami et al., 2023) confines a text edit to a mask.

    Two trajectories run side by side in one batch (2N rows): the plain decode, which
    reproduces the frame, and the edited one. After every step the edited sample takes
    the plain sample's values outside the region, x_edit = x_plain + m * (x_edit -
    x_plain), so the network draws the edit in the context of the real face around it
    and nothing outside the region changes. ``region``: (N, 1, H, W) in [0, 1] (1 =
    edit). The edit starts at the steps with t < ``edit_start``: the earlier, noisier
    steps run under ``plain`` alone, as one trajectory (DiffEdit's encoding ratio,
    Couairon et al. 2023, is ``edit_start`` / T). Returns (edited, plain) frames (N, C,
    H, W): the confined edit and the plain decode (the reconstruction), equal outside
    the region. With ``region`` all ones and the default ``edit_start``, ``edited`` is
    ``ddim_decode`` under ``cond``; with all zeros, under ``plain``."""
    scheduler = decode_scheduler(steps)
    n = x_T.shape[0]
    edited, kept = None, x_T  # None while the two trajectories are still one
    for t in scheduler.timesteps.tolist():
        if t < edit_start:
            x = torch.cat([kept if edited is None else edited, kept])
            x = scheduler.step(_eps(eps_model, x, t, torch.cat([cond, plain]), precision), t, x,
                               eta=0.0).prev_sample
            edited, kept = x[n:] + region * (x[:n] - x[n:]), x[n:]
        else:
            kept = scheduler.step(_eps(eps_model, kept, t, plain, precision), t, kept, eta=0.0).prev_sample
        if callback is not None:
            callback(1)
    return (kept if edited is None else edited), kept
