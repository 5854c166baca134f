"""The training loop, and DVA's objective (DESIGN §3; Kim et al., CVPR 2023, Eq. 4-5).

DVA's objective, per step, for a batch of aligned crops x0 (B, 3, S, S) in [-1, 1]:

1. semantics: z_face = fuse(z_id, z_lnd). The identity and landmark encoders are frozen
   (as in DVA), so z_id and z_lnd are computed once for the whole data set; the fusion
   Linear and the UNet learn.
2. one timestep t ~ U{0..T-1} per frame and two independent noises eps1, eps2:
   x_t^k = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps_k.
3. loss = |eps_theta(x_t^1) - eps1| + |eps_theta(x_t^2) - eps2|            (L_simple, L1)
        + face_weight * |m * (x0_hat^1 - x0_hat^2)|                          (L_reg)
   where x0_hat^k = (x_t^k - sqrt(1 - abar_t) eps_theta(x_t^k)) / sqrt(abar_t) and m is
   the face mask: the two predictions must agree on the face whatever the noise, which
   keeps face information out of x_T.

Paired edits (our addition, issue 6; off unless pairs are given): where the data holds
the same face without and with an attribute (``s3edit.train.pairs``: the default model's
synthetic-glasses twins), a third term teaches the decoder what the attribute's edit
draws, whatever the noisy frame shows. For a pair row (src, tgt) in either direction
(add: src lacks it; remove: src has it), t_p ~ U{t_min..T-1} and a noise eps_p:

    x_p  = sqrt(abar) src + sqrt(1 - abar) eps_p           (src's noisy frame), or in
           half the rows sqrt(abar) tgt + sqrt(1 - abar) eps_p with t_p ~ U{0..T-1}
           (tgt's own noisy frame: what the decode sees once the edit has appeared)
    z_p  = DVA's edit rule on src's z_id, +gamma (add) or -gamma (remove) along the
           head's direction, gamma ~ U(0.25, 1): the code an edit makes
    e      = |eps_theta(x_p, t_p, fuse(z_p, z_lnd_src)) - eps*|,
    eps*   = (x_p - sqrt(abar) tgt) / sqrt(1 - abar)        (the noise that makes x0_hat = tgt)
    L_pair = mean(e) + mean of e over the changed region (the pixels where src and tgt
             differ, dilated by one pixel)

so the prediction under the edited code is the target's x0, from src's noisy frame (an
epsilon-space loss: it weighs each t by how much its prediction moves the DDIM
trajectory; t_min = 100 keeps eps* bounded where abar -> 1) and from tgt's own (there
eps* = eps_p: the edited code must also denoise a frame that already shows the edit, at
every t, the low-t steps that end a decode included). The region term gives the few pixels an edit changes (glasses: ~4 % of a crop) as much weight as the whole frame,
which otherwise drowns them in the pixels that must stay as they are. The edited code,
not the target's own z_id, conditions the term: a twin's z_id differs from its face's by
about a tenth of an edit step along the head's direction (dlib's net barely sees
glasses), too little for the network to tell them apart. For the same reason the frames
of pair jobs that are not among the training inputs (``PairTerm.plain_frames``) take
no part in DVA's loss: under their own, nearly equal codes it would teach the network
half a pair of glasses for both. This is what DDIM
inversion followed by a decode under an edited code asks of the network, and what DVA
learns only slowly from its own loss (hundreds of thousands of GPU steps). Measured on
the default model's architecture (``weights/default/TRAINING.md``, step 5): 3,000 CPU
steps make its Eyeglasses edit draw glasses on unseen faces, but also shift their skin
tone.

Two additions aim at that shift (issue 6). *Keeping the rest*: for every plain row of
DVA's loss (x_t1, t, eps1 above), the same frame under its own z_id edited along an
attribute's direction (±gamma, as for the pairs) must still predict eps1 outside the
region that attribute's edit may change (``keep_region``, the attribute's region of
``s3edit.face.mask.ATTRIBUTE_REGIONS``: for Eyeglasses the eye band widened by 0.75 eye
distances across and 0.4 up and down; the shipped default set was trained with 0.75
all round):

    L_keep = mean over the pixels outside the region of |eps_theta(x_t1, t, fuse(z_e, z_lnd)) - eps1|

so the edited code must reproduce every frame of the data, not only the pairs' faces,
everywhere but where the attribute lives (weight ``PairTerm.keep``, 0: off). That
epsilon-space form hardly sees the steps that decide a decode's colours: at high t a
shift of the one-step x0 prediction is a change of eps_theta smaller by
sqrt(abar / (1 - abar)) (1/150 at t = 999), and on the default model the first steps of
an edit's decode (t >= 600) made most of the darkening of unseen faces
(``TRAINING.md``, step 5b). ``PairTerm.keep_target = "unedited"`` compares instead the
one-step x0 predictions under the edited and the plain code, the latter fixed (no
gradient), outside the region:

    L_keep = mean outside of w(t) |eps_theta(x_t1, t, fuse(z_e, z_lnd)) - sg(eps_theta(x_t1, t, z_face))|,
    w(t)   = min(sqrt((1 - abar_t) / abar_t), KEEP_X0_CAP) / (its mean over t)

(∝ |x0_hat(z_e) - sg(x0_hat(z_face))| where the factor is below the cap), so the edit
changes nothing outside its region, at every step of a decode; the plain prediction is
DVA's own first row, so the term costs no extra forward. *Code
noise*: the normalised z_id of L_pair's and L_keep's rows gets Gaussian noise of std
``PairTerm.code_noise`` (default 0.3) before the edit, so the edit's effect is learnt as a function
of the direction, not of the few thousand exact codes of the training faces (the
conditioning augmentation of cascaded diffusion models).

The loop (``train``) takes an *objective*: an ``nn.Module`` whose ``forward(batch)``
returns a dict of loss terms with the total under ``"loss"``, and whose ``draw(gen, B)``
draws the random numbers of one global batch (``DVAObjective`` here, S3Editor's
``s3edit.s3.selftrain.S3Objective``). Every loss term is a mean over the samples.

Scale-out is Hugging Face Accelerate's (DDP; gloo on CPU, NCCL on GPUs): the same code
runs on one CPU, one GPU or ``accelerate launch --num_processes N`` / ``torchrun``.
Each step draws the random numbers of the whole global batch (``cfg.batch_size`` rows)
from a generator seeded by (seed, step), identically on every process, and process r
takes rows [r·b, (r+1)·b) with b = batch_size / processes; DDP averages the gradients.
Since every term is a per-sample mean over equal shards, N processes compute the same
update as one process with the same global batch (up to float summation order; exact
for models without dropout, whose masks are drawn per process). An interrupted run
resumes from its checkpoint to the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from s3edit.errors import InputError
from s3edit.face.mask import ATTRIBUTE_REGIONS, attribute_region, face_mask
from s3edit.train.data import CropData
from s3edit.model.attributes import denormalize, edit_identity, normalize
from s3edit.model.ddim import NUM_TRAIN_TIMESTEPS, decode_scheduler
from s3edit.model.dva import DVA
from s3edit.paths import atomic_path, write_json_atomic

ENCODER_FROZEN = ("encoder.idnet.", "encoder.lndnet.", "encoder.bgnet.")
STATE_FILE = "state.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
INFO_FILE = "train.json"
SEED_STRIDE = 1_000_003  # step generators are seeded by seed * SEED_STRIDE + step


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 16  # the global batch: split over the processes
    lr: float = 1e-4
    ema_decay: float = 0.999  # the EMA's final decay (it ramps up: ``ema_decay_at``)
    grad_clip: float = 1.0
    face_weight: float = 1.0  # weight of L_reg (DVA uses 1)
    checkpoint_every: int = 200
    seed: int = 0


@dataclass
class TrainResult:
    steps: int
    losses: list[dict[str, float]]  # every loss term per step of this run (all processes' mean)
    ema: DVA
    extra: dict[str, Any] = field(default_factory=dict)  # objective-specific facts

    def total(self) -> list[float]:
        return [parts["loss"] for parts in self.losses]


@dataclass
class Semantics:
    """Frozen per-frame encoder outputs: z_id (N, id_dim), z_lnd (N, 102), mask (N, 1, S, S),
    and the crop landmarks in [0, 1] lnd01 (N, 68, 2) (the dlib identity net cuts its chip
    by them)."""

    z_id: Tensor
    z_lnd: Tensor
    mask: Tensor
    lnd01: Tensor

    def per_frame(self, data: CropData) -> dict[str, Tensor]:
        """What a batch reads per frame, by name."""
        return {"x0": data.crops, "z_id": self.z_id, "z_lnd": self.z_lnd, "mask": self.mask, "lnd01": self.lnd01}


# --- pieces -------------------------------------------------------------------------------


def freeze_encoders(model: DVA) -> None:
    """The identity/landmark/parser nets never learn (DVA); ``requires_grad`` off also
    keeps DDP from waiting for their gradients."""
    for name, p in model.named_parameters():
        if name.startswith(ENCODER_FROZEN):
            p.requires_grad_(False)


def trainable_parameters(model: DVA) -> list[nn.Parameter]:
    """UNet + fusion; the frozen encoders stay as they are."""
    return [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith(ENCODER_FROZEN)]


@torch.no_grad()
def precompute_semantics(model: DVA, data: CropData, batch_size: int = 64,
                         device: torch.device | str | None = None) -> Semantics:
    """z_id, z_lnd and the face mask of every crop, on ``device`` (default: the model's),
    returned on the CPU."""
    device = device or next(model.parameters()).device
    external = model.encoder.lndnet is None
    lnd01 = (data.landmarks + 0.5) / data.size  # pixel-centre crop px -> [0, 1]
    z_id, z_lnd, masks = [], [], []
    for start in range(0, len(data), batch_size):
        index = torch.arange(start, min(start + batch_size, len(data)))
        x = data.frames(index).to(device)
        lnd = data.landmarks[index]
        z_id.append(model.z_id(x, lnd01[index].to(device)).float().cpu())
        z_lnd.append(model.z_lnd(x, lnd01[index].to(device) if external else None).float().cpu())
        if model.has_face_parser:
            masks.append(model.face_mask(x).float().cpu())
        else:
            masks.append(torch.from_numpy(face_mask(lnd.numpy(), data.size))[:, None].float())
    return Semantics(torch.cat(z_id), torch.cat(z_lnd), torch.cat(masks), lnd01.float())


def noisy(x0: Tensor, eps: Tensor, a: Tensor) -> Tensor:
    """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps; a = abar_t as (B, 1, 1, 1)."""
    return a.sqrt() * x0 + (1 - a).sqrt() * eps


def predict_x0(x_t: Tensor, eps_pred: Tensor, a: Tensor) -> Tensor:
    """One-step x0_hat = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t)."""
    return (x_t - (1 - a).sqrt() * eps_pred) / a.sqrt()


def dva_terms(pred1, pred2, x_t1, x_t2, eps1, eps2, mask, a) -> dict[str, Tensor]:
    """DVA's L_simple and L_reg from the two predictions (module docstring)."""
    simple = F.l1_loss(pred1, eps1) + F.l1_loss(pred2, eps2)
    reg = (mask * (predict_x0(x_t1, pred1, a) - predict_x0(x_t2, pred2, a))).abs().mean()
    return {"simple": simple, "reg": reg}


def alphas_cumprod() -> Tensor:
    """DVA's schedule abar_t, (T,) float32 (from diffusers' scheduler)."""
    return decode_scheduler(1).alphas_cumprod.float()


PAIR_T_MIN = 100  # L_pair's timesteps t_p >= 100: eps* grows as sqrt(abar / (1 - abar))
PAIR_GAMMA = (0.25, 1.0)  # edit-rule strengths of L_pair's codes (DVA's default s is 0.3)
PAIR_FROM_TARGET = 0.5  # share of L_pair rows noised from the target frame (any t)
PAIR_CODE_NOISE = 0.3  # default std of the noise added to L_pair's and L_keep's normalised codes
KEEP_TARGETS = ("noise", "unedited")  # L_keep against eps1, or x0-space against the plain code's prediction
KEEP_X0_CAP = 20.0  # cap of L_keep's x0 factor sqrt((1 - abar) / abar) (reached at t ~ 770)


def keep_region(name: str, lnd01: Tensor, size: int) -> Tensor | None:
    """(B, 1, S, S) float: where attribute ``name``'s edit may change a crop (crop
    landmarks ``lnd01`` in [0, 1]); None for attributes without a known region."""
    region = attribute_region(name, lnd01 * size - 0.5, size)
    return None if region is None else region[:, None].float()


@dataclass
class PairTerm:
    """Paired-edit supervision (module docstring): rows (M, 2) int64 (without, with)
    of the training data; attribute (M,) int64 into ``directions`` (A, D), the unit
    edit directions of the attributes ``names``; ``conds_mean``/``conds_std`` (1, D),
    the classifier's normalisation (DVA's edit rule); ``batch`` pair rows per step
    (0: half the batch size); ``plain_frames``: DVA's loss draws its frames from the
    first ``plain_frames`` rows of the data only (None: all rows)."""

    rows: Tensor
    attribute: Tensor
    directions: Tensor
    conds_mean: Tensor
    conds_std: Tensor
    names: tuple[str, ...]
    weight: float = 1.0
    batch: int = 0
    sources: tuple[str, ...] = ()  # the pairs files, for the record
    plain_frames: int | None = None
    keep: float = 1.0
    code_noise: float = PAIR_CODE_NOISE
    keep_target: str = "noise"

    def __post_init__(self):
        if self.keep_target not in KEEP_TARGETS:
            raise ValueError(f"keep_target must be one of {KEEP_TARGETS}, not {self.keep_target!r}")

    @property
    def keep_attributes(self) -> list[int]:
        """The attributes L_keep edits: those with a known region (``keep_region``)."""
        return [i for i, n in enumerate(self.names) if n in ATTRIBUTE_REGIONS] if self.keep > 0 else []

    def rows_per_step(self, batch_size: int) -> int:
        return self.batch or max(1, batch_size // 2)

    def describe(self) -> dict[str, Any]:
        return {"names": list(self.names), "pairs": int(self.rows.shape[0]), "weight": self.weight,
                "batch": self.batch, "sources": list(self.sources), "t_min": PAIR_T_MIN,
                "gamma": list(PAIR_GAMMA), "from_target": PAIR_FROM_TARGET, "plain_frames": self.plain_frames,
                "code_noise": self.code_noise, "keep": self.keep, "keep_pad": ATTRIBUTE_REGIONS["Eyeglasses"],
                **({"keep_target": self.keep_target, "keep_x0_cap": KEEP_X0_CAP}
                   if self.keep_target != "noise" else {})}


class DVAObjective(nn.Module):
    """DVA's objective as a module (what DDP wraps): ``forward(batch) -> {"loss",
    "simple", "reg"}`` (+ ``"pair"`` with a ``PairTerm``). ``batch`` holds x0, z_id,
    z_lnd, mask and ``draw``'s t, eps1, eps2 (+ the pair rows' draws and, under the
    prefixes ``src_``/``tgt_``/``noisy_``, their frames' tensors: ``index_keys``)."""

    name = "dva"

    def __init__(self, model: DVA, face_weight: float = 1.0, pairs: PairTerm | None = None):
        super().__init__()
        self.model = model
        self.face_weight = face_weight
        self.pairs = pairs
        self.register_buffer("abar", alphas_cumprod(), persistent=False)
        if pairs is not None:
            self.register_buffer("pair_directions", pairs.directions.float(), persistent=False)
            self.register_buffer("pair_mean", pairs.conds_mean.float(), persistent=False)
            self.register_buffer("pair_std", pairs.conds_std.float(), persistent=False)

    @property
    def index_keys(self) -> dict[str, str]:
        """Draws that index frames -> the prefix their frames' tensors get in a batch."""
        if self.pairs is None:
            return {"index": ""}
        return {"index": "", "pair_src": "src_", "pair_tgt": "tgt_", "pair_noisy": "noisy_"}

    def draw(self, gen: torch.Generator, batch: int, num_frames: int, shape: tuple[int, ...]) -> dict[str, Tensor]:
        """The random numbers of one global batch (CPU): frame index, t, eps1, eps2
        (+ with pairs: the pair rows, their direction, t_p, eps_p, gamma)."""
        if self.pairs is not None and self.pairs.plain_frames is not None:
            num_frames = self.pairs.plain_frames
        out = {
            "index": torch.randint(num_frames, (batch,), generator=gen),
            "t": torch.randint(NUM_TRAIN_TIMESTEPS, (batch,), generator=gen),
            "eps1": torch.randn((batch, *shape), generator=gen),
            "eps2": torch.randn((batch, *shape), generator=gen),
        }
        if self.pairs is not None:
            p = self.pairs.rows_per_step(batch)
            pick = torch.randint(self.pairs.rows.shape[0], (p,), generator=gen)
            add = torch.rand(p, generator=gen) < 0.5
            rows = self.pairs.rows[pick]
            lo, hi = PAIR_GAMMA
            out |= {
                "pair_src": torch.where(add, rows[:, 0], rows[:, 1]),
                "pair_tgt": torch.where(add, rows[:, 1], rows[:, 0]),
                "pair_sign": add.float() * 2 - 1,
                "pair_attr": self.pairs.attribute[pick],
                "pair_t": torch.randint(PAIR_T_MIN, NUM_TRAIN_TIMESTEPS, (p,), generator=gen),
                "pair_eps": torch.randn((p, *shape), generator=gen),
                "pair_gamma": lo + (hi - lo) * torch.rand(p, generator=gen),
            }
            from_target = torch.rand(p, generator=gen) < PAIR_FROM_TARGET
            any_t = torch.randint(NUM_TRAIN_TIMESTEPS, (p,), generator=gen)
            out["pair_t"] = torch.where(from_target, any_t, out["pair_t"])
            out["pair_noisy"] = torch.where(from_target, out["pair_tgt"], out["pair_src"])
            dim = self.pairs.directions.shape[1]
            out["pair_code_noise"] = self.pairs.code_noise * torch.randn((p, dim), generator=gen)
            kept = self.pairs.keep_attributes
            if kept:
                out |= {
                    "keep_attr": torch.tensor(kept)[torch.randint(len(kept), (batch,), generator=gen)],
                    "keep_sign": (torch.rand(batch, generator=gen) < 0.5).float() * 2 - 1,
                    "keep_gamma": lo + (hi - lo) * torch.rand(batch, generator=gen),
                    "keep_code_noise": self.pairs.code_noise * torch.randn((batch, dim), generator=gen),
                }
        return out

    def edited_code(self, z_id: Tensor, attr: Tensor, scale: Tensor, noise: Tensor | None) -> Tensor:
        """DVA's edit rule on ``z_id`` along attribute ``attr``'s direction by ``scale``,
        after adding ``noise`` to the normalised code (module docstring)."""

        if noise is not None:
            z_id = denormalize(normalize(z_id, self.pair_mean, self.pair_std) + noise, self.pair_mean, self.pair_std)
        return edit_identity(z_id, self.pair_directions[attr], scale, self.pair_mean, self.pair_std)

    def pair_code(self, batch: dict[str, Tensor]) -> Tensor:
        """z_p of the pair rows (module docstring): the edit rule on src's z_id."""
        return self.edited_code(batch["src_z_id"], batch["pair_attr"], batch["pair_sign"] * batch["pair_gamma"],
                                batch.get("pair_code_noise"))

    def keep_code(self, batch: dict[str, Tensor]) -> Tensor:
        """The codes of L_keep's rows: the plain rows' z_id, edited (module docstring)."""
        return self.edited_code(batch["z_id"], batch["keep_attr"], batch["keep_sign"] * batch["keep_gamma"],
                                batch["keep_code_noise"])

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        z_face = self.model.fuse(batch["z_id"], batch["z_lnd"])
        t = batch["t"]
        a = self.abar[t].view(-1, 1, 1, 1)
        x_t1, x_t2 = noisy(batch["x0"], batch["eps1"], a), noisy(batch["x0"], batch["eps2"], a)
        xs, ts, zs = [x_t1, x_t2], [t, t], [z_face, z_face]
        if self.pairs is not None:
            a_p = self.abar[batch["pair_t"]].view(-1, 1, 1, 1)
            x_p = noisy(batch["noisy_x0"], batch["pair_eps"], a_p)
            xs.append(x_p)
            ts.append(batch["pair_t"])
            zs.append(self.model.fuse(self.pair_code(batch), batch["src_z_lnd"]))
        keeping = "keep_attr" in batch
        if keeping:
            xs.append(x_t1)
            ts.append(t)
            zs.append(self.model.fuse(self.keep_code(batch), batch["z_lnd"]))
        pred = self.model(torch.cat(xs), torch.cat(ts), torch.cat(zs))  # one forward (DDP)
        b = x_t1.shape[0]
        parts = dva_terms(pred[:b], pred[b:2 * b], x_t1, x_t2, batch["eps1"], batch["eps2"], batch["mask"], a)
        loss = parts["simple"] + self.face_weight * parts["reg"]
        if self.pairs is not None:
            target = (x_p - a_p.sqrt() * batch["tgt_x0"]) / (1 - a_p).sqrt()
            p = x_p.shape[0]
            error = (pred[2 * b:2 * b + p] - target).abs()
            region = changed_region(batch["src_x0"], batch["tgt_x0"]).expand_as(error)
            parts["pair"] = error.mean() + (error * region).sum() / region.sum().clamp(min=1.0)
            loss = loss + self.pairs.weight * parts["pair"]
        if keeping:
            if self.pairs.keep_target == "unedited":
                weight = keep_x0_weight(self.abar, t).view(-1, 1, 1, 1)
                parts["keep"] = keep_loss(weight * pred[-b:], weight * pred[:b].detach(), self.keep_regions(batch))
            else:
                parts["keep"] = keep_loss(pred[-b:], batch["eps1"], self.keep_regions(batch))
            loss = loss + self.pairs.keep * parts["keep"]
        return {"loss": loss, **parts}

    def keep_regions(self, batch: dict[str, Tensor]) -> Tensor:
        """(b, 1, S, S): where each L_keep row's edit may change its frame."""
        size = batch["x0"].shape[-1]
        regions = torch.zeros_like(batch["x0"][:, :1])
        for i in batch["keep_attr"].unique().tolist():
            rows = batch["keep_attr"] == i
            regions[rows] = keep_region(self.pairs.names[i], batch["lnd01"][rows], size)
        return regions

    def describe(self) -> dict[str, Any]:
        """What a checkpoint must match to be resumed."""
        if self.pairs is None:
            return {"objective": self.name}
        return {"objective": self.name, "pairs": self.pairs.describe()}


PAIR_CHANGED = 2.0 / 255 * 2  # |src - tgt| above 2 grey levels (in [-1, 1] units) is "changed"


def keep_x0_weight(abar: Tensor, t: Tensor) -> Tensor:
    """L_keep's factor at timesteps ``t`` with ``keep_target="unedited"``:
    min(sqrt((1 - abar_t) / abar_t), KEEP_X0_CAP) over its mean on all T timesteps, so
    the term's gradients are, on average over t, as large as the noise form's (an L1 term
    pushes every pixel with its weight, however small the gap: at 20 times the other
    terms it took over and ruined the denoiser within 200 steps)."""
    factor = ((1 - abar) / abar).sqrt().clamp(max=KEEP_X0_CAP)
    return factor[t] / factor.mean()


def keep_loss(pred: Tensor, eps: Tensor, region: Tensor) -> Tensor:
    """L_keep: mean |pred - eps| over the pixels outside ``region`` (B, 1, S, S)."""
    outside = (1 - region).expand_as(pred)
    return ((pred - eps).abs() * outside).sum() / outside.sum().clamp(min=1.0)


def changed_region(src: Tensor, tgt: Tensor) -> Tensor:
    """(B, 3, S, S) twice -> (B, 1, S, S) float: where the pair differs, dilated 1 px."""
    changed = ((src - tgt).abs().amax(1, keepdim=True) > PAIR_CHANGED).float()
    return F.max_pool2d(changed, 3, stride=1, padding=1)


def gather_batch(objective: nn.Module, draws: dict[str, Tensor], per_frame: dict[str, Tensor],
                 device) -> dict[str, Tensor]:
    """One process's batch: its draws, plus the per-frame tensors of the frames each
    index draw names (``objective.index_keys``: draw -> prefix; default ``index`` -> "")."""
    batch = {k: v.to(device) for k, v in draws.items()}
    for key, prefix in getattr(objective, "index_keys", {"index": ""}).items():
        batch |= {prefix + k: v[draws[key]].to(device) for k, v in per_frame.items()}
    return batch


EMA_WARMUP = 10  # decay_t = min(decay, (1 + t) / (EMA_WARMUP + t)): TF's num_updates rule


def ema_decay_at(decay: float, step: int) -> float:
    """The EMA decay after ``step`` updates: ramps up from 0.1, so a short tune (a few
    hundred steps) is not left at its starting weights by a 0.999 decay."""
    return min(decay, (1 + step) / (EMA_WARMUP + step))


@torch.no_grad()
def ema_update(ema: DVA, model: DVA, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p, 1.0 - decay)


# --- checkpoints ----------------------------------------------------------------------------


def save_checkpoint(folder: Path, step: int, objective: nn.Module, ema: DVA, opt, info: dict) -> None:
    """``state.safetensors`` (objective + EMA tensors), ``optimizer.pt``, ``train.json``."""
    folder.mkdir(parents=True, exist_ok=True)
    state = {f"objective.{k}": v for k, v in objective.state_dict().items()}
    state |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    with atomic_path(folder / STATE_FILE) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp))
    with atomic_path(folder / OPTIMIZER_FILE) as tmp:
        torch.save(opt.state_dict(), tmp)
    write_json_atomic(folder / INFO_FILE, {**info, "step": step})


def _resume_key(info: dict) -> dict:
    """What must match to resume: everything but the step reached and the step budget
    (the learning rate is constant, so a run resumed with more ``steps`` trains on
    exactly as one started with them)."""
    info = json.loads(json.dumps(info))
    info.pop("step", None)
    info.get("config", {}).pop("steps", None)
    return info


def load_checkpoint(folder: Path, objective: nn.Module, ema: DVA, opt, info: dict) -> int:
    """The step to resume from: 0 when there is no checkpoint made with the same
    ``info``. A checkpoint of the same run with a smaller step budget is resumed (train
    longer by asking for more steps); one past ``info["config"]["steps"]`` is an error,
    not silently replaced."""
    info_path = folder / INFO_FILE
    if not info_path.is_file():
        return 0
    saved = json.loads(info_path.read_text())
    if _resume_key(saved) != _resume_key(info):
        return 0
    if int(saved["step"]) > int(info["config"]["steps"]):
        raise InputError(f"the checkpoint in {str(folder)!r} is at step {saved['step']}, past the "
                         f"{info['config']['steps']} steps asked for; ask for at least {saved['step']} "
                         "steps (or delete that folder to start again).")
    device = next(objective.parameters()).device
    state = load_file(str(folder / STATE_FILE), device=str(device))
    objective.load_state_dict({k[10:]: v for k, v in state.items() if k.startswith("objective.")})
    ema.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("ema.")})
    opt.load_state_dict(torch.load(folder / OPTIMIZER_FILE, weights_only=True, map_location=device))
    return int(saved["step"])


# --- distribution (Hugging Face Accelerate) -------------------------------------------------


def make_accelerator(cpu: bool = False):
    """An ``accelerate.Accelerator`` for the launch environment (one process when not
    launched by ``accelerate launch``/``torchrun``). Unused parameters are allowed:
    a step trains only the transforms of the clusters its pseudo-edits drew."""
    from accelerate import Accelerator, DistributedDataParallelKwargs

    # torchrun on a machine without CUDA: Accelerate takes the processes as one
    # distributed CPU job (gloo) only when told to use the CPU.
    cpu = cpu or ("LOCAL_RANK" in os.environ and not torch.cuda.is_available())
    return Accelerator(cpu=cpu, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def shard(draws: dict[str, Tensor], rank: int, world: int) -> dict[str, Tensor]:
    """Rows [rank·b, (rank+1)·b) of every global-batch tensor, b = its rows / world
    (tensors may have different row counts: a batch's frames and its pair rows)."""
    out = {}
    for k, v in draws.items():
        b = v.shape[0] // world
        out[k] = v[rank * b:(rank + 1) * b]
    return out


def check_batch(batch_size: int, world: int) -> int:
    if batch_size % world:
        raise InputError(f"--batch-size {batch_size} does not split evenly over {world} processes; "
                         f"use a multiple of {world}.")
    return batch_size // world


# --- the loop -------------------------------------------------------------------------------


def train(
    objective: nn.Module,
    data: CropData,
    sem: Semantics,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    optimizer: torch.optim.Optimizer,
    *,
    accelerator=None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    frame_extras: dict[str, Tensor] | None = None,
) -> TrainResult:
    """Train ``objective`` (its ``model`` is a DVA; module docstring) in place; returns
    the EMA copy of the DVA. ``optimizer`` holds the trainable parameters; a DHSPG
    optimizer (``s3edit.s3.dhspg``) gets each step's loss through ``report`` once its
    groups are zero, and its best iterate is restored at the end. ``frame_extras``:
    more per-frame tensors (N, ...) the objective reads by name. ``on_step(step,
    parts)`` runs on the main process only."""
    acc = accelerator or make_accelerator()
    world, rank = acc.num_processes, acc.process_index
    per_process = check_batch(cfg.batch_size, world)
    pairs = getattr(objective, "pairs", None)
    if pairs is not None:
        check_batch(pairs.rows_per_step(cfg.batch_size), world)
    model: DVA = objective.model
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    info = {"config": asdict(cfg), "objective": objective.describe(), "world_size": world}
    start = load_checkpoint(checkpoint_dir, objective, ema, optimizer, info)
    wrapped = acc.prepare(objective)
    per_frame = {**sem.per_frame(data), **(frame_extras or {})}
    sparse = getattr(optimizer, "num_sparse", 0) > 0
    wrapped.train()
    losses: list[dict[str, float]] = []
    for step in range(start, cfg.steps):
        gen = torch.Generator().manual_seed(cfg.seed * SEED_STRIDE + step)
        torch.manual_seed(cfg.seed * SEED_STRIDE + step + rank)  # dropout
        draws = objective.draw(gen, cfg.batch_size, len(data), tuple(data.crops.shape[1:]))
        batch = gather_batch(objective, shard(draws, rank, world), per_frame, acc.device)
        parts = wrapped(batch)
        optimizer.zero_grad(set_to_none=True)
        acc.backward(parts["loss"])
        if cfg.grad_clip:
            acc.clip_grad_norm_(params, cfg.grad_clip)
        means = mean_over_processes(acc, parts)
        if not math.isfinite(means["loss"]):
            raise FloatingPointError(f"training loss became {means['loss']} at step {step}")
        if sparse and optimizer.num_zero_groups() == optimizer.num_sparse:
            optimizer.report(means["loss"])  # the loss of the iterate before this step
        optimizer.step()
        ema_update(ema, model, ema_decay_at(cfg.ema_decay, step))
        losses.append(means)
        if on_step is not None and acc.is_main_process:
            on_step(step + 1, means)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
            if acc.is_main_process:
                save_checkpoint(checkpoint_dir, step + 1, objective, ema, optimizer, info)
            acc.wait_for_everyone()
    if sparse and optimizer.best_step >= 0:
        optimizer.restore_best()
    model.eval()
    return TrainResult(steps=cfg.steps, losses=losses, ema=ema)


def mean_over_processes(acc, parts: dict[str, Tensor]) -> dict[str, float]:
    """Every loss term averaged over the processes (one collective), as floats."""
    names = list(parts)
    values = torch.stack([parts[k].detach().float() for k in names])
    if acc.num_processes > 1:
        values = acc.reduce(values, reduction="mean")
    return dict(zip(names, values.cpu().tolist()))


@torch.no_grad()
def evaluate(objective: nn.Module, data: CropData, sem: Semantics, batch_size: int, seed: int = 12345,
             batches: int = 2, frame_extras: dict[str, Tensor] | None = None) -> dict[str, float]:
    """Mean loss terms on fixed draws (``seed``), in eval mode: the objective of the
    current weights, comparable before and after training. One process."""
    device = next(objective.parameters()).device
    per_frame = {**sem.per_frame(data), **(frame_extras or {})}
    was_training = objective.training
    objective.eval()
    total: dict[str, float] = {}
    for b in range(batches):
        gen = torch.Generator().manual_seed(seed * SEED_STRIDE + b)
        draws = objective.draw(gen, batch_size, len(data), tuple(data.crops.shape[1:]))
        batch = gather_batch(objective, draws, per_frame, device)
        for k, v in objective(batch).items():
            total[k] = total.get(k, 0.0) + float(v) / batches
    objective.train(was_training)
    return total


def train_dva(
    model: DVA,
    data: CropData,
    cfg: TrainConfig,
    checkpoint_dir: Path,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    accelerator=None,
    pairs: PairTerm | None = None,
) -> TrainResult:
    """Train ``model`` in place with DVA's objective (AdamW; with ``pairs``, plus the
    paired-edit term); returns the EMA copy."""
    acc = accelerator or make_accelerator()
    freeze_encoders(model)
    model.to(acc.device)
    sem = precompute_semantics(model, data, device=acc.device)
    objective = DVAObjective(model, cfg.face_weight, pairs).to(acc.device)
    opt = torch.optim.AdamW(trainable_parameters(model), lr=cfg.lr, weight_decay=0.0)
    return train(objective, data, sem, cfg, checkpoint_dir, opt, accelerator=acc, on_step=on_step)
